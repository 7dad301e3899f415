"""Engine errors as HTTP answers: the status says what kind of problem, ``detail`` says exactly why.

Only this module knows both sides; the engine raises typed errors and never thinks about HTTP.
"""

from __future__ import annotations

import logging
import math
from typing import Any

from fastapi import FastAPI, Request, status
from fastapi.encoders import jsonable_encoder
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from engine.errors import (
    AnalyticsOff,
    CalibrationError,
    CatalogError,
    CatalogRowError,
    DecodeBusy,
    InvalidImage,
    InvalidProduct,
    InvalidQuery,
    ModelWeightsMissing,
    ProductNotFound,
    RuleNotFound,
    SnapshopError,
    StoreError,
    StoreModelMismatch,
    StoreUnavailable,
    UnknownModel,
    UnknownQuery,
)

log = logging.getLogger(__name__)

# Most specific first: the first class an error is an instance of decides its status.
STATUS_OF: list[tuple[type[SnapshopError], int]] = [
    (InvalidQuery, status.HTTP_422_UNPROCESSABLE_CONTENT),
    (InvalidImage, status.HTTP_422_UNPROCESSABLE_CONTENT),
    (InvalidProduct, status.HTTP_422_UNPROCESSABLE_CONTENT),
    (CatalogRowError, status.HTTP_422_UNPROCESSABLE_CONTENT),
    (CatalogError, status.HTTP_422_UNPROCESSABLE_CONTENT),
    (ProductNotFound, status.HTTP_404_NOT_FOUND),
    (RuleNotFound, status.HTTP_404_NOT_FOUND),
    (UnknownQuery, status.HTTP_404_NOT_FOUND),
    (AnalyticsOff, status.HTTP_404_NOT_FOUND),
    (StoreModelMismatch, status.HTTP_409_CONFLICT),
    (StoreUnavailable, status.HTTP_503_SERVICE_UNAVAILABLE),
    (DecodeBusy, status.HTTP_503_SERVICE_UNAVAILABLE),
    (StoreError, status.HTTP_503_SERVICE_UNAVAILABLE),
    (UnknownModel, status.HTTP_503_SERVICE_UNAVAILABLE),
    (ModelWeightsMissing, status.HTTP_503_SERVICE_UNAVAILABLE),
    (CalibrationError, status.HTTP_503_SERVICE_UNAVAILABLE),
]


class InsecureSettings(SnapshopError):
    """Settings the API refuses to start with (the development API key in production)."""


def status_of(error: SnapshopError) -> int:
    return next((code for kind, code in STATUS_OF if isinstance(error, kind)), status.HTTP_500_INTERNAL_SERVER_ERROR)


async def snapshop_error_handler(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, SnapshopError)
    code = status_of(error)
    count_error(request, type(error).__name__)
    if code >= 500:
        log.warning("%s %s: %s: %s", request.method, request.url.path, type(error).__name__, error)
    return JSONResponse({"detail": str(error)}, status_code=code)


def count_error(request: Request, kind: str) -> None:
    """One more error of ``kind`` in the app's metrics (``snapshop_errors_total``)."""
    metrics = getattr(request.app.state, "metrics", None)
    if metrics is not None:
        metrics.errors.labels(kind).inc()


async def counted_http_exception_handler(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, HTTPException)
    if error.status_code >= 400:  # 401, 403, 413, 415...: named by status, the detail varies
        count_error(request, f"HTTP{error.status_code}")
    return await http_exception_handler(request, error)


async def invalid_request_handler(request: Request, error: Exception) -> JSONResponse:
    """FastAPI's 422, with each error's input made printable: the body may hold NaN, Infinity or a
    lone surrogate (Python's JSON reader takes them), which no JSON answer can carry."""
    assert isinstance(error, RequestValidationError)
    count_error(request, "RequestValidationError")
    errors = [{key: value for key, value in entry.items() if key != "ctx"} for entry in error.errors()]
    return JSONResponse({"detail": json_safe(jsonable_encoder(errors))},
                        status_code=status.HTTP_422_UNPROCESSABLE_CONTENT)


# Deeper inputs are cut short in error answers: the reason is what matters, not an echo of it.
SHOWN_DEPTH = 8


def json_safe(value: Any, depth: int = 0) -> Any:
    """``value`` with non-finite numbers as text, unpaired surrogates escaped, and nesting past
    ``SHOWN_DEPTH`` cut to '...'."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, str):
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(value, (list, tuple, dict)) and depth >= SHOWN_DEPTH:
        return "..."
    if isinstance(value, dict):
        return {json_safe(str(k)): json_safe(v, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v, depth + 1) for v in value]
    return value


def add_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(SnapshopError, snapshop_error_handler)
    app.add_exception_handler(RequestValidationError, invalid_request_handler)
    app.add_exception_handler(HTTPException, counted_http_exception_handler)
