"""Connections that send no request, or send it a byte at a time, are closed by the real server
(uvicorn with snapshop's protocol) once ``api.header_timeout_s`` has passed; requests go on."""

from __future__ import annotations

import socket
import threading
import time

import httpx
import pytest

from api.app import create_app
from api.serving import server
from tests.test_api import api_settings

TIMEOUT_S = 1.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def address(tmp_path_factory, encoder):
    settings = api_settings(tmp_path_factory.mktemp("serving"), header_timeout_s=TIMEOUT_S)
    port = free_port()
    running = server(create_app(settings, encoder=encoder), settings.api, "127.0.0.1", port)
    thread = threading.Thread(target=running.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 120
    while not running.started and time.monotonic() < deadline:
        time.sleep(0.1)
    assert running.started
    yield "127.0.0.1", port
    running.should_exit = True
    thread.join(timeout=30)


def closed_after(connection: socket.socket, send_slowly: bytes = b"", limit_s: float = 10.0) -> float:
    """Seconds until the server closes ``connection`` (sending ``send_slowly`` a byte per 0.2 s)."""
    started = time.monotonic()
    connection.settimeout(0.2)
    pending = list(send_slowly)
    while time.monotonic() - started < limit_s:
        try:
            if pending:
                connection.send(bytes([pending.pop(0)]))
            if connection.recv(1024) == b"":
                return time.monotonic() - started
        except TimeoutError:
            continue
        except OSError:  # reset by the server
            return time.monotonic() - started
    return float("inf")


def test_a_connection_that_sends_nothing_is_closed(address):
    with socket.create_connection(address) as idle:
        assert closed_after(idle) < TIMEOUT_S + 2


def test_headers_sent_a_byte_at_a_time_do_not_hold_the_connection(address):
    slow = b"GET /health HTTP/1.1\r\nHost: x\r\n" + b"X-Slow: " + b"a" * 200
    with socket.create_connection(address) as dribbling:
        assert closed_after(dribbling, slow) < TIMEOUT_S + 2


def test_requests_are_answered_and_a_kept_alive_connection_serves_several(address):
    with httpx.Client(base_url=f"http://{address[0]}:{address[1]}") as client:
        for _ in range(3):
            assert client.get("/health").json() == {"status": "ok"}
            time.sleep(TIMEOUT_S / 2)
