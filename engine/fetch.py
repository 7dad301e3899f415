"""Fetch an image by URL without letting a catalog or a shopper point us at our own network.

http(s) only, a time limit for the whole download, a size cap read as a stream, and no loopback,
private, link-local or reserved addresses unless a setting allows them. The host is resolved
once, every address it resolves to is checked, and the connection goes to a checked address
(the URL's name still travels as Host and TLS server name): a name that resolves to a public
address when checked and to a private one when connecting (DNS rebinding) gets nowhere. Each
redirect is checked the same way. Proxies from the environment are not used: a proxy would
resolve the name itself, past these checks.
"""

from __future__ import annotations

import ipaddress
import socket
import time
from urllib.parse import urljoin, urlparse

import httpx

from engine.errors import InvalidImage

MAX_REDIRECTS = 3
ACCEPTED_CONTENT_TYPES = ("image/", "application/octet-stream", "binary/octet-stream")


def check_url(url: str, allow_private: bool = False) -> str | None:
    """Raise ``InvalidImage`` for a URL snapshop must not fetch.

    Returns the checked address to connect to (None when private addresses are allowed).
    """
    host, port = _host_and_port(url)
    if allow_private:
        return None
    try:
        infos = socket.getaddrinfo(host, port, proto=socket.IPPROTO_TCP)
    except (socket.gaierror, UnicodeError, OSError) as e:
        raise InvalidImage(f"{url}: host '{host}' does not resolve") from e
    addresses = [ipaddress.ip_address(info[4][0].split("%")[0]) for info in infos]
    for address in addresses:
        if not _public(address):
            raise InvalidImage(
                f"{url}: '{host}' is a private, loopback, link-local or reserved address ({address}); "
                "set SNAPSHOP_INGEST__ALLOW_PRIVATE_URLS=true to fetch from your own network"
            )
    if not addresses:
        raise InvalidImage(f"{url}: host '{host}' does not resolve")
    return str(addresses[0])


def fetch_url(url: str, *, timeout_s: float, max_bytes: int, allow_private: bool = False) -> bytes:
    """The body of ``url``, at most ``max_bytes``, within ``timeout_s`` for the whole download
    (redirects included); follows a few redirects, each one checked."""
    deadline = time.monotonic() + timeout_s
    with httpx.Client(timeout=timeout_s, follow_redirects=False, trust_env=False) as client:
        for _ in range(MAX_REDIRECTS + 1):
            address = check_url(url, allow_private)
            try:
                location = _get(client, url, address, deadline, timeout_s, max_bytes)
            except httpx.TimeoutException as e:
                raise InvalidImage(f"{url}: timed out after {timeout_s:g} s") from e
            except (httpx.HTTPError, httpx.InvalidURL, httpx.StreamError) as e:
                raise InvalidImage(f"{url}: download failed ({type(e).__name__}: {str(e)[:150]})") from e
            if isinstance(location, bytes):
                return location
            url = location
    raise InvalidImage(f"{url}: more than {MAX_REDIRECTS} redirects")


def _get(client: httpx.Client, url: str, address: str | None, deadline: float, timeout_s: float,
         max_bytes: int) -> bytes | str:
    """The body of one GET, or the absolute URL it redirects to."""
    response = client.send(_request(client, url, address), stream=True)
    try:
        if response.is_redirect and response.headers.get("location"):
            return urljoin(url, response.headers["location"])
        if response.status_code != 200:
            raise InvalidImage(f"{url}: the server answered HTTP {response.status_code}")
        content_type = response.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type and not content_type.startswith(ACCEPTED_CONTENT_TYPES):
            raise InvalidImage(f"{url}: not an image (content-type '{content_type}')")
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > max_bytes:
            raise InvalidImage(f"{url}: {declared} bytes is more than the limit of {max_bytes}")
        body = bytearray()
        # httpx's timeout bounds each read; a server that drips a byte at a time is stopped here.
        for chunk in response.iter_bytes():
            body.extend(chunk)
            if len(body) > max_bytes:
                raise InvalidImage(f"{url}: more than the limit of {max_bytes} bytes")
            if time.monotonic() > deadline:
                raise InvalidImage(f"{url}: timed out after {timeout_s:g} s (the download was too slow)")
        return bytes(body)
    finally:
        response.close()


def _request(client: httpx.Client, url: str, address: str | None) -> httpx.Request:
    """A GET of ``url`` sent to ``address`` when given, with the URL's host as Host and TLS name."""
    target = httpx.URL(url)
    if address is None:
        return client.build_request("GET", target)
    host = target.host
    return client.build_request(
        "GET", target.copy_with(host=address),
        headers={"Host": target.netloc.decode("ascii")},
        extensions={"sni_hostname": host} if target.scheme == "https" else {},
    )


def _host_and_port(url: str) -> tuple[str, int]:
    try:
        parsed = urlparse(url)
        port = parsed.port
    except ValueError as e:  # a bad port or a broken IPv6 literal
        raise InvalidImage(f"{url}: not a valid URL ({e})") from e
    if parsed.scheme not in ("http", "https"):
        raise InvalidImage(f"{url}: only http and https image URLs are fetched, not '{parsed.scheme or 'none'}'")
    if not parsed.hostname:
        raise InvalidImage(f"{url}: no host in the URL")
    return parsed.hostname, port or (443 if parsed.scheme == "https" else 80)


def _public(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if address.version == 6:
        # An IPv4 address wrapped in IPv6 (::ffff:10.0.0.1, 6to4, Teredo) is judged as that address.
        embedded = address.ipv4_mapped or address.sixtofour or (address.teredo[1] if address.teredo else None)
        if embedded is not None and not _public(embedded):
            return False
    return address.is_global and not address.is_multicast
