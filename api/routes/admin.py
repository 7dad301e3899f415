"""Operations on a running server (key required): a backup of the embedded store while it serves."""

from __future__ import annotations

import time
import uuid

from fastapi import APIRouter, status
from pydantic import BaseModel, Field

from api.deps import RequireApiKey, RuntimeDep
from api.schemas import error_responses
from engine.store.backup import backup_store

router = APIRouter(prefix="/admin", tags=["admin"], dependencies=[RequireApiKey])


class BackupMade(BaseModel):
    path: str = Field(description="The backup's folder on the server; `snapshop restore` takes it.")
    collection: str
    products: int


@router.post("/backup", summary="Back up the embedded store while it serves", status_code=status.HTTP_201_CREATED,
             responses=error_responses(401, 403, 503))
async def backup(runtime: RuntimeDep) -> BackupMade:
    """A consistent copy into a new folder under ``store.backup_dir``: writes wait while it is made
    (searches go on), so it holds every write acknowledged before it and none after."""
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    # The random part keeps two backups asked for in the same second apart.
    folder = runtime.settings.store.backups / f"{runtime.collection}-{stamp}-{uuid.uuid4().hex[:6]}"
    async with runtime.write_lock:
        manifest = await runtime.run(backup_store, runtime.store, folder)
    return BackupMade(path=str(folder), collection=manifest.collection, products=manifest.products)
