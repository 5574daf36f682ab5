"""A request's images, from their URLs to decoded pixels, within the request's limits: each
image's pixel count and the request's total are checked from the headers before anything is
decoded, and each is decoded at the size its model's projector will use."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

from ..engine.types import ImageInput
from ..engine.vision import fixed_input_side
from ..errors import RequestError
from ..image_urls import image_client
from ..media import FetchLimits, Fit, ImageError, decode_image, image_size, in_decoder, read_image
from ..settings import Settings
from .requests import Image

T = TypeVar("T")


async def load_images(images: list[Image], settings: Settings,
                      projector: Path | None) -> list[ImageInput]:
    """Every image fetched and decoded, in order; 400 naming the part that cannot be used."""
    limits = FetchLimits(
        timeout=settings.image_timeout,
        max_bytes=settings.image_max_bytes,
        max_redirects=settings.image_max_redirects,
        allow_private=settings.allow_private_urls,
    )
    async with image_client(limits.timeout) as client:
        data = await _all([_each(image, read_image(image.url, limits, client))
                           for image in images])
    sizes = await _all([_each(image, in_decoder(image_size, one, settings.max_image_pixels))
                        for image, one in zip(images, data, strict=True)])
    _check_total(images, sizes, settings.max_request_image_pixels)
    side = None if projector is None else await asyncio.to_thread(fixed_input_side, projector)
    fit = Fit(max_side=settings.max_image_side, fixed_side=side)
    return await _all([_each(image, in_decoder(decode_image, one, settings.max_image_pixels, fit))
                       for image, one in zip(images, data, strict=True)])


async def _all(steps: list[Coroutine[Any, Any, T]]) -> list[T]:
    """Like gather, but the first failure cancels the others: decodes not yet started never
    run, fetches stop."""
    tasks = [asyncio.ensure_future(step) for step in steps]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        failures = [task.exception() for task in tasks if task.done() and not task.cancelled()]
        first = next((failure for failure in failures if failure is not None), None)
        if first is not None:
            raise first
        return [task.result() for task in tasks]
    finally:
        for task in tasks:
            task.cancel()


async def _each(image: Image, work: Awaitable[T]) -> T:
    try:
        return await work
    except ImageError as exc:
        raise RequestError(400, f"{image.param}: {exc}.", param=image.param,
                           code="invalid_image") from exc


def _check_total(images: list[Image], sizes: list[tuple[int, int]], limit: int) -> None:
    total = 0
    for image, (width, height) in zip(images, sizes, strict=True):
        total += width * height
        if total > limit:
            raise RequestError(
                400, f"The images of this request have more than {limit} pixels in all "
                f"({image.param} passes it); send fewer or smaller images "
                "(LLAMASERVE_MAX_REQUEST_IMAGE_PIXELS).",
                param=image.param, code="too_many_image_pixels")
