"""The shopper page (and the same page with the merchandiser panel open)."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse

STATIC = Path(__file__).resolve().parents[1] / "static"
router = APIRouter(include_in_schema=False)


@router.get("/")
async def shopper_page() -> FileResponse:
    return FileResponse(STATIC / "index.html")


@router.get("/merchandiser")
async def merchandiser_page() -> FileResponse:
    return FileResponse(STATIC / "index.html")
