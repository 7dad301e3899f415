"""Bad images: every photo snapshop cannot use is answered with a clear reason, never a crash.

Images are made in code with PIL (and, where PIL cannot write the case, by hand). URLs are
served by a small http.server on 127.0.0.1, which also shows that loopback, private and
link-local addresses are refused unless ``allow_private`` is set.
"""

from __future__ import annotations

import io
import json
import socket
import struct
import subprocess
import sys
import threading
import time
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import numpy as np
import pytest
from PIL import Image

from engine.errors import InvalidImage
from engine.fetch import fetch_url
from engine.images import WORKING_SIZE, decode_image, load_image_file
from engine.settings import IngestSettings, StoreSettings
from engine.store import open_store
from ingest.catalog import read_catalog
from ingest.pipeline import ImageLoader, ingest_catalog
from tests.conftest import FASHION, REPO, require


# --- images made in code -------------------------------------------------------------------------
def encoded(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def halves(size=(120, 80), left=(220, 30, 30), right=(30, 30, 220)) -> Image.Image:
    """Red left half, blue right half: colours and orientation are easy to check."""
    image = Image.new("RGB", size, right)
    image.paste(left, (0, 0, size[0] // 2, size[1]))
    return image


def png_by_hand(width: int, height: int, bit_depth: int, colour_type: int, raw_rows: bytes) -> bytes:
    """A PNG written chunk by chunk, for what PIL will not write (16-bit RGB, absurd sizes)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw_rows)) + chunk(b"IEND", b"")


def mean_colour(image: Image.Image, box) -> np.ndarray:
    return np.asarray(image.crop(box), dtype=np.float32).reshape(-1, 3).mean(axis=0)


# --- inputs that are refused --------------------------------------------------------------------
JPEG = encoded(halves(), "JPEG", quality=90)


@pytest.mark.parametrize("data, reason", [
    (b"", "empty file (0 bytes)"),
    (JPEG[: len(JPEG) // 2], "broken or truncated image"),
    (JPEG[:200], "broken or truncated image"),
    (b"this is a text file, not a photo\n" * 20, "not a readable image"),
    (b"<!DOCTYPE html><html><body>404 not found</body></html>", "not a readable image"),
    (b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n", "not a readable image"),
    (encoded(halves(), "PDF"), "not a readable image"),
    (encoded(halves(), "ICO"), "not a readable image"),
    (b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, "not a readable image"),
], ids=["zero-bytes", "truncated-jpeg", "jpeg-header-only", "text", "html", "postscript", "pdf", "ico",
        "png-signature-only"])
def test_unusable_bytes_are_refused_with_a_reason(data, reason):
    with pytest.raises(InvalidImage) as refused:
        decode_image(data, source="photo.jpg")
    assert str(refused.value).startswith(f"photo.jpg: {reason}")
    assert "Ghostscript" not in str(refused.value)  # PostScript never reaches an interpreter


def test_a_decompression_bomb_is_refused_from_its_header_before_decoding():
    # 100,000 x 100,000 pixels declared (10 G pixels, 30 GB as RGB) in a file of a few hundred bytes.
    bomb = png_by_hand(100_000, 100_000, 8, 2, b"\x00" * 1000)
    started = time.perf_counter()
    with pytest.raises(InvalidImage, match="decompression bomb"):
        decode_image(bomb, source="bomb.png")
    assert time.perf_counter() - started < 1.0
    # Below Pillow's own limit but above ours: our limit, with the numbers.
    with pytest.raises(InvalidImage, match=r"3000x2000 pixels is more than the limit of 5000000"):
        decode_image(encoded(Image.new("RGB", (3000, 2000)), "PNG"), max_pixels=5_000_000)


def test_a_file_over_the_byte_limit_is_refused(tmp_path):
    with pytest.raises(InvalidImage, match="more than the limit of 1024"):
        decode_image(b"\xff" * 2048, max_bytes=1024)
    big = tmp_path / "big.jpg"
    big.write_bytes(JPEG + b"\x00" * 4096)
    with pytest.raises(InvalidImage, match="more than the limit"):
        load_image_file(big, max_bytes=2048)


def test_missing_files_and_folders_are_refused(tmp_path):
    with pytest.raises(InvalidImage, match="file not found"):
        load_image_file(tmp_path / "nope.jpg")
    with pytest.raises(InvalidImage, match="is a directory"):
        load_image_file(tmp_path)
    with pytest.raises(InvalidImage, match="cannot be read"):
        load_image_file(tmp_path / ("x" * 300 + ".jpg"))  # a name longer than the file system allows


# --- inputs that are read, right --------------------------------------------------------------------
def test_a_cmyk_jpeg_decodes_to_the_right_colours():
    image = decode_image(encoded(halves().convert("CMYK"), "JPEG", quality=95))
    assert image.mode == "RGB" and image.size == (120, 80)
    assert np.abs(mean_colour(image, (5, 5, 50, 75)) - (220, 30, 30)).max() < 20
    assert np.abs(mean_colour(image, (70, 5, 115, 75)) - (30, 30, 220)).max() < 20


def test_16_bit_pngs_are_scaled_into_8_bits_not_clipped():
    ramp = np.tile(np.linspace(0, 65535, 256).astype(np.uint16), (64, 1))  # black to white
    image = decode_image(encoded(Image.fromarray(ramp), "PNG"))
    assert Image.open(io.BytesIO(encoded(Image.fromarray(ramp), "PNG"))).mode.startswith("I;16")
    grey = np.asarray(image)[8, :, 0].astype(int)
    assert image.mode == "RGB"
    assert grey[0] < 3 and grey[-1] > 252 and 120 < grey[128] < 136  # mid-grey stays mid-grey
    assert np.all(np.diff(grey) >= 0)
    # 16-bit RGB (which PIL cannot write): colours survive too.
    pixel = struct.pack(">HHH", 0xFFFF, 0x8000, 0x0000)
    raw = b"".join(b"\x00" + pixel * 32 for _ in range(32))
    rgb = decode_image(png_by_hand(32, 32, 16, 2, raw))
    assert np.abs(mean_colour(rgb, (0, 0, 32, 32)) - (255, 128, 0)).max() <= 2


def test_transparency_becomes_white_whatever_the_mode():
    palette = Image.new("P", (60, 40), 0)
    palette.putpalette([0, 0, 0] + [20, 160, 20] * 255)  # index 0: black, and transparent below
    palette.paste(1, (0, 0, 30, 40))
    opaque_left = np.zeros((40, 60), dtype=np.uint8)
    opaque_left[:, :30] = 255
    rgba = np.zeros((40, 60, 4), dtype=np.uint8)
    rgba[..., :3] = (20, 160, 20)
    rgba[..., 3] = opaque_left
    la = np.stack([np.full((40, 60), 120, dtype=np.uint8), opaque_left], axis=-1)
    cases = {
        "palette with a transparent index": encoded(palette, "PNG", transparency=0),
        "RGBA": encoded(Image.fromarray(rgba, "RGBA"), "PNG"),
        "LA": encoded(Image.fromarray(la, "LA"), "PNG"),
        "GIF with a transparent index": encoded(palette, "GIF", transparency=0),
        "WEBP with alpha": encoded(Image.fromarray(rgba, "RGBA"), "WEBP", lossless=True),
    }
    for name, data in cases.items():
        image = decode_image(data, source=name)
        assert image.mode == "RGB", name
        assert mean_colour(image, (35, 2, 58, 38)).min() > 250, f"{name}: transparent part not white"
        assert mean_colour(image, (2, 2, 25, 38)).max() < 250, f"{name}: opaque part lost"


def test_animated_images_give_their_first_frame():
    frames = [Image.new("RGB", (64, 64), colour) for colour in ((230, 20, 20), (20, 20, 230), (20, 230, 20))]
    for fmt in ("GIF", "WEBP", "PNG"):
        data = encoded(frames[0], fmt, save_all=True, append_images=frames[1:], duration=100, loop=0)
        image = decode_image(data, source=fmt)
        red, green, blue = mean_colour(image, (0, 0, 64, 64))
        assert red > 200 and green < 60 and blue < 60, f"animated {fmt}: not the first frame"


def test_webp_bmp_and_tiff_photos_decode():
    for fmt in ("WEBP", "BMP", "TIFF"):
        image = decode_image(encoded(halves(), fmt), source=fmt)
        assert image.size == (120, 80) and mean_colour(image, (5, 5, 50, 75))[0] > 180, fmt


@pytest.fixture(scope="module")
def product_photo() -> Image.Image:
    with Image.open(require(FASHION) / "images" / "19872.jpg") as photo:
        return photo.convert("RGB")


# EXIF orientation -> how the stored pixels relate to the upright picture (numpy, not PIL's table).
STORED_AS = {
    2: lambda a: a[:, ::-1],  # mirrored
    3: lambda a: np.rot90(a, 2),  # upside down
    6: lambda a: np.rot90(a, 1),  # stored 90 degrees counter-clockwise; viewers turn it clockwise
    8: lambda a: np.rot90(a, -1),  # stored 90 degrees clockwise
}


@pytest.mark.parametrize("orientation", sorted(STORED_AS))
def test_an_exif_rotated_photo_is_embedded_upright(orientation, product_photo, encoder):
    upright = np.asarray(product_photo)
    stored = Image.fromarray(np.ascontiguousarray(STORED_AS[orientation](upright)))
    exif = Image.Exif()
    exif[0x0112] = orientation
    decoded = decode_image(encoded(stored, "JPEG", quality=95, exif=exif.tobytes()))
    assert decoded.size == product_photo.size
    assert np.abs(np.asarray(decoded, dtype=np.float32) - upright).mean() < 4  # JPEG noise only
    vectors = encoder.encode_images([decoded, product_photo, stored])
    assert float(vectors[0] @ vectors[1]) > 0.98
    if orientation != 2:  # a mirror image is a near-twin of the original to the model
        assert float(vectors[0] @ vectors[1]) > float(vectors[2] @ vectors[1]) + 0.02


def test_a_broken_exif_block_does_not_lose_the_photo():
    data = encoded(halves(), "JPEG", exif=b"Exif\x00\x00MM\x00*\x00\x00\x00\x08\x00\x05\x01\x12\x00\x03")
    image = decode_image(data)
    assert image.size == (120, 80)


def test_a_huge_photo_is_decoded_small_without_the_memory_of_its_full_size(tmp_path):
    path = tmp_path / "huge.jpg"
    Image.new("RGB", (8000, 6000), (30, 120, 200)).save(path, "JPEG", quality=85)
    # In a fresh process, so that its peak memory is this decode's: a full decode needs 144 MB.
    probe = (
        "import resource, sys; from pathlib import Path; from engine.images import load_image_file\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        f"image = load_image_file(Path({str(path)!r}))\n"
        "after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "print(image.size[0], image.size[1], (after - before) // 1024)\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=60,
                         check=False)
    assert out.returncode == 0, out.stderr
    width, height, grown_mb = map(int, out.stdout.split())
    assert min(width, height) <= WORKING_SIZE and max(width, height) <= 4 * WORKING_SIZE
    assert abs(width / height - 8000 / 6000) < 0.02
    assert grown_mb < 40, f"decoding took {grown_mb} MB more: the photo was decoded at full size"


def test_a_huge_png_and_an_absurdly_long_strip_are_bounded(encoder):
    image = decode_image(encoded(Image.new("RGB", (8000, 6000), (200, 20, 20)), "PNG"))
    assert min(image.size) <= WORKING_SIZE and max(image.size) <= 4 * WORKING_SIZE
    # 1 x 6000: the encoder would stretch the short side to 224 (224 x 1.3 M pixels) first.
    strip = decode_image(encoded(Image.new("RGB", (1, 6000), (20, 20, 200)), "PNG"))
    assert strip.size[1] <= 8 * strip.size[0]
    started = time.perf_counter()
    encoder.encode_images([strip])
    assert time.perf_counter() - started < 5


# --- URLs ----------------------------------------------------------------------------------------
PHOTO = encoded(halves(), "JPEG")


class Shop(BaseHTTPRequestHandler):
    requests: ClassVar[list[str]] = []

    def log_message(self, *args):  # keep test output clean
        pass

    def do_GET(self):
        Shop.requests.append(self.path)
        routes = {
            "/photo.jpg": lambda: self._send(200, "image/jpeg", PHOTO),
            "/page.html": lambda: self._send(200, "text/html; charset=utf-8", b"<html><body>shop</body></html>"),
            "/html-as-jpeg.jpg": lambda: self._send(200, "image/jpeg", b"<html><body>login</body></html>"),
            "/missing.jpg": lambda: self._send(404, "text/html", b"not found"),
            "/slow.jpg": self._slow,
            "/drip.jpg": self._drip,
            "/endless.jpg": self._endless,
            "/to-file": lambda: self._redirect("file:///etc/passwd"),
            "/to-photo": lambda: self._redirect("/photo.jpg"),
            "/loop": lambda: self._redirect("/loop"),
            "/declared-huge.jpg": self._declared_huge,
        }
        routes.get(self.path, lambda: self._send(404, "text/plain", b""))()

    def _send(self, status, content_type, body):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _redirect(self, location):
        self.send_response(302)
        self.send_header("Location", location)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _slow(self):
        time.sleep(3)  # answers nothing for longer than the timeout
        self._send(200, "image/jpeg", PHOTO)

    def _drip(self):
        self.send_response(200)
        self.send_header("Content-Type", "image/jpeg")
        self.end_headers()
        for byte in PHOTO[:60]:  # a byte every 0.1 s: each read is quick, the whole is not
            self.wfile.write(bytes([byte]))
            self.wfile.flush()
            time.sleep(0.1)

    def _endless(self):
        self.send_response(200)
        self.send_header("Content-Type", "image/jpeg")
        self.end_headers()
        for _ in range(64):
            self.wfile.write(b"\xff" * 65536)

    def _declared_huge(self):
        self.send_response(200)
        self.send_header("Content-Type", "image/jpeg")
        self.send_header("Content-Length", str(10 ** 9))
        self.end_headers()


@pytest.fixture(scope="module")
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Shop)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_port}"
    httpd.shutdown()


def fetch(url, allow_private=True, timeout_s=1.0, max_bytes=1024 * 1024):
    return fetch_url(url, timeout_s=timeout_s, max_bytes=max_bytes, allow_private=allow_private)


def test_a_photo_url_on_an_allowed_network_is_fetched_and_decoded(server):
    assert decode_image(fetch(f"{server}/photo.jpg")).size == (120, 80)
    assert fetch(f"{server}/to-photo") == PHOTO  # a redirect is followed


@pytest.mark.parametrize("path, reason", [
    ("/page.html", "not an image (content-type 'text/html')"),
    ("/missing.jpg", "the server answered HTTP 404"),
    ("/slow.jpg", "timed out after 1 s"),
    ("/drip.jpg", "timed out after 1 s"),
    ("/endless.jpg", "more than the limit of 1048576 bytes"),
    ("/declared-huge.jpg", "1000000000 bytes is more than the limit"),
    ("/to-file", "only http and https image URLs are fetched, not 'file'"),
    ("/loop", "more than 3 redirects"),
])
def test_a_url_that_gives_no_photo_is_refused_with_a_reason(server, path, reason):
    started = time.perf_counter()
    with pytest.raises(InvalidImage) as refused:
        fetch(server + path)
    assert reason in str(refused.value)
    assert time.perf_counter() - started < 3.5  # a timeout is a timeout: one second, not the server's pace


def test_a_url_that_serves_html_as_a_jpeg_is_refused_when_decoded(server):
    with pytest.raises(InvalidImage, match="not a readable image"):
        decode_image(fetch(f"{server}/html-as-jpeg.jpg"), source=f"{server}/html-as-jpeg.jpg")


@pytest.mark.parametrize("url", [
    "http://127.0.0.1:{port}/photo.jpg",
    "http://localhost:{port}/photo.jpg",
    "http://[::1]:{port}/photo.jpg",
    "http://[::ffff:127.0.0.1]:{port}/photo.jpg",
    "http://2130706433:{port}/photo.jpg",  # 127.0.0.1 as one number
    "http://0.0.0.0:{port}/photo.jpg",
    "http://10.1.2.3/photo.jpg",
    "http://192.168.0.10/photo.jpg",
    "http://169.254.169.254/latest/meta-data/",  # the cloud metadata service
    "http://[fe80::1]/photo.jpg",
    "http://224.0.0.1/photo.jpg",
])
def test_loopback_private_and_link_local_urls_are_refused_unless_allowed(server, url):
    port = server.rsplit(":", 1)[1]
    Shop.requests.clear()
    with pytest.raises(InvalidImage) as refused:
        fetch(url.format(port=port), allow_private=False)
    message = str(refused.value)
    assert "private, loopback" in message or "does not resolve" in message
    assert "SNAPSHOP_INGEST__ALLOW_PRIVATE_URLS" in message or "does not resolve" in message
    assert Shop.requests == []  # refused before any connection


@pytest.mark.parametrize("url, reason", [
    ("file:///etc/passwd", "only http and https image URLs are fetched, not 'file'"),
    ("ftp://example.com/photo.jpg", "not 'ftp'"),
    ("gopher://example.com/photo.jpg", "not 'gopher'"),
    ("http://example.com:99999/photo.jpg", "not a valid URL"),
    ("http://[::1/photo.jpg", "not a valid URL"),
    ("http:///photo.jpg", "no host in the URL"),
])
def test_urls_that_are_not_http_or_not_urls_are_refused(url, reason):
    with pytest.raises(InvalidImage, match=reason):
        fetch(url, allow_private=False)


def test_a_name_that_resolves_elsewhere_the_second_time_cannot_reach_the_private_network(server, monkeypatch):
    """DNS rebinding: public when checked, loopback when connecting. The connection goes to the
    address that was checked, so the local server never sees a request."""
    port = server.rsplit(":", 1)[1]
    real = socket.getaddrinfo
    answers = iter(["192.0.2.10"])  # TEST-NET-1: never routed; then loopback for ever after

    def rebinding(host, *args, **kwargs):
        if host == "cdn.shop.example":
            host = next(answers, "127.0.0.1")
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", rebinding)
    monkeypatch.setattr("engine.fetch._public", lambda address: str(address) == "192.0.2.10")
    Shop.requests.clear()
    with pytest.raises(InvalidImage):
        fetch(f"http://cdn.shop.example:{port}/photo.jpg", allow_private=False, timeout_s=1)
    assert Shop.requests == []


def test_a_catalog_image_reference_cannot_leave_its_folder_or_use_other_schemes(tmp_path):
    loader = ImageLoader(tmp_path, IngestSettings())
    for source, reason in [("file:///etc/passwd", r"only local paths and http\(s\) URLs"),
                           ("../../etc/passwd", "outside the catalog's folder"),
                           ("/etc/passwd", "outside the catalog's folder")]:
        with pytest.raises(InvalidImage, match=reason):
            loader.load(source)
    (tmp_path / "link.jpg").symlink_to("/etc/hostname")
    with pytest.raises(InvalidImage, match="outside the catalog's folder"):
        loader.load("link.jpg")


# --- all of it in one ingest: the good products are stored, each bad one reported ----------------
def test_an_ingest_full_of_bad_images_stores_the_good_ones_and_reports_each_bad_one(tmp_path, server, encoder,
                                                                                    product_photo):
    shop = tmp_path / "shop"
    (shop / "images").mkdir(parents=True)
    files = {
        "good.jpg": encoded(product_photo, "JPEG"),
        "cmyk.jpg": encoded(product_photo.convert("CMYK"), "JPEG"),
        "rotated.jpg": encoded(product_photo.rotate(90, expand=True), "JPEG",
                               exif=_orientation(6)),
        "zero.jpg": b"",
        "truncated.jpg": encoded(product_photo, "JPEG")[:900],
        "notes.jpg": b"not a photo",
        "bomb.png": png_by_hand(100_000, 100_000, 8, 2, b"\x00" * 100),
    }
    for name, data in files.items():
        (shop / "images" / name).write_bytes(data)
    rows = [(f"p-{name.split('.')[0]}", f"images/{name}") for name in files] + [
        ("p-url-html", f"{server}/page.html"),
        ("p-url-private", "http://169.254.169.254/latest/meta-data/"), ("p-passwd", "../../../etc/passwd"),
        ("p-two-photos", "images/good.jpg|images/zero.jpg"),
    ]
    (shop / "catalog.jsonl").write_text("".join(
        json.dumps({"id": pid, "title": f"Product {pid}", "image": image}) + "\n" for pid, image in rows))
    settings = IngestSettings(url_timeout_s=1, allow_private_urls=False)
    with open_store(StoreSettings(path=tmp_path / "store"), encoder.info) as store:
        summary = ingest_catalog(read_catalog(shop / "catalog.jsonl"), encoder, store, settings, progress=False)
        stored = set(store.get([pid for pid, _ in rows]))
    assert stored == {"p-good", "p-cmyk", "p-rotated", "p-two-photos"}
    assert summary.stored + len(summary.skipped_rows) == summary.rows == len(rows)
    reasons = {p.product_id: p.reason for p in summary.bad_images}
    assert "empty file (0 bytes)" in reasons["p-zero"] and "empty file" in reasons["p-two-photos"]
    assert "broken or truncated" in reasons["p-truncated"]
    assert "not a readable image" in reasons["p-notes"]
    assert "decompression bomb" in reasons["p-bomb"]
    assert "private, loopback" in reasons["p-url-html"]  # loopback: refused before any request
    assert "private, loopback" in reasons["p-url-private"]
    assert "outside the catalog's folder" in reasons["p-passwd"]
    assert {p.product_id for p in summary.skipped_rows} == set(reasons) - {"p-two-photos"}


def _orientation(value: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = value
    return exif.tobytes()

