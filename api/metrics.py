"""Prometheus metrics of one app: ``GET /metrics`` in the Prometheus text format.

Each app has a registry of its own (two apps in one process, as in tests, do not share counts).
Routes are labelled by their template (``/products/{product_id}``), never by the raw path, so a
scraper's series stay few whatever shoppers ask for.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from engine.errors import SnapshopError

# Request latency buckets: a text search takes ~10-30 ms on 2 cores, a photo search ~60-150 ms,
# an upsert of many products seconds.
REQUEST_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
# Search stages: Qdrant's gather and score take a few ms, encoding a photo tens of ms.
STAGE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
SEARCH_STAGES = ("decode", "crops", "encode", "verify", "gather", "score", "rank")


class Metrics:
    """Every metric snapshop exports, in one registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter("snapshop_http_requests", "HTTP requests answered, by route, method and status.",
                                ["route", "method", "status"], registry=r)
        self.latency = Histogram("snapshop_http_request_duration_seconds", "Time to answer an HTTP request.",
                                 ["route", "method"], buckets=REQUEST_BUCKETS, registry=r)
        self.stages = Histogram("snapshop_search_stage_duration_seconds",
                                "Time of one search spent in each stage (decode, crops, encode, verify, gather, score, rank).",
                                ["stage"], buckets=STAGE_BUCKETS, registry=r)
        self.searches = Counter("snapshop_searches", "Searches answered, by kind of query (text, photo, both).",
                                ["kind"], registry=r)
        self.nothing_close = Counter("snapshop_search_nothing_close",
                                     "Searches answered 'nothing close' (no result looks like a match).",
                                     ["kind"], registry=r)
        self.errors = Counter("snapshop_errors", "Requests that failed, by kind of error.", ["kind"], registry=r)
        self.ingest_running = Gauge("snapshop_ingest_running", "Ingests (product upserts) in progress.", registry=r)
        self.ingest_embedded = Counter("snapshop_ingest_embedded_products",
                                       "Products embedded and written by ingests so far.", registry=r)
        self.ingest_products = Counter("snapshop_ingest_products",
                                       "Products of finished ingests, by outcome (added, updated, payload_only, "
                                       "unchanged, skipped).", ["outcome"], registry=r)
        for stage in SEARCH_STAGES:  # present at 0 from the start, so rates exist before the first search
            self.stages.labels(stage)

    def watch_store(self, count: Callable[[], int], disk_bytes: Callable[[], int | None]) -> None:
        """Export the store's size, read at each scrape."""
        self.registry.register(_StoreCollector(count, disk_bytes))

    def watch_centre(self, photos: Callable[[], int]) -> None:
        """Export how many photos the shopper-photo centre searched with is the mean of, read at each scrape."""
        self.registry.register(_CentreCollector(photos))

    def observe_search(self, kind: str, seconds: dict[str, float], nothing_close: bool) -> None:
        """One answered search: its stages' times and whether it found nothing close."""
        for stage, value in seconds.items():
            self.stages.labels(stage).observe(value)
        self.searches.labels(kind).inc()
        if nothing_close:
            self.nothing_close.labels(kind).inc()

    def observe_ingest(self, outcomes: dict[str, int]) -> None:
        for outcome, count in outcomes.items():
            self.ingest_products.labels(outcome).inc(count)


class _StoreCollector:
    """Products in the store and bytes on disk, asked of the store when scraped (not cached)."""

    def __init__(self, count: Callable[[], int], disk_bytes: Callable[[], int | None]):
        self._count, self._disk_bytes = count, disk_bytes

    def collect(self) -> Iterable[GaugeMetricFamily]:
        try:
            products = self._count()
        except (LookupError, AttributeError, SnapshopError):  # not started, or closing: left out this once
            return
        yield GaugeMetricFamily("snapshop_store_products", "Products in the store.", value=products)
        size = self._disk_bytes()
        if size is not None:
            yield GaugeMetricFamily("snapshop_store_disk_bytes", "Bytes the embedded store takes on disk.",
                                    value=size)


class _CentreCollector:
    """The photos of the shopper-photo centre in use (0: none yet), asked of the searcher when scraped."""

    def __init__(self, photos: Callable[[], int]):
        self._photos = photos

    def collect(self) -> Iterable[GaugeMetricFamily]:
        try:
            photos = self._photos()
        except LookupError:  # not started: left out this once
            return
        yield GaugeMetricFamily("snapshop_shopper_centre_photos", "Shoppers' photos the shopper-photo centre "
                                "photo searches are centred on is the mean of (0: none; it grows as they come "
                                "with SNAPSHOP_SEARCH__SHOPPER_CENTRE=auto).", value=photos)


def folder_bytes(folder: Path) -> int | None:
    """Bytes of the files under ``folder`` (None when it is not there)."""
    if not folder.is_dir():
        return None
    total = 0
    for path in folder.rglob("*"):
        try:
            if path.is_file():
                total += path.stat().st_size
        except OSError:  # a segment replaced by an optimisation meanwhile
            continue
    return total


class MetricsMiddleware:
    """Counts and times every HTTP request by its route template (pure ASGI: streams untouched)."""

    def __init__(self, app: ASGIApp, metrics: Metrics):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500  # an exception that escapes every handler is answered 500 by the server

        async def send_and_note(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        except Exception as error:
            self.metrics.errors.labels(type(error).__name__).inc()
            raise
        finally:
            route = _route_of(scope)
            method = scope.get("method", "")
            self.metrics.requests.labels(route, method, str(status)).inc()
            self.metrics.latency.labels(route, method).observe(time.perf_counter() - start)


def _route_of(scope: Scope) -> str:
    """The matched route's template; a static file's mount; 'unmatched' for a 404 of no route."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    if path:
        return path
    root = scope.get("root_path", "")
    return root if root else "unmatched"
