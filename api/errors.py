"""Engine errors as HTTP answers: the status says what kind of problem, ``detail`` says exactly why.

Only this module knows both sides; the engine raises typed errors and never thinks about HTTP.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request, status
from fastapi.responses import JSONResponse

from engine.errors import (
    CatalogError,
    CatalogRowError,
    InvalidImage,
    InvalidQuery,
    ModelWeightsMissing,
    ProductNotFound,
    SnapshopError,
    StoreError,
    StoreModelMismatch,
    StoreUnavailable,
    UnknownModel,
)

log = logging.getLogger(__name__)

# Most specific first: the first class an error is an instance of decides its status.
STATUS_OF: list[tuple[type[SnapshopError], int]] = [
    (InvalidQuery, status.HTTP_422_UNPROCESSABLE_CONTENT),
    (InvalidImage, status.HTTP_422_UNPROCESSABLE_CONTENT),
    (CatalogRowError, status.HTTP_422_UNPROCESSABLE_CONTENT),
    (CatalogError, status.HTTP_422_UNPROCESSABLE_CONTENT),
    (ProductNotFound, status.HTTP_404_NOT_FOUND),
    (StoreModelMismatch, status.HTTP_409_CONFLICT),
    (StoreUnavailable, status.HTTP_503_SERVICE_UNAVAILABLE),
    (StoreError, status.HTTP_503_SERVICE_UNAVAILABLE),
    (UnknownModel, status.HTTP_503_SERVICE_UNAVAILABLE),
    (ModelWeightsMissing, status.HTTP_503_SERVICE_UNAVAILABLE),
]


class InsecureSettings(SnapshopError):
    """Settings the API refuses to start with (the development API key in production)."""


def status_of(error: SnapshopError) -> int:
    return next((code for kind, code in STATUS_OF if isinstance(error, kind)), status.HTTP_500_INTERNAL_SERVER_ERROR)


async def snapshop_error_handler(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, SnapshopError)
    code = status_of(error)
    if code >= 500:
        log.warning("%s %s: %s: %s", request.method, request.url.path, type(error).__name__, error)
    return JSONResponse({"detail": str(error)}, status_code=code)


def add_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(SnapshopError, snapshop_error_handler)
