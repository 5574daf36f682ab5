"""What chat and text completions share: request fields → engine request, opening a
generation on a resident model, and Server-Sent Events framing."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.responses import StreamingResponse

from .. import __version__
from ..engine import Event, Finished, GenerationRequest, SamplingParams
from ..models.manager import ModelError, ModelManager, ResidentModel
from ..settings import parse_duration
from .errors import APIError, api_error, parse_json, validation_error
from .schemas import PromptTokensDetails, Usage, _Sampling

SYSTEM_FINGERPRINT = f"fp_llamaserve_{__version__}"
RequestT = TypeVar("RequestT", bound=BaseModel)
T = TypeVar("T")


def parse_keep_alive(body: dict[str, Any]) -> float | None:
    value = body.get("keep_alive")
    if value is None:
        return None
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise APIError(400, str(exc), param="keep_alive", code="invalid_value") from exc


async def parse_request(request: Request, schema: type[RequestT]) -> RequestT:
    body = parse_json(await request.body())
    if not isinstance(body, dict):
        raise APIError(400, "The request body must be a JSON object.", code="invalid_json")
    # Ollama's `keep_alive`, read by open_generation when it borrows the model
    request.scope.setdefault("state", {})["keep_alive"] = parse_keep_alive(body)
    try:
        return schema.model_validate(body)
    except ValidationError as exc:
        raise validation_error(exc) from exc


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


def now() -> int:
    return int(time.time())


def sampling_params(body: _Sampling, model: ResidentModel, choice: int = 0) -> SamplingParams:
    """Request fields, else the catalog's defaults for the model, else OpenAI's defaults.

    Choice i of a request with a seed uses seed + i, so n choices differ from each other
    while the whole answer stays reproducible.
    """
    defaults = model.spec.defaults
    base = SamplingParams()

    def pick(name: str) -> Any:
        value = getattr(body, name, None)
        if value is None:
            value = getattr(defaults, name, None)
        return getattr(base, name) if value is None else value

    assert model.engine is not None
    return SamplingParams(
        temperature=pick("temperature"),
        top_p=pick("top_p"),
        top_k=pick("top_k"),
        min_p=pick("min_p"),
        typical_p=pick("typical_p"),
        repeat_penalty=pick("repeat_penalty"),
        frequency_penalty=pick("frequency_penalty"),
        presence_penalty=pick("presence_penalty"),
        seed=None if body.seed is None else body.seed + choice,
        mirostat_mode=pick("mirostat_mode"),
        mirostat_tau=pick("mirostat_tau"),
        mirostat_eta=pick("mirostat_eta"),
        logit_bias=token_bias(body.logit_bias, model.engine.n_vocab),
    )


def token_bias(bias: dict[str, float] | None, n_vocab: int) -> dict[int, float]:
    """OpenAI's logit_bias (token id strings → -100..100) as token ids, checked against the
    vocabulary. -100 bans a token: llama.cpp gets -inf, as a bias of -100 may not suffice."""
    result: dict[int, float] = {}
    for key, value in (bias or {}).items():
        try:
            token = int(key)
        except ValueError:
            token = -1
        if not 0 <= token < n_vocab:
            raise APIError(
                400,
                f"Invalid key in 'logit_bias': '{key}' is not a token id of this model "
                f"(0..{n_vocab - 1}).",
                param="logit_bias",
                code="invalid_value",
            )
        result[token] = float("-inf") if value <= -100 else float(value)
    return result


def usage_of(finished: list[Finished]) -> Usage:
    """Usage over every generation of a request (all choices, all prompts)."""
    prompt = sum(f.prompt_tokens for f in finished)
    completion = sum(f.completion_tokens for f in finished)
    cached = PromptTokensDetails(cached_tokens=sum(f.cached_tokens for f in finished))
    return Usage(prompt_tokens=prompt, completion_tokens=completion,
                 total_tokens=prompt + completion, prompt_tokens_details=cached)


def stop_list(stop: str | list[str] | None) -> list[str]:
    if stop is None:
        return []
    return [stop] if isinstance(stop, str) else list(stop)


async def open_generation(
    request: Request, model_name: str, build: Any
) -> tuple[ResidentModel, AsyncIterator[Event]]:
    """Borrow the model and start generating; errors that come before the first event (an
    unknown model, a prompt too long) are raised here, before any response is sent.

    `build(model) -> GenerationRequest` makes the engine request once the model is known.
    The returned iterator holds the model until it is exhausted or closed, and records the
    request's tokens and time to first token for /metrics and the access log.
    """
    manager: ModelManager = request.app.state.manager
    metrics = request.app.state.metrics
    timeout = request.app.state.settings.request_timeout
    started = time.monotonic()
    stack = AsyncExitStack()
    try:
        keep_alive = request.scope["state"].get("keep_alive")
        model = await stack.enter_async_context(manager.use(model_name, keep_alive))
    except ModelError as exc:
        # as an APIError: a later choice of a stream reports it in-band, as a handler's errors
        raise api_error(exc) from exc
    try:
        generation: GenerationRequest = build(model)
        generation.deadline = started + timeout if timeout else None
        assert model.engine is not None
        events = model.engine.generate(generation)
        first = await anext(events)
    except BaseException:
        await stack.aclose()
        raise
    model_id = model.spec.id
    metrics.ttft.labels(model_id).observe(time.monotonic() - started)
    # read by the access log once the response is done
    usage = request.scope.setdefault("state", {}).setdefault("usage", {"model": model_name})

    async def held() -> AsyncIterator[Event]:
        try:
            yield first
            if isinstance(first, Finished):
                record(first)
            async for event in events:
                if isinstance(event, Finished):
                    record(event)
                yield event
        finally:
            await events.aclose()
            await stack.aclose()

    def record(finished: Finished) -> None:
        metrics.prompt_tokens.labels(model_id).inc(finished.prompt_tokens)
        metrics.generated_tokens.labels(model_id).inc(finished.completion_tokens)
        usage["prompt_tokens"] = usage.get("prompt_tokens", 0) + finished.prompt_tokens
        usage["completion_tokens"] = usage.get("completion_tokens", 0) + \
            finished.completion_tokens

    return model, held()


async def merged(streams: list[AsyncIterator[T]]) -> AsyncIterator[T]:
    """The items of several async iterators as they come, e.g. the choices of one request,
    which the engine decodes together. An error in any of them is raised here; closing this
    closes them all (their generations stop)."""
    if len(streams) == 1:
        async for item in streams[0]:
            yield item
        return
    queue: asyncio.Queue[tuple[int, Any]] = asyncio.Queue()

    async def pump(stream: AsyncIterator[T]) -> None:
        try:
            async for item in stream:
                await queue.put((0, item))
        except Exception as exc:  # noqa: BLE001 - re-raised by the consumer
            await queue.put((1, exc))
        await queue.put((2, None))

    tasks = [asyncio.create_task(pump(stream)) for stream in streams]
    try:
        running = len(tasks)
        while running:
            kind, item = await queue.get()
            if kind == 0:
                yield item
            elif kind == 1:
                raise item
            else:
                running -= 1
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def sse_response(chunks: AsyncIterator[BaseModel | dict[str, Any]]) -> StreamingResponse:
    """Server-Sent Events: one `data:` frame per chunk (a model, or an in-band error body),
    then `data: [DONE]`."""

    async def frames() -> AsyncIterator[bytes]:
        async for chunk in chunks:
            if isinstance(chunk, BaseModel):
                payload = chunk.model_dump_json(exclude_unset=True)
            else:
                payload = json.dumps(chunk)
            yield f"data: {payload}\n\n".encode()
        yield b"data: [DONE]\n\n"

    return StreamingResponse(
        frames(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
