"""media.py without a model: data URIs, decoding, the private-address guard, fetch limits."""

from __future__ import annotations

import asyncio
import io

import httpx
import pytest
from PIL import Image

from llamaserve.media import (
    FetchLimits,
    ImageError,
    check_public,
    decode_image,
    fetch,
    parse_data_uri,
)

from .builders import data_uri, image_bytes


def test_data_uri_gives_the_encoded_bytes() -> None:
    png = image_bytes()
    assert parse_data_uri(data_uri(png), max_bytes=1 << 20) == png


def test_data_uri_with_line_breaks_in_base64_is_accepted() -> None:
    png = image_bytes()
    uri = data_uri(png)
    head, body = uri.split(",", 1)
    assert parse_data_uri(f"{head},{body[:10]}\n{body[10:]}", max_bytes=1 << 20) == png


@pytest.mark.parametrize(
    ("uri", "reason"),
    [
        ("data:text/plain;base64,aGVsbG8=", "not image/*"),
        ("data:image/png,rawbytes", "not base64-encoded"),
        ("data:image/png;base64,@@@@", "base64 data is invalid"),
        ("data:image/png;base64", "malformed"),
    ],
)
def test_bad_data_uris_say_why(uri: str, reason: str) -> None:
    with pytest.raises(ImageError, match=reason):
        parse_data_uri(uri, max_bytes=1 << 20)


def test_data_uri_over_the_byte_limit_is_refused() -> None:
    with pytest.raises(ImageError, match="larger than 100 bytes"):
        parse_data_uri(data_uri(b"x" * 1000), max_bytes=100)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP", "GIF"])
def test_each_supported_format_decodes_to_rgb(fmt: str) -> None:
    image = decode_image(image_bytes(fmt, size=(40, 24)))
    assert (image.width, image.height) == (40, 24)
    assert len(image.rgb) == 40 * 24 * 3


def test_exif_orientation_is_applied() -> None:
    # Orientation 6: the camera was turned; viewers rotate the image 90° clockwise.
    image = decode_image(image_bytes("JPEG", size=(40, 24), orientation=6))
    assert (image.width, image.height) == (24, 40)
    top_left = image.rgb[:3]
    assert top_left[0] > 200 and top_left[2] < 60  # the red half is now on top


def test_gif_gives_its_first_frame() -> None:
    frames = [Image.new("RGB", (8, 8), color) for color in ((0, 255, 0), (255, 0, 0))]
    buffer = io.BytesIO()
    frames[0].save(buffer, "GIF", save_all=True, append_images=frames[1:])
    image = decode_image(buffer.getvalue())
    assert image.rgb[:3] == bytes((0, 255, 0))


def test_transparency_is_flattened_onto_white() -> None:
    buffer = io.BytesIO()
    Image.new("RGBA", (4, 4), (255, 0, 0, 0)).save(buffer, "PNG")
    assert decode_image(buffer.getvalue()).rgb[:3] == bytes((255, 255, 255))


@pytest.mark.parametrize("data", [b"not an image at all", image_bytes("BMP")])
def test_undecodable_or_unsupported_data_is_refused(data: bytes) -> None:
    with pytest.raises(ImageError, match="not a decodable image"):
        decode_image(data)


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/a.png",
        "http://localhost:8000/a.png",
        "http://10.1.2.3/a.png",
        "http://192.168.0.1/a.png",
        "http://169.254.169.254/latest/meta-data",
        "http://[::1]/a.png",
        "http://[::ffff:127.0.0.1]/a.png",
    ],
)
def test_private_and_loopback_hosts_are_refused(url: str) -> None:
    with pytest.raises(ImageError, match="private or local address"):
        asyncio.run(check_public(url))


def test_public_address_passes_the_guard() -> None:
    asyncio.run(check_public("http://93.184.215.14/a.png"))


def _fetch(url: str, handler, **limits) -> bytes:
    async def go() -> bytes:
        transport = httpx.MockTransport(handler)
        async with httpx.AsyncClient(transport=transport) as client:
            return await fetch(url, FetchLimits(**limits), client)

    return asyncio.run(go())


def test_guard_checks_every_redirect_hop() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.host == "93.184.215.14":
            return httpx.Response(302, headers={"location": "http://127.0.0.1/secret.png"})
        return httpx.Response(200, content=image_bytes(), headers={"content-type": "image/png"})

    with pytest.raises(ImageError, match="private or local address"):
        _fetch("http://93.184.215.14/a.png", handler, block_private=True)
    assert _fetch("http://93.184.215.14/a.png", handler) == image_bytes()


def test_body_without_content_length_is_cut_at_the_limit() -> None:
    async def chunks():
        for _ in range(2):
            yield b"x" * 600

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=chunks(), headers={"content-type": "image/png"})

    with pytest.raises(ImageError, match="larger than 1000 bytes"):
        _fetch("http://93.184.215.14/a.png", handler, max_bytes=1000)


def test_non_http_schemes_are_refused() -> None:
    with pytest.raises(ImageError, match="only data:, http: and https:"):
        _fetch("file:///etc/passwd", lambda request: httpx.Response(200))
