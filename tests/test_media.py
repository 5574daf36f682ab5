"""media.py without a model: data URIs, decoding, pixel limits, scaling down."""

from __future__ import annotations

import asyncio
import io
import threading
import time

import pytest
from PIL import Image

from llamaserve.media import (
    DECODE_THREADS,
    Fit,
    ImageError,
    decode_image,
    image_size,
    in_decoder,
    parse_data_uri,
)

from .builders import data_uri, image_bytes, png_claiming


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


def encoded(size: tuple[int, int], mode: str = "RGB", fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size).save(buffer, fmt)
    return buffer.getvalue()


def test_pixel_count_is_read_from_the_header_and_a_bomb_is_refused() -> None:
    bomb = png_claiming(30_000, 30_000)
    assert len(bomb) < 200
    for read in (image_size, decode_image):
        with pytest.raises(ImageError, match="30000x30000, 900000000 pixels; at most 40000000"):
            read(bomb)


def test_pixel_limit_is_configurable() -> None:
    assert image_size(encoded((100, 50)), 5000) == (100, 50)
    with pytest.raises(ImageError, match="at most 4999"):
        decode_image(encoded((100, 50)), 4999)


@pytest.mark.parametrize(("size", "fit", "decoded"), [
    ((6000, 3000), Fit(), (2048, 1024)),  # the longest side within max_side
    ((3000, 6000), Fit(max_side=512), (256, 512)),
    ((6000, 3000), Fit(fixed_side=32), (64, 32)),  # the short side covers the projector's
    ((40, 24), Fit(fixed_side=32), (40, 24)),  # never scaled up
])
def test_images_are_decoded_at_the_size_the_projector_uses(
    size: tuple[int, int], fit: Fit, decoded: tuple[int, int]
) -> None:
    for fmt in ("PNG", "JPEG"):
        image = decode_image(encoded(size, fmt=fmt), fit=fit)
        assert (image.width, image.height) == decoded
        assert len(image.rgb) == decoded[0] * decoded[1] * 3


@pytest.mark.parametrize("mode", ["P", "1", "I;16", "LA"])
def test_every_mode_is_scaled_down_to_rgb(mode: str) -> None:
    image = decode_image(encoded((300, 200), mode=mode), fit=Fit(max_side=30))
    assert (image.width, image.height) == (30, 20)


def test_exif_orientation_is_applied_to_a_scaled_down_image() -> None:
    image = decode_image(image_bytes("JPEG", size=(400, 240), orientation=6), fit=Fit(max_side=40))
    assert (image.width, image.height) == (24, 40)
    assert image.rgb[0] > 200 and image.rgb[2] < 60  # the red half is on top


def test_at_most_two_images_decode_at_once() -> None:
    lock = threading.Lock()
    running, peak = 0, 0

    def decode() -> None:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        time.sleep(0.05)
        with lock:
            running -= 1

    async def many() -> None:
        await asyncio.gather(*(in_decoder(decode) for _ in range(8)))

    asyncio.run(many())
    assert peak == DECODE_THREADS == 2
