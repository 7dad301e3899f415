"""Decode an image the way every part of snapshop needs it: upright, RGB, bounded in size.

Shoppers' phone photos arrive EXIF-rotated, 12 MP, sometimes CMYK or 16-bit; catalogs hold
palette PNGs with transparency and the odd animated GIF. Everything ends here as an RGB image
no larger than the encoder needs, or as an ``InvalidImage`` saying why it could not.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError

from engine.errors import InvalidImage

# The encoders look at 224 px; keeping a margin lets crops and later models use a bit more.
WORKING_SIZE = 448
DEFAULT_MAX_PIXELS = 60_000_000
DEFAULT_MAX_BYTES = 20 * 1024 * 1024


def decode_image(
    data: bytes,
    *,
    source: str = "image",
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> Image.Image:
    """Decode ``data`` into an upright RGB image at most ``WORKING_SIZE`` px on its short side."""
    if not data:
        raise InvalidImage(f"{source}: empty file (0 bytes)")
    if len(data) > max_bytes:
        raise InvalidImage(f"{source}: {len(data)} bytes is more than the limit of {max_bytes}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            width, height = image.size
            if width * height > max_pixels:
                raise InvalidImage(
                    f"{source}: {width}x{height} pixels is more than the limit of {max_pixels} "
                    "(possible decompression bomb)"
                )
            # JPEG draft decoding scales by 1/2..1/8 inside the decoder: a 12 MP phone photo
            # decodes in a fraction of the time and memory.
            image.draft("RGB", (WORKING_SIZE, WORKING_SIZE))
            image = ImageOps.exif_transpose(image)
            image = _to_rgb(image)
            image.thumbnail((WORKING_SIZE * 4, WORKING_SIZE * 4))
            _shrink_short_side(image)
            image.load()
    except InvalidImage:
        raise
    except (UnidentifiedImageError, Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise InvalidImage(f"{source}: not a readable image ({_reason(e)})") from e
    except (OSError, ValueError, SyntaxError, EOFError) as e:
        raise InvalidImage(f"{source}: broken or truncated image ({_reason(e)})") from e
    return image


def load_image_file(path: Path, **limits) -> Image.Image:
    """Read and decode a local image file."""
    try:
        size = path.stat().st_size
        max_bytes = limits.get("max_bytes", DEFAULT_MAX_BYTES)
        if size > max_bytes:
            raise InvalidImage(f"{path}: {size} bytes is more than the limit of {max_bytes}")
        data = path.read_bytes()
    except FileNotFoundError as e:
        raise InvalidImage(f"{path}: file not found") from e
    except IsADirectoryError as e:
        raise InvalidImage(f"{path}: is a directory, not an image") from e
    except PermissionError as e:
        raise InvalidImage(f"{path}: permission denied") from e
    return decode_image(data, source=str(path), **limits)


def _to_rgb(image: Image.Image) -> Image.Image:
    """RGB on a white background: transparent product cut-outs belong on white, not black."""
    if getattr(image, "n_frames", 1) > 1:
        image.seek(0)  # animated GIF / WEBP: the first frame is the product shot
    if image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16-bit greyscale: scale into 8 bits instead of letting PIL clip at 255.
        return image.point(lambda value: value / 256).convert("L").convert("RGB")
    if image.mode != "RGB":
        return image.convert("RGB")
    return image


def _shrink_short_side(image: Image.Image) -> None:
    width, height = image.size
    short = min(width, height)
    if short > WORKING_SIZE:
        scale = WORKING_SIZE / short
        image.thumbnail((round(width * scale) + 1, round(height * scale) + 1), Image.Resampling.BICUBIC)


def _reason(error: BaseException) -> str:
    text = str(error).strip() or type(error).__name__
    return text[:200]
