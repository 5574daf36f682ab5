"""Images in chat messages: which parts are images, and fetching them before the engine runs."""

from __future__ import annotations

import asyncio

import httpx

from ..engine.types import ImageInput
from ..media import FetchLimits, ImageError, load_image
from ..models.manager import ModelManager, ResidentModel
from ..settings import Settings
from .errors import APIError
from .schemas import ChatCompletionRequest, ImagePart


def accepts_images(model: ResidentModel) -> bool:
    # with `serve`, a catalog model's files are located on first use: its kind tells
    return model.spec.kind == "vision" or (
        model.files is not None and model.files.projector is not None
    )


def no_images(model: ResidentModel, i: int, j: int) -> APIError:
    return APIError(
        400,
        f"model '{model.spec.id}' does not accept images (messages[{i}].content[{j}] is an "
        "image); use a vision model, or start this one with its projector (--mmproj).",
        param=f"messages[{i}].content[{j}]",
        code="image_not_supported",
    )


async def message_images(
    body: ChatCompletionRequest, manager: ModelManager, settings: Settings
) -> list[ImageInput]:
    """Every image of the conversation, fetched and decoded, in order; 400 naming the part
    for one that cannot be used."""
    parts = [
        (i, j, part.image_url if isinstance(part.image_url, str) else part.image_url.url)
        for i, message in enumerate(body.messages)
        if isinstance(message.content, list)
        for j, part in enumerate(message.content)
        if isinstance(part, ImagePart)
    ]
    if not parts:
        return []
    model = manager.find(body.model)
    if model is None:
        return []  # open_generation answers 404 for the model
    if not accepts_images(model):
        raise no_images(model, *parts[0][:2])
    if len(parts) > settings.max_images:
        i, j, _ = parts[settings.max_images]
        raise APIError(400, f"This request has {len(parts)} images; at most "
                       f"{settings.max_images} are accepted (LLAMASERVE_MAX_IMAGES).",
                       param=f"messages[{i}].content[{j}]", code="too_many_images")
    limits = FetchLimits(
        timeout=settings.image_timeout,
        max_bytes=settings.image_max_bytes,
        max_redirects=settings.image_max_redirects,
        block_private=settings.block_private_urls,
    )

    async def one(i: int, j: int, url: str, client: httpx.AsyncClient) -> ImageInput:
        try:
            image = await load_image(url, limits, client)
        except ImageError as exc:
            raise APIError(400, f"messages[{i}].content[{j}]: {exc}.",
                           param=f"messages[{i}].content[{j}]", code="invalid_image") from exc
        return ImageInput(image.width, image.height, image.rgb)

    async with httpx.AsyncClient(timeout=limits.timeout) as client:
        return list(await asyncio.gather(*(one(i, j, url, client) for i, j, url in parts)))
