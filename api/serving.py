"""Serving the app with uvicorn, with a time limit on connections that send no request.

uvicorn times out a kept-alive connection between requests, but not one that never sends a
request, nor one that sends its headers a byte at a time: each holds a socket (and a file
descriptor) for ever, and a few thousand of them exhaust the server. ``HeaderTimeoutProtocol``
closes a connection whose request headers are not complete ``api.header_timeout_s`` after it
opened or after its previous response.
"""

from __future__ import annotations

import asyncio

import h11
import uvicorn
from fastapi import FastAPI
from uvicorn.protocols.http.h11_impl import H11Protocol

from engine.settings import ApiSettings


class HeaderTimeoutProtocol(H11Protocol):
    """uvicorn's h11 protocol, closing connections whose request headers take too long."""

    header_timeout_s: float = 10.0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._header_timer: asyncio.TimerHandle | None = None
        super().connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        if self._header_timer is None and self.conn.their_state is h11.IDLE:
            self._arm()  # the first bytes of the next request on a kept-alive connection
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE:  # the headers are in: the request is the app's now
            self._disarm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        self._disarm()
        self._header_timer = self.loop.call_later(self.header_timeout_s, self._headers_too_slow)

    def _disarm(self) -> None:
        timer, self._header_timer = getattr(self, "_header_timer", None), None
        if timer is not None:
            timer.cancel()

    def _headers_too_slow(self) -> None:
        self._header_timer = None
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self.transport.close()


def protocol_for(settings: ApiSettings) -> type[HeaderTimeoutProtocol]:
    return type("SnapshopHttpProtocol", (HeaderTimeoutProtocol,), {"header_timeout_s": settings.header_timeout_s})


def server(app: FastAPI, settings: ApiSettings, host: str | None = None, port: int | None = None) -> uvicorn.Server:
    """A uvicorn server of ``app``, one process (the embedded store admits one, the model loads once)."""
    config = uvicorn.Config(app, host=host or settings.host, port=port or settings.port, workers=1,
                            log_level="info", http=protocol_for(settings),
                            timeout_keep_alive=max(1, round(min(5.0, settings.header_timeout_s))))
    return uvicorn.Server(config)
