"""The FastAPI app: ``create_app(settings)``.

The model and the store are opened once, in the lifespan, and closed when the app stops (the
embedded Qdrant Edge store admits one process at a time, so it must be let go of).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.staticfiles import StaticFiles

from api.errors import InsecureSettings, add_error_handlers
from api.ids import IdPathMiddleware
from api.index_watch import watch_index
from api.metrics import Metrics, MetricsMiddleware, folder_bytes
from api.routes import router
from api.routes.pages import STATIC
from api.runtime import start_runtime
from api.uploads import BodyLimitMiddleware
from engine.encoder import Encoder
from engine.settings import DEV_API_KEY, Settings

DESCRIPTION = """Visual product search for online shops: search a catalog by photo, by words, or both.

Reads are public. Writes (add, change and delete products) need the API key, in the header
`X-API-Key` or as `Authorization: Bearer <key>`."""


def create_app(settings: Settings | None = None, encoder: Encoder | None = None) -> FastAPI:
    """The app for ``settings`` (from the environment if not given); ``encoder`` skips loading the
    model again when the caller already holds it (tests, notebooks)."""
    settings = settings or Settings()
    check_settings(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        runtime = await start_runtime(settings, encoder)
        app.state.runtime = runtime
        try:
            async with anyio.create_task_group() as tasks:
                if settings.store.backend == "edge":  # a server's alias needs no watching: Qdrant resolves it
                    tasks.start_soon(watch_index, runtime, settings)
                yield
                tasks.cancel_scope.cancel()
        finally:
            app.state.runtime = None
            await runtime.close()

    app = FastAPI(title="snapshop", version="0.1.0", description=DESCRIPTION, lifespan=lifespan,
                  docs_url="/docs", redoc_url=None)
    app.state.settings = settings
    app.state.runtime = None
    app.state.metrics = _metrics(app, settings)
    add_error_handlers(app)
    app.add_middleware(BodyLimitMiddleware, upload_limit=settings.api.max_upload_bytes)
    if settings.api.cors_origins:
        # A storefront's own pages call the API from the shopper's browser: only the listed origins.
        app.add_middleware(CORSMiddleware, allow_origins=settings.api.cors_origins, allow_methods=["GET", "POST"],
                           allow_headers=["X-API-Key", "Authorization", "Content-Type"])
    # Added last, so it is the outermost: it times whole requests, refusals included.
    app.add_middleware(MetricsMiddleware, metrics=app.state.metrics)
    # Outermost of all: routes (and the metrics' route templates) see ids' encoded '/' kept.
    app.add_middleware(IdPathMiddleware)
    app.include_router(router)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app


def _metrics(app: FastAPI, settings: Settings) -> Metrics:
    """The app's metrics; the store's size is read from whichever store the app holds when scraped."""
    metrics = Metrics()

    def count() -> int:
        runtime = app.state.runtime
        if runtime is None:
            raise LookupError("not started")
        return runtime.store.count()

    def disk_bytes() -> int | None:
        store = settings.store
        return folder_bytes(store.path / store.collection) if store.backend == "edge" else None

    def centre_photos() -> int:
        runtime = app.state.runtime
        if runtime is None:
            raise LookupError("not started")
        centre = runtime.searcher.shopper_centre
        return centre.photos if centre is not None else 0

    metrics.watch_store(count, disk_bytes)
    metrics.watch_centre(centre_photos)
    return metrics


def check_settings(settings: Settings) -> None:
    """Refuse to serve production with the well-known development key (or none)."""
    key = settings.api.api_key.get_secret_value().strip()
    if settings.environment == "production" and (not key or key == DEV_API_KEY):
        raise InsecureSettings(
            "refusing to start in production with the default or an empty API key: set "
            "SNAPSHOP_API__API_KEY to a long random secret"
        )
