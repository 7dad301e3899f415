"""Decode an image the way every part of snapshop needs it: upright, RGB, bounded in size.

Shoppers' phone photos arrive EXIF-rotated, 12 MP, sometimes CMYK or 16-bit; catalogs hold
palette PNGs with transparency and the odd animated GIF. Everything ends here as an RGB image
no larger than the encoder needs, or as an ``InvalidImage`` saying why it could not.

The bytes come from strangers (catalog URLs, shoppers' uploads), so only the common photo
formats are parsed: Pillow's other plugins (EPS, which runs Ghostscript, PSD, ICNS, ...) are
never reached. Memory is bounded before decoding: the pixel count is read from the header and
refused above ``max_pixels``, and JPEGs decode at a reduced scale (draft mode).
"""

from __future__ import annotations

import io
import os
import stat
import threading
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter, ImageOps, UnidentifiedImageError

from engine.errors import DecodeBusy, InvalidImage

# The encoders look at 224 px; keeping a margin lets crops and later models use a bit more.
WORKING_SIZE = 448
DEFAULT_MAX_PIXELS = 60_000_000
DEFAULT_MAX_BYTES = 20 * 1024 * 1024
# Memory a decode takes per pixel at its peak: a 59-megapixel 16-bit grey PNG (115 KB) took
# 395 MB, 6.7 bytes a pixel (16-bit samples, widened to 32 for scaling, then 8-bit RGB).
PEAK_BYTES_PER_PIXEL = 7
# Photo formats shops and phones produce, as far as this Pillow reads them (the multi-picture
# JPEGs some cameras write come through the JPEG reader).
Image.init()
ACCEPTED_FORMATS = tuple(
    name for name in ("JPEG", "PNG", "GIF", "WEBP", "BMP", "TIFF", "AVIF") if name in Image.OPEN
)
# The encoders resize the short side and take the centre square, so a 1x5000 strip would be
# blown up to 224x1,120,000 px first. Cropping the long side to this many short sides around
# the centre keeps every pixel the encoder looks at and bounds that work.
MAX_ASPECT = 8


def decode_image(
    data: bytes,
    *,
    source: str = "image",
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_bytes: int = DEFAULT_MAX_BYTES,
    budget: DecodeBudget | None = None,
) -> Image.Image:
    """Decode ``data`` into an upright RGB image at most ``WORKING_SIZE`` px on its short side.

    With a ``budget``, the memory the decoding takes is reserved from it first (waiting for room),
    so that many large photos at once cannot take more than the budget together.
    """
    if not data:
        raise InvalidImage(f"{source}: empty file (0 bytes)")
    if len(data) > max_bytes:
        raise InvalidImage(f"{source}: {len(data)} bytes is more than the limit of {max_bytes}")
    try:
        image = _open(data, source, max_pixels)
        # JPEG draft decoding scales by 1/2..1/8 inside the decoder: a 12 MP phone photo
        # decodes in a fraction of the time and memory.
        image.draft("RGB", (WORKING_SIZE, WORKING_SIZE))
        with budget.reserve(decoding_cost(image, len(data)), source) if budget else nullcontext():
            return _decoded(image)
    except (InvalidImage, DecodeBusy):
        raise
    except Image.DecompressionBombError as e:
        raise InvalidImage(f"{source}: not a readable image ({_reason(e)})") from e
    except MemoryError as e:
        raise InvalidImage(f"{source}: too large to decode in the memory available") from e
    except Exception as e:  # any failure of a decoder on foreign bytes is this image's problem
        raise InvalidImage(f"{source}: broken or truncated image ({_reason(e)})") from e


def _decoded(image: Image.Image) -> Image.Image:
    image = _upright(image)
    image = _to_rgb(image)
    image = _crop_aspect(image)
    image.thumbnail((WORKING_SIZE * 4, WORKING_SIZE * 4))
    image = _shrink_short_side(image)
    image.load()
    return image


def decoding_cost(image: Image.Image, compressed_bytes: int) -> int:
    """Bytes of memory decoding ``image`` (its header read, its draft scale set) takes at most."""
    width, height = image.size
    return compressed_bytes + width * height * PEAK_BYTES_PER_PIXEL


def load_image_file(path: Path, **limits) -> Image.Image:
    """Read and decode a local image file; only a regular file is read (a FIFO would block for
    ever, a device such as /dev/zero never end)."""
    return decode_image(read_image_file(path, limits.get("max_bytes", DEFAULT_MAX_BYTES)), source=str(path),
                        **limits)


def read_image_file(path: Path, max_bytes: int) -> bytes:
    """The bytes of the regular file ``path``, at most ``max_bytes`` (else ``InvalidImage``)."""
    try:
        # Non-blocking, so that opening a FIFO returns at once instead of waiting for a writer;
        # the file's kind is then read from the open descriptor, not from the name (no race).
        descriptor = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0))
    except FileNotFoundError as e:
        raise InvalidImage(f"{path}: file not found") from e
    except IsADirectoryError as e:
        raise InvalidImage(f"{path}: is a directory, not an image") from e
    except PermissionError as e:
        raise InvalidImage(f"{path}: permission denied") from e
    except OSError as e:  # a name too long, an I/O error, a path through a file
        raise InvalidImage(f"{path}: cannot be read ({_reason(e)})") from e
    try:
        _check_regular_file(path, os.fstat(descriptor), max_bytes)
        with os.fdopen(os.dup(descriptor), "rb", buffering=0) as handle:
            data = handle.read(max_bytes + 1)  # the file may have grown since
    except OSError as e:
        raise InvalidImage(f"{path}: cannot be read ({_reason(e)})") from e
    finally:
        os.close(descriptor)
    if len(data) > max_bytes:
        raise InvalidImage(f"{path}: more than the limit of {max_bytes} bytes")
    return data


def _check_regular_file(path: Path, status: os.stat_result, max_bytes: int) -> None:
    if stat.S_ISDIR(status.st_mode):
        raise InvalidImage(f"{path}: is a directory, not an image")
    if not stat.S_ISREG(status.st_mode):
        raise InvalidImage(f"{path}: not a regular file (a FIFO, device or socket); photos are read from files only")
    if status.st_size > max_bytes:
        raise InvalidImage(f"{path}: {status.st_size} bytes is more than the limit of {max_bytes}")


class DecodeBudget:
    """Memory for decoding photos, shared by every decode given it (a server's uploads).

    A decode reserves what it will take (``decoding_cost``) and waits while the others hold
    too much; one that would take more than the whole budget is refused at once, and one that
    waits more than ``wait_s`` gives up with ``DecodeBusy``.
    """

    def __init__(self, max_bytes: int, wait_s: float = 30.0):
        self.max_bytes = max_bytes
        self.wait_s = wait_s
        self.in_use = 0
        self.peak = 0  # the most ever held at once
        self._room = threading.Condition()

    @contextmanager
    def reserve(self, cost: int, source: str = "image") -> Iterator[None]:
        if cost > self.max_bytes:
            raise InvalidImage(f"{source}: decoding it takes about {cost // 2**20} MB, more than the budget of "
                               f"{self.max_bytes // 2**20} MB for all photos being decoded at once")
        with self._room:
            if not self._room.wait_for(lambda: self.in_use + cost <= self.max_bytes, timeout=self.wait_s):
                raise DecodeBusy(f"too many large photos are being decoded right now; try again in a moment "
                                 f"({self.in_use // 2**20} MB of {self.max_bytes // 2**20} MB in use)")
            self.in_use += cost
            self.peak = max(self.peak, self.in_use)
        try:
            yield
        finally:
            with self._room:
                self.in_use -= cost
                self._room.notify_all()


def _open(data: bytes, source: str, max_pixels: int) -> Image.Image:
    """Identify the format and read the header only; refuse what would not fit in memory.

    Pillow's own bomb check (a warning past ``Image.MAX_IMAGE_PIXELS``, an error at twice that)
    stays as a second fence; ours comes first and is configurable. (Turning Pillow's warning
    into an error with ``warnings.catch_warnings`` is not an option: it changes process-wide
    state and is not thread-safe, and images are decoded by a thread pool.)
    """
    try:
        image = Image.open(io.BytesIO(data), formats=ACCEPTED_FORMATS)
    except UnidentifiedImageError as e:
        raise InvalidImage(f"{source}: not a readable image (not a {', '.join(ACCEPTED_FORMATS[:-1])} or "
                           f"{ACCEPTED_FORMATS[-1]} file)") from e
    width, height = image.size
    if width < 1 or height < 1:
        raise InvalidImage(f"{source}: broken image (declared size {width}x{height})")
    if width * height > max_pixels:
        raise InvalidImage(
            f"{source}: {width}x{height} pixels is more than the limit of {max_pixels} "
            "(possible decompression bomb)"
        )
    return image


def _upright(image: Image.Image) -> Image.Image:
    """Apply the EXIF orientation; a photo whose EXIF cannot be parsed is used as stored."""
    try:
        return ImageOps.exif_transpose(image)
    except (SyntaxError, ValueError, TypeError, KeyError, IndexError, AttributeError, ZeroDivisionError):
        # Malformed EXIF (a fuzzer's or a broken camera's): the pixels may still be fine. A real
        # decoding problem shows up again, and is reported, when the pixels are loaded below.
        if getattr(image, "n_frames", 1) > 1:
            image.seek(0)
        return image


def _to_rgb(image: Image.Image) -> Image.Image:
    """RGB on a white background: transparent product cut-outs belong on white, not black."""
    if getattr(image, "n_frames", 1) > 1:
        image.seek(0)  # animated GIF / WEBP: the first frame is the product shot
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        # 16-bit greyscale: scale into 8 bits instead of letting PIL clip at 255.
        return image.point(lambda value: value / 256).convert("L").convert("RGB")
    bands = image.getbands()
    if "A" in bands or "a" in bands or "transparency" in image.info:
        # RGBA, LA, PA, premultiplied RGBa/La, and palette or RGB images with a transparent colour.
        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    if image.mode != "RGB":
        return image.convert("RGB")
    return image


def _crop_aspect(image: Image.Image) -> Image.Image:
    width, height = image.size
    if width > height * MAX_ASPECT:
        keep = height * MAX_ASPECT
        left = (width - keep) // 2
        return image.crop((left, 0, left + keep, height))
    if height > width * MAX_ASPECT:
        keep = width * MAX_ASPECT
        top = (height - keep) // 2
        return image.crop((0, top, width, top + keep))
    return image


def _shrink_short_side(image: Image.Image) -> Image.Image:
    width, height = image.size
    short = min(width, height)
    if short <= WORKING_SIZE:
        return image
    scale = WORKING_SIZE / short
    if width == short:
        return image.resize((WORKING_SIZE, max(1, round(height * scale))), Image.Resampling.BICUBIC)
    return image.resize((max(1, round(width * scale)), WORKING_SIZE), Image.Resampling.BICUBIC)


def _reason(error: BaseException) -> str:
    text = str(error).strip() or type(error).__name__
    return text[:200]


def backdrop_mask(photo: Image.Image, white: int = 235) -> Image.Image:
    """255 on the product, 0 on a studio photo's near-white backdrop (the near-white pixels
    connected to the photo's corners): lets a catalog photo be set on another background."""
    from scipy import ndimage

    near_white = np.asarray(photo.convert("L")) > white
    regions, _ = ndimage.label(near_white)  # 4-connected, as a flood fill spreads
    corners = {regions[0, 0], regions[0, -1], regions[-1, 0], regions[-1, -1]} - {0}
    product = ~np.isin(regions, list(corners))
    return Image.fromarray(np.where(product, 255, 0).astype(np.uint8)).filter(ImageFilter.MinFilter(3))
