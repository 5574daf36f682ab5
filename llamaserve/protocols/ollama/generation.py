"""What /api/chat and /api/generate share: `options` and `format` → core fields, base64
images → core Images, and ChoiceDeltas → Ollama's NDJSON lines (stream) or one object (the
same lines folded), ending with the real counts and durations.

Durations are measured, in nanoseconds: `load_duration` is the wait for the model (its load
when it was not resident), `prompt_eval_duration` the time to the first generated token,
`eval_duration` the rest of the generation, `total_duration` the request from its first byte.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from ...core.choices import ChoiceDelta
from ...core.requests import ContextSize, Image, ResponseFormat, Sampling
from ...core.run import Timings
from ...core.tool_calls import ParsedToolCall
from ...engine.types import TokenLogprob
from ...errors import RequestError, is_known
from ...models.manager import ModelManager
from .errors import in_band_error
from .http import nanoseconds, timestamp
from .schemas import Format, Options

logger = logging.getLogger(__name__)

# Options that are per server here (set on the command line) or not implemented: accepted,
# as Ollama accepts options a model does not use, and logged at debug level.
IGNORED_OPTIONS = ("numa", "num_batch", "num_gpu", "main_gpu", "low_vram", "f16_kv",
                   "logits_all", "vocab_only", "use_mmap", "use_mlock", "embedding_only",
                   "num_thread", "num_keep", "tfs_z", "repeat_last_n", "penalize_newline")

# -- the request -----------------------------------------------------------------------------


def sampling_of(options: Options) -> Sampling:
    seed = options.seed
    return Sampling(
        temperature=options.temperature, top_p=options.top_p, top_k=options.top_k,
        min_p=options.min_p, typical_p=options.typical_p,
        repeat_penalty=options.repeat_penalty, frequency_penalty=options.frequency_penalty,
        presence_penalty=options.presence_penalty,
        seed=None if seed is None or seed < 0 else seed,  # Ollama's -1: a random seed
        mirostat_mode=options.mirostat, mirostat_tau=options.mirostat_tau,
        mirostat_eta=options.mirostat_eta,
    )


def max_tokens_of(options: Options) -> int | None:
    """`num_predict`: -1 (or -2, or 0) generates until the model stops or the context is
    full, as in Ollama."""
    limit = options.num_predict
    return limit if limit is not None and limit > 0 else None


def stops_of(options: Options) -> list[str]:
    stop = options.stop
    if stop is None:
        return []
    return [stop] if isinstance(stop, str) else [s for s in stop if s]


def context_of(options: Options) -> ContextSize | None:
    ignored = [name for name in IGNORED_OPTIONS if getattr(options, name) is not None]
    ignored += list(options.model_extra or {})
    if ignored:
        logger.debug("options accepted and ignored: %s", ", ".join(ignored))
    if options.num_ctx is None:
        return None
    return ContextSize(options.num_ctx, "options.num_ctx")


def format_of(value: Format) -> ResponseFormat | None:
    if value == "json":
        return ResponseFormat("json_object", param="format")
    if isinstance(value, dict):
        return ResponseFormat("json_schema", value, param="format")
    return None


def logprobs_of(logprobs: bool | None, top: int | None) -> int | None:
    return (top or 0) if logprobs else None


_MAGIC: list[tuple[bytes, int, str]] = [  # prefix, offset, media type
    (b"\x89PNG\r\n\x1a\n", 0, "image/png"), (b"\xff\xd8\xff", 0, "image/jpeg"),
    (b"GIF87a", 0, "image/gif"), (b"GIF89a", 0, "image/gif"), (b"WEBP", 8, "image/webp"),
]


def image_of(data: str, param: str) -> Image:
    """A base64 image as Ollama's clients send it, as a data URI of the type its first bytes
    show (a data URI is taken as it is)."""
    if data.startswith("data:"):
        return Image(data, param)
    head = "".join(data[:64].split())[:16]
    try:
        start = base64.b64decode(head + "=" * (-len(head) % 4))
    except (binascii.Error, ValueError):
        start = b""
    for magic, offset, media_type in _MAGIC:
        if start[offset:offset + len(magic)] == magic and (offset == 0 or start[:4] == b"RIFF"):
            return Image(f"data:{media_type};base64,{data}", param)
    raise RequestError(400, f"{param} is not a base64 PNG, JPEG, WebP or GIF image",
                       param=param, code="invalid_image")


def arguments_json(arguments: dict[str, Any] | str, param: str) -> str:
    """A tool call's arguments (an object, as Ollama sends them) as JSON text."""
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments) if arguments.strip() else {}
        except json.JSONDecodeError:
            arguments = None  # type: ignore[assignment]
        if not isinstance(arguments, dict):
            raise RequestError(400, f"'{param}' must be a JSON object", param=param)
    return json.dumps(arguments, ensure_ascii=False)


async def load_or_unload(manager: ModelManager, model_id: str, keep_alive: float | None) -> str:
    """A request with nothing to generate: load the model ("load"), or with keep_alive 0
    unload it now ("unload"), as Ollama's clients preload and free models."""
    model = manager.find(model_id)
    if keep_alive == 0:
        if model is not None and model.loaded:
            async with manager.use(model_id, 0):
                pass
            await manager.unload_expired()
        return "unload"
    async with manager.use(model_id, keep_alive):
        pass
    return "load"


# -- the answer ------------------------------------------------------------------------------

Shape = Callable[[str, list[ParsedToolCall] | None], dict[str, Any]]  # text → message/response


def wire_tool_calls(calls: list[ParsedToolCall]) -> list[dict[str, Any]]:
    return [{"id": f"call_{k}", "function": {"index": k, "name": call.name,
                                               "arguments": json.loads(call.arguments)}}
            for k, call in enumerate(calls)]


def wire_logprobs(entries: list[TokenLogprob]) -> list[dict[str, Any]]:
    return [{"token": entry.token, "logprob": entry.logprob or 0.0, "bytes": list(entry.bytes),
             "top_logprobs": [{"token": text, "logprob": logprob, "bytes": list(raw)}
                              for text, raw, logprob in entry.top]}
            for entry in entries]


def final_fields(delta: ChoiceDelta, started: float, state: dict[str, Any]) -> dict[str, Any]:
    """`done_reason` and the counts and durations of the line that ends an answer."""
    now = time.monotonic()
    timings: Timings | None = state.get("timings")
    finished = delta.finished
    fields: dict[str, Any] = {
        "done_reason": "length" if delta.finish_reason == "length" else "stop",
        "done": True,
        "total_duration": nanoseconds(now - started),
    }
    if timings is not None:
        fields["load_duration"] = nanoseconds(timings.loaded - timings.started)
    if finished is not None:
        fields["prompt_eval_count"] = finished.prompt_tokens
    if timings is not None:
        fields["prompt_eval_duration"] = nanoseconds(timings.first_event - timings.loaded)
    if finished is not None:
        fields["eval_count"] = finished.completion_tokens
    if timings is not None:
        fields["eval_duration"] = nanoseconds(now - timings.first_event)
    return fields


async def stream_lines(
    deltas: AsyncIterator[ChoiceDelta], model: str, shape: Shape, started: float,
    state: dict[str, Any],
) -> AsyncIterator[dict[str, Any]]:
    """One line per piece of text (or tool calls), then the `done` line; an error after the
    200 was sent ends the stream with an `{"error": ...}` line."""

    def line(text: str, calls: list[ParsedToolCall] | None = None) -> dict[str, Any]:
        return {"model": model, "created_at": timestamp(), **shape(text, calls)}

    try:
        async for delta in deltas:
            if delta.content or delta.logprobs:
                piece = line(delta.content or "")
                piece["done"] = False
                if delta.logprobs:
                    piece["logprobs"] = wire_logprobs(delta.logprobs)
                yield piece
            if delta.tool_calls:
                yield {**line("", delta.tool_calls), "done": False}
            if delta.finished is not None:
                yield {**line(""), **final_fields(delta, started, state)}
    except Exception as exc:
        if not is_known(exc):
            raise
        yield in_band_error(exc)


async def folded(
    deltas: AsyncIterator[ChoiceDelta], model: str, shape: Shape, started: float,
    state: dict[str, Any],
) -> dict[str, Any]:
    """The whole answer as one object: the stream's pieces joined."""
    texts: list[str] = []
    calls: list[ParsedToolCall] = []
    logprobs: list[TokenLogprob] = []
    last = ChoiceDelta(0, finish_reason="stop")
    async for delta in deltas:
        texts.append(delta.content or "")
        calls.extend(delta.tool_calls or [])
        logprobs.extend(delta.logprobs or [])
        if delta.finished is not None:
            last = delta
    answer = {"model": model, "created_at": timestamp(), **shape("".join(texts), calls or None),
              **final_fields(last, started, state)}
    if logprobs:
        answer["logprobs"] = wire_logprobs(logprobs)
    return answer
