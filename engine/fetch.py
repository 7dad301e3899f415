"""Fetch an image by URL without letting a catalog or a shopper point us at our own network.

http(s) only, a timeout, a size cap read as a stream, and no loopback, private, link-local or
reserved addresses unless a setting allows them (checked on every resolved address and on
every redirect).
"""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urljoin, urlparse

import httpx

from engine.errors import InvalidImage

MAX_REDIRECTS = 3


def check_url(url: str, allow_private: bool = False) -> None:
    """Raise ``InvalidImage`` for a URL snapshop must not fetch."""
    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https"):
        raise InvalidImage(f"{url}: only http and https image URLs are fetched, not '{parsed.scheme or 'none'}'")
    if not parsed.hostname:
        raise InvalidImage(f"{url}: no host in the URL")
    if allow_private:
        return
    try:
        infos = socket.getaddrinfo(parsed.hostname, parsed.port or 443, proto=socket.IPPROTO_TCP)
    except (socket.gaierror, UnicodeError) as e:
        raise InvalidImage(f"{url}: host '{parsed.hostname}' does not resolve") from e
    for info in infos:
        address = ipaddress.ip_address(info[4][0].split("%")[0])
        if not address.is_global or address.is_multicast:
            raise InvalidImage(
                f"{url}: '{parsed.hostname}' is a private, loopback or reserved address ({address}); "
                "set SNAPSHOP_INGEST__ALLOW_PRIVATE_URLS=true to fetch from your own network"
            )


def fetch_url(url: str, *, timeout_s: float, max_bytes: int, allow_private: bool = False) -> bytes:
    """The body of ``url``, at most ``max_bytes``; follows a few redirects, each one checked."""
    for _ in range(MAX_REDIRECTS + 1):
        check_url(url, allow_private)
        try:
            with httpx.stream("GET", url, timeout=timeout_s, follow_redirects=False) as response:
                if response.is_redirect and response.headers.get("location"):
                    url = urljoin(url, response.headers["location"])
                    continue
                if response.status_code != 200:
                    raise InvalidImage(f"{url}: the server answered HTTP {response.status_code}")
                content_type = response.headers.get("content-type", "")
                if content_type and not content_type.startswith(("image/", "application/octet-stream")):
                    raise InvalidImage(f"{url}: not an image (content-type '{content_type.split(';')[0]}')")
                declared = int(response.headers.get("content-length") or 0)
                if declared > max_bytes:
                    raise InvalidImage(f"{url}: {declared} bytes is more than the limit of {max_bytes}")
                body = bytearray()
                for chunk in response.iter_bytes():
                    body.extend(chunk)
                    if len(body) > max_bytes:
                        raise InvalidImage(f"{url}: more than the limit of {max_bytes} bytes")
                return bytes(body)
        except httpx.TimeoutException as e:
            raise InvalidImage(f"{url}: timed out after {timeout_s:g} s") from e
        except httpx.HTTPError as e:
            raise InvalidImage(f"{url}: download failed ({type(e).__name__}: {str(e)[:150]})") from e
    raise InvalidImage(f"{url}: more than {MAX_REDIRECTS} redirects")
