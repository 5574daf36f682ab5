"""POST /api/generate: a prompt → a one-turn chat with `system` (the model's chat template),
or with `raw` (or `suffix`, fill-in-the-middle) the prompt as it is → a core completion;
answered as NDJSON lines with `response` text, or one object.

`template` is refused (400): it is a Go template, which llamaserve cannot render; render the
prompt yourself and send it with `raw: true`. `context` (deprecated) is accepted and ignored.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ...core.choices import ChoiceDelta
from ...core.requests import ChatRequest, CompletionRequest, Image, Message
from ...core.run import start_chat, start_completion
from ...core.tool_calls import ParsedToolCall
from ...engine import Event, TextDelta
from ...errors import RequestError
from .errors import ollama_errors
from .generation import (
    context_of,
    folded,
    format_of,
    image_of,
    load_or_unload,
    logprobs_of,
    max_tokens_of,
    sampling_of,
    stops_of,
    stream_lines,
)
from .http import keep_alive_seconds, manager_of, ndjson_response, parse_body, runtime, timestamp
from .names import resolve
from .schemas import GenerateBody, Options


@ollama_errors
async def generate(request: Request) -> Response:
    started = time.monotonic()
    body = await parse_body(request, GenerateBody)
    manager = manager_of(request)
    model = await resolve(manager, body.model)
    keep_alive = keep_alive_seconds(body.keep_alive)
    if body.template:
        raise RequestError(400, "'template' is not supported: llamaserve renders prompts with "
                           "the model's own chat template, not Go templates. Render the prompt "
                           "yourself and send it with \"raw\": true.", param="template")
    if not body.prompt:
        reason = await load_or_unload(manager, model.spec.id, keep_alive)
        return JSONResponse({"model": body.model, "created_at": timestamp(), "response": "",
                             "done_reason": reason, "done": True})
    work = runtime(request)
    if body.raw or body.suffix is not None:
        events = await start_completion(completion_request(body, model.spec.id, keep_alive), work)
        deltas = _as_deltas(events)
    else:
        _, deltas = await start_chat(chat_request(body, model.spec.id, keep_alive), work)
    if body.stream is False:
        return JSONResponse(await folded(deltas, body.model, _response, started, work.state))
    return ndjson_response(stream_lines(deltas, body.model, _response, started, work.state))


def chat_request(body: GenerateBody, model_id: str, keep_alive: float | None) -> ChatRequest:
    options = body.options or Options()
    user: list[str | Image] = [image_of(data, f"images[{j}]")
                               for j, data in enumerate(body.images or [])]
    user.append(body.prompt or "")
    messages = [Message("system", [body.system])] if body.system else []
    return ChatRequest(
        model=model_id, sampling=sampling_of(options), max_tokens=max_tokens_of(options),
        stop=stops_of(options), keep_alive=keep_alive, context=context_of(options),
        messages=[*messages, Message("user", user)],
        response_format=format_of(body.format),
        logprobs=logprobs_of(body.logprobs, body.top_logprobs),
    )


def completion_request(body: GenerateBody, model_id: str, keep_alive: float | None
                       ) -> CompletionRequest:
    """The prompt as it is (`raw`), or between `suffix` (fill-in-the-middle): no template,
    so nothing that needs one."""
    why = "'raw': true" if body.raw else "'suffix'"
    for field, given in (("images", body.images), ("format", body.format),
                         ("system", body.system)):
        if given:
            raise RequestError(400, f"'{field}' cannot be used with {why}: the prompt goes to "
                               "the model as it is, without the chat template.", param=field)
    options = body.options or Options()
    return CompletionRequest(
        model=model_id, sampling=sampling_of(options), max_tokens=max_tokens_of(options),
        stop=stops_of(options), keep_alive=keep_alive, context=context_of(options),
        prompts=[body.prompt or ""], suffix=body.suffix,
        logprobs=logprobs_of(body.logprobs, body.top_logprobs),
    )


async def _as_deltas(events: AsyncIterator[tuple[int, Event]]) -> AsyncIterator[ChoiceDelta]:
    async for _, event in events:
        if isinstance(event, TextDelta):
            yield ChoiceDelta(0, content=event.text, logprobs=event.logprobs)
        else:
            yield ChoiceDelta(0, finish_reason=event.reason, finished=event)


def _response(text: str, calls: list[ParsedToolCall] | None) -> dict[str, Any]:
    return {"response": text}
