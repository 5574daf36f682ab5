"""Images for chat messages: data URIs, http(s) URLs fetched with limits, Pillow decoding.

Nothing here knows which model runs: the result is packed RGB pixels. Errors are ImageError
with a message for the API client; the handler adds which message part it was.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import io
import ipaddress
import logging
import re
import socket
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

import httpx
from PIL import Image, ImageOps, UnidentifiedImageError

from .engine.types import ImageInput

logger = logging.getLogger(__name__)

FORMATS = ("PNG", "JPEG", "WEBP", "GIF")
MAX_PIXELS = 40_000_000  # larger images are refused before decoding (decompression bombs)
_DATA_URI = re.compile(r"^data:(?P<type>[\w.+-]+/[\w.+-]+)?(?P<params>(;[^;,]*)*),(?P<data>.*)$",
                       re.DOTALL)
# Servers often label images generically; anything else (text/html...) is not an image.
_ACCEPTED_TYPES = ("image/", "application/octet-stream", "binary/octet-stream")


class ImageError(ValueError):
    """An image that cannot be used; the message says why, for the API client."""


@dataclass(frozen=True)
class FetchLimits:
    timeout: float = 10.0  # seconds, for the whole fetch of one URL
    max_bytes: int = 20 * 1024 * 1024
    max_redirects: int = 3
    block_private: bool = False  # refuse hosts that resolve to private or loopback addresses


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


def decode_image(data: bytes) -> ImageInput:
    """PNG, JPEG, WebP or GIF (first frame) → RGB, with EXIF orientation applied and
    transparency flattened onto white."""
    try:
        with Image.open(io.BytesIO(data), formats=FORMATS) as image:
            if image.width * image.height > MAX_PIXELS:
                raise ImageError(f"the image has {image.width}x{image.height} pixels, more than "
                                 f"{MAX_PIXELS} in all")
            image.seek(0)
            upright = ImageOps.exif_transpose(image)
            rgb = _to_rgb(upright)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        if isinstance(exc, ImageError):
            raise
        raise ImageError(
            f"the data is not a decodable image (supported: {', '.join(FORMATS)})"
        ) from exc
    return ImageInput(rgb.width, rgb.height, rgb.tobytes())


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size, "white")
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return image.convert("RGB")


async def check_public(url: str) -> None:
    """ImageError unless every address the URL's host resolves to is public."""
    host = urlsplit(url).hostname
    if not host:
        raise ImageError("the URL has no host")
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise ImageError(f"the host '{host}' cannot be resolved") from exc
    for info in infos:
        address = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
        if not address.is_global or address.is_multicast:
            raise ImageError(f"the host '{host}' resolves to a private or local address, which "
                             "this server does not fetch from; send the image as a data URI")


async def fetch(url: str, limits: FetchLimits, client: httpx.AsyncClient) -> bytes:
    """GET an http(s) URL, following at most `limits.max_redirects` redirects (each hop
    checked against the private-address guard), reading at most `limits.max_bytes`."""
    for _ in range(limits.max_redirects + 1):
        if urlsplit(url).scheme not in ("http", "https"):
            raise ImageError("only data:, http: and https: image URLs are supported")
        if limits.block_private:
            await check_public(url)
        async with client.stream("GET", url, follow_redirects=False) as response:
            if response.is_redirect:
                url = urljoin(url, response.headers["location"])
                continue
            if response.status_code != 200:
                raise ImageError(f"fetching the image failed: HTTP {response.status_code}")
            content_type = response.headers.get("content-type", "").lower()
            if content_type and not content_type.startswith(_ACCEPTED_TYPES):
                raise ImageError(f"the URL's content-type is '{content_type}', not an image")
            declared = response.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > limits.max_bytes:
                raise ImageError(f"the image is larger than {limits.max_bytes} bytes")
            body = bytearray()
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) > limits.max_bytes:
                    raise ImageError(f"the image is larger than {limits.max_bytes} bytes")
            return bytes(body)
    raise ImageError(f"the URL redirects more than {limits.max_redirects} times")


async def load_image(url: str, limits: FetchLimits, client: httpx.AsyncClient) -> ImageInput:
    """A data URI or http(s) URL → decoded RGB pixels (decoding runs in a worker thread)."""
    if url.startswith("data:"):
        data = parse_data_uri(url, limits.max_bytes)
    else:
        try:
            data = await asyncio.wait_for(fetch(url, limits, client), limits.timeout)
        except (TimeoutError, httpx.TimeoutException) as exc:
            raise ImageError(f"fetching the image took longer than {limits.timeout:g}s") from exc
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            raise ImageError(f"fetching the image failed: {exc}") from exc
    return await asyncio.to_thread(decode_image, data)
