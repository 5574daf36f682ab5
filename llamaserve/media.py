"""Images for chat messages: data URIs, http(s) URLs (image_urls.py), Pillow decoding.

Nothing here knows which model runs: the result is packed RGB pixels, scaled down to what the
projector can use (`Fit`). The pixel count is read from the header before anything is decoded,
and decoding runs on a small pool of threads, so a request of many large images holds at most
DECODE_THREADS full-size images at once. Errors are ImageError with a message for the API
client; the caller adds which message part it was.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import ctypes
import ctypes.util
import io
import math
import re
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import TypeVar

import httpx
from PIL import Image, ImageOps, UnidentifiedImageError

from .engine.types import ImageInput
from .image_urls import FetchLimits, ImageError, Resolver, fetch, system_resolver

__all__ = ["FORMATS", "MAX_PIXELS", "MAX_SIDE", "DECODE_THREADS", "Fit", "FetchLimits",
           "ImageError", "parse_data_uri", "image_size", "decode_image", "read_image",
           "in_decoder"]

FORMATS = ("PNG", "JPEG", "WEBP", "GIF")
MAX_PIXELS = 40_000_000  # per image, from its header: larger ones are refused undecoded
MAX_SIDE = 2048  # decoded images are scaled down to fit this, when the projector's size is unknown
DECODE_THREADS = 2  # images decoded at once, in the whole server
# Our own limit, checked from the header right after opening, replaces Pillow's process-wide
# one: that one raises DecompressionBombError from Image.open (before the size can be read and
# the request's field named) and warns below it.
Image.MAX_IMAGE_PIXELS = None
_DATA_URI = re.compile(r"^data:(?P<type>[\w.+-]+/[\w.+-]+)?(?P<params>(;[^;,]*)*),(?P<data>.*)$",
                       re.DOTALL)
# Modes Pillow resizes well; others (palette, 1-bit, 16-bit) become RGB first.
_RESIZABLE = ("L", "LA", "RGB", "RGBA", "CMYK", "YCbCr", "I", "F")
_decoders = ThreadPoolExecutor(DECODE_THREADS, thread_name_prefix="image-decode")
_TRIM_ABOVE = 1_000_000  # pixels: after decoding a larger image, freed memory is given back
T = TypeVar("T")


@dataclass(frozen=True)
class Fit:
    """The size an image is decoded to: within `max_side`, and for a projector that scales
    every image to one square (LLaVA 1.5), no larger than needed for its short side to cover
    `fixed_side` — whether the projector pads, stretches or crops, nothing it would see is lost."""

    max_side: int = MAX_SIDE
    fixed_side: int | None = None

    def target(self, width: int, height: int) -> tuple[int, int]:
        scale = min(1.0, self.max_side / max(width, height))
        if self.fixed_side:
            scale = min(scale, self.fixed_side / min(width, height))
        return max(1, math.ceil(width * scale)), max(1, math.ceil(height * scale))


def parse_data_uri(uri: str, max_bytes: int) -> bytes:
    """The bytes of a `data:image/...;base64,...` URI."""
    match = _DATA_URI.match(uri)
    if match is None:
        raise ImageError("the data URI is malformed; send data:image/png;base64,<data>")
    media_type = (match["type"] or "").lower()
    if not media_type.startswith("image/"):
        raise ImageError(f"the data URI's media type is '{media_type or 'none'}', not image/*")
    if "base64" not in match["params"].lower().split(";"):
        raise ImageError("the data URI is not base64-encoded; send data:image/...;base64,<data>")
    data = match["data"]
    if len(data) * 3 // 4 > max_bytes:
        raise ImageError(f"the image is larger than {max_bytes} bytes")
    try:
        return base64.b64decode(re.sub(r"\s+", "", data), validate=True)
    except binascii.Error as exc:
        raise ImageError(f"the data URI's base64 data is invalid: {exc}") from exc


async def read_image(url: str, limits: FetchLimits, client: httpx.AsyncClient,
                     resolve: Resolver = system_resolver) -> bytes:
    """The encoded bytes of a data URI or http(s) URL."""
    if url.startswith("data:"):
        return parse_data_uri(url, limits.max_bytes)
    return await fetch(url, limits, client, resolve)


def check_pixels(width: int, height: int, max_pixels: int) -> None:
    if width * height > max_pixels:
        raise ImageError(f"the image is {width}x{height}, {width * height} pixels; at most "
                         f"{max_pixels} are accepted (--max-image-pixels)")


def image_size(data: bytes, max_pixels: int = MAX_PIXELS) -> tuple[int, int]:
    """(width, height) from the header alone; ImageError above `max_pixels`."""
    with _opened(data) as image:
        check_pixels(image.width, image.height, max_pixels)
        return image.size


def decode_image(data: bytes, max_pixels: int = MAX_PIXELS, fit: Fit = Fit()) -> ImageInput:
    """PNG, JPEG, WebP or GIF (first frame) → RGB scaled down to `fit`, with EXIF orientation
    applied and transparency flattened onto white."""
    with _opened(data) as image:
        check_pixels(image.width, image.height, max_pixels)
        large = image.width * image.height > _TRIM_ABOVE
        try:
            rgb = _scaled_rgb(image, fit)
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
            raise _undecodable() from exc
    decoded = ImageInput(rgb.width, rgb.height, rgb.tobytes())
    del rgb
    if large:
        _release_memory()
    return decoded


def _scaled_rgb(image: Image.Image, fit: Fit) -> Image.Image:
    image.seek(0)
    target = fit.target(image.width, image.height)
    if target[0] < image.width or target[1] < image.height:
        if image.mode not in _RESIZABLE:
            image = _to_rgb(image)
        # JPEG: decoded at 1/2, 1/4 or 1/8 scale (draft); others: reduce, then resample
        image.thumbnail(target, reducing_gap=2.0)
    return _to_rgb(ImageOps.exif_transpose(image))


async def in_decoder(function: Callable[..., T], *args: object) -> T:
    """Run `function` on the decoding threads (at most DECODE_THREADS images at once)."""
    return await asyncio.get_running_loop().run_in_executor(_decoders, partial(function, *args))


def _load_libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
    except OSError:
        return None
    return libc if libc is not None and hasattr(libc, "malloc_trim") else None


_libc = _load_libc()


def _release_memory() -> None:
    """Give freed heap memory back to the system. glibc otherwise keeps a decoding thread's
    freed full-size buffers in that thread's arena: 16 PNGs of 6000x6000 left ~270 MB held."""
    if _libc is not None:
        _libc.malloc_trim(0)


def _opened(data: bytes) -> Image.Image:
    try:
        return Image.open(io.BytesIO(data), formats=FORMATS)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError,
            Image.DecompressionBombError) as exc:
        raise _undecodable() from exc


def _undecodable() -> ImageError:
    return ImageError(f"the data is not a decodable image (supported: {', '.join(FORMATS)})")


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size, "white")
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return image.convert("RGB")
