"""Counting a chat request's prompt tokens without generating: the chat template, tools and
images rendered and tokenized exactly as `start_chat` would, so the count equals the
`prompt_tokens` of its answer."""

from __future__ import annotations

from ..engine import GenerationRequest
from ..errors import request_error
from ..models.errors import ModelError
from .plan import fetch_images, plan_chat, template_messages
from .requests import ChatRequest
from .run import Runtime


async def count_prompt_tokens(request: ChatRequest, runtime: Runtime) -> int:
    """The prompt tokens `request` would take on its model (loading the model if needed)."""
    plan = plan_chat(request)
    images = await fetch_images(request, runtime.manager.find(request.model), runtime.settings)
    try:
        async with runtime.manager.use(request.model, request.keep_alive) as model:
            assert model.engine is not None
            return await model.engine.count_tokens(GenerationRequest(
                messages=template_messages(request, model),
                tools=plan.tool_definitions(),
                images=images,
            ))
    except ModelError as exc:
        raise request_error(exc) from exc
