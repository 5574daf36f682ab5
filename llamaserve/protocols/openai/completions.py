"""POST /v1/completions: the OpenAI completions body → a core CompletionRequest, and engine
events → text_completion chunks or one answer, with OpenAI's legacy logprobs lists."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ...core.requests import CompletionRequest as CoreCompletionRequest
from ...core.run import start_completion, usage_of
from ...engine import Event, Finished, TextDelta
from ...engine.types import TokenLogprob
from ...errors import RequestError, is_known
from .errors import in_band_error
from .http import (
    SYSTEM_FINGERPRINT,
    keep_alive_of,
    new_id,
    now,
    parse_request,
    runtime,
    sampling_of,
    sse_response,
    stop_list,
    wire_usage,
)
from .schemas import (
    MAX_PROMPTS,
    Completion,
    CompletionChoice,
    CompletionLogprobs,
    CompletionRequest,
)

logger = logging.getLogger(__name__)

# Generations one request may ask for (prompts × best_of, or × n): every field's own maximum
# (2,048 prompts, n 128, best_of 20) alone, not their product. They run in waves of --parallel.
MAX_GENERATIONS = MAX_PROMPTS


def prompts_of(body: CompletionRequest) -> list[str | list[int]]:
    """The four prompt forms (a string, strings, token ids, lists of token ids) as a list of
    prompts, each with its own choices."""
    prompt = body.prompt
    if isinstance(prompt, str):
        return [prompt]
    if prompt and isinstance(prompt[0], int):
        return [prompt]  # type: ignore[list-item]
    if not prompt:
        raise RequestError(400, "'prompt' must not be an empty list.", param="prompt",
                       code="invalid_value")
    return list(prompt)  # type: ignore[arg-type]


@dataclass
class ChoiceText:
    """One choice being built: its text and, when asked, OpenAI's legacy logprobs lists."""

    with_logprobs: bool
    text: list[str] = field(default_factory=list)
    offset: int = 0  # characters of token text so far, for text_offset
    finished: Finished | None = None
    logprobs: CompletionLogprobs = field(default_factory=lambda: CompletionLogprobs(
        tokens=[], token_logprobs=[], top_logprobs=[], text_offset=[]))

    def add(self, event: TextDelta) -> CompletionLogprobs | None:
        """Record a delta; returns the logprobs of just this delta (for a stream chunk)."""
        self.text.append(event.text)
        if not self.with_logprobs or not event.logprobs:
            return None
        piece = CompletionLogprobs(tokens=[], token_logprobs=[], top_logprobs=[],
                                   text_offset=[])
        for entry in event.logprobs:
            _append(piece, entry, self.offset)
            _append(self.logprobs, entry, self.offset)
            self.offset += len(entry.token)
        return piece

    @property
    def mean_logprob(self) -> float:
        assert self.finished is not None
        return self.finished.logprob_sum / max(1, self.finished.completion_tokens)


def _append(target: CompletionLogprobs, entry: TokenLogprob, offset: int) -> None:
    target.tokens.append(entry.token)
    target.token_logprobs.append(entry.logprob)
    target.top_logprobs.append({text: lp for text, _, lp in entry.top} if entry.top or
                               entry.logprob is not None else None)
    target.text_offset.append(offset)


async def create_completion(request: Request) -> Response:
    body = await parse_request(request, CompletionRequest)
    if body.user:
        logger.info("completion for user %r on model %r", body.user, body.model)
    core = completion_request(body, keep_alive_of(request))
    runs = await start_completion(core, runtime(request))
    make = _maker(new_id("cmpl"), now(), body.model)
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return sse_response(_chunks(runs, core, body.logprobs is not None, include_usage, make))
    return JSONResponse(await _fold(runs, core, body.logprobs is not None, make))


def completion_request(body: CompletionRequest, keep_alive: float | None) -> CoreCompletionRequest:
    n = body.n or 1
    best_of = body.best_of or n
    if best_of < n:
        raise RequestError(400, "'best_of' must be at least 'n'.", param="best_of",
                           code="invalid_value")
    if best_of > n and body.stream:
        raise RequestError(400, "'best_of' greater than 'n' cannot be streamed: the best "
                           "choices are known only at the end.", param="best_of",
                           code="invalid_value")
    prompts = prompts_of(body)
    _check_generations(len(prompts), n, best_of)
    return CoreCompletionRequest(
        model=body.model,
        sampling=sampling_of(body),
        max_tokens=body.max_tokens,
        stop=stop_list(body.stop),
        n=n,
        grammar=body.grammar,
        cache_prompt=body.cache_prompt is not False,
        keep_alive=keep_alive,
        prompts=prompts,
        suffix=body.suffix,
        best_of=best_of,
        echo=bool(body.echo),
        # best_of ranks candidates by mean token logprob, so it needs them even if not returned
        logprobs=body.logprobs if body.logprobs is not None else (0 if best_of > n else None),
    )


def _check_generations(prompts: int, n: int, best_of: int) -> None:
    runs = prompts * best_of
    if runs <= MAX_GENERATIONS:
        return
    field = "best_of" if best_of > n else "n"
    raise RequestError(
        400,
        f"This request asks for {runs} generations ({prompts} prompts in 'prompt' × "
        f"'{field}' {best_of}), more than the {MAX_GENERATIONS} one request may ask for. Send "
        f"fewer prompts or a smaller '{field}', or split the request.",
        param=field, code="invalid_value")


def _maker(completion_id: str, created: int, model: str) -> Any:
    def make(choices: list[CompletionChoice], usage: Any = None) -> Completion:
        fields: dict[str, Any] = {"id": completion_id, "object": "text_completion",
                                  "created": created, "model": model,
                                  "system_fingerprint": SYSTEM_FINGERPRINT, "choices": choices}
        if usage is not None:
            fields["usage"] = usage
        return Completion(**fields)

    return make


async def _chunks(
    runs: AsyncIterator[tuple[int, Event]], core: CoreCompletionRequest, with_logprobs: bool,
    include_usage: bool, make: Any,
) -> AsyncIterator[Completion | dict[str, Any]]:
    done: list[Finished] = []
    # best_of == n here: every run is a choice
    texts = [ChoiceText(with_logprobs) for _ in range(len(core.prompts) * core.n)]
    try:
        async for run, event in runs:
            if isinstance(event, TextDelta):
                piece = texts[run].add(event)
                yield make([CompletionChoice(index=run, text=event.text, logprobs=piece,
                                             finish_reason=None)])
            else:
                done.append(event)
                yield make([CompletionChoice(index=run, text="", logprobs=None,
                                             finish_reason=event.reason)])
    except Exception as exc:
        if not is_known(exc):
            raise
        # Headers are gone: report in-band, as OpenAI does for mid-stream errors.
        yield in_band_error(exc)
        return
    if include_usage:
        yield make([], wire_usage(usage_of(done)))


async def _fold(
    runs: AsyncIterator[tuple[int, Event]], core: CoreCompletionRequest, with_logprobs: bool,
    make: Any,
) -> dict[str, Any]:
    candidates = core.best_of or core.n
    texts = [ChoiceText(with_logprobs) for _ in range(len(core.prompts) * candidates)]
    async for run, event in runs:
        if isinstance(event, TextDelta):
            texts[run].add(event)
        else:
            texts[run].finished = event
    choices: list[CompletionChoice] = []
    finished: list[Finished] = []
    for p in range(len(core.prompts)):
        ranked = texts[p * candidates : (p + 1) * candidates]
        finished.extend(c.finished for c in ranked if c.finished is not None)
        if candidates > core.n:
            ranked = sorted(ranked, key=lambda c: c.mean_logprob, reverse=True)[: core.n]
        for choice in ranked:
            assert choice.finished is not None
            choices.append(CompletionChoice(
                index=len(choices), text="".join(choice.text),
                logprobs=choice.logprobs if with_logprobs else None,
                finish_reason=choice.finished.reason,
            ))
    return make(choices, wire_usage(usage_of(finished))).model_dump()
