"""Product ids in URLs: opaque text that any route taking an id can reach.

A shop's ids may hold '/', '?', '#', '%' or '..'. In a URL they travel percent-encoded, one path
segment each ('a/b' as ``a%2Fb``). Starlette routes on the decoded path, where that '/' would
split the id in two (a 404, or ``/products/a/b/similar`` read as the similar products of 'a').
So the path is routed with its ``%2F`` and ``%25`` still encoded (``IdPathMiddleware``), and
each route decodes its id once (``ProductIdPath``). Links are made with ``id_segment``.
"""

from __future__ import annotations

import re
from typing import Annotated
from urllib.parse import quote, unquote

from fastapi import Depends
from fastapi import Path as PathParam
from starlette.types import ASGIApp, Receive, Scope, Send

_ESCAPE = re.compile(rb"%([0-9A-Fa-f]{2})")
_KEPT = (b"2f", b"25")  # '/' and '%': decoding them would change where the path's segments end


def routing_path(raw_path: bytes) -> str:
    """The path as routes see it: decoded, except for encoded '/' and '%'."""

    def decode(match: re.Match) -> bytes:
        return match.group(0) if match.group(1).lower() in _KEPT else bytes([int(match.group(1), 16)])

    return _ESCAPE.sub(decode, raw_path).decode("utf-8", "replace")


class IdPathMiddleware:
    """Routes requests on ``routing_path`` of the raw path the client sent."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        raw = scope.get("raw_path") if scope["type"] == "http" else None
        if raw:
            scope = {**scope, "path": routing_path(raw.split(b"?", 1)[0])}
        await self.app(scope, receive, send)


def id_segment(product_id: str) -> str:
    """``product_id`` as one URL path segment: every character but letters, digits and '-._~'
    percent-encoded."""
    return quote(product_id, safe="")


def _product_id(product_id: Annotated[str, PathParam(
        description="The product's id, percent-encoded ('a/b' as a%2Fb).")]) -> str:
    return unquote(product_id)


ProductIdPath = Annotated[str, Depends(_product_id)]
