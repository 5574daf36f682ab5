"""POST /v1/completions."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ..engine import EngineError, Event, Finished, GenerationRequest, TextDelta
from ..engine.types import TokenLogprob
from ..models.manager import ResidentModel
from .errors import APIError, in_band_error
from .generation import (
    SYSTEM_FINGERPRINT,
    merged,
    new_id,
    now,
    open_generation,
    parse_request,
    sampling_params,
    sse_response,
    stop_list,
    usage_of,
)
from .schemas import Completion, CompletionChoice, CompletionLogprobs, CompletionRequest, Usage

logger = logging.getLogger(__name__)


def prompts_of(body: CompletionRequest) -> list[str | list[int]]:
    """The four prompt forms (a string, strings, token ids, lists of token ids) as a list of
    prompts, each with its own choices."""
    prompt = body.prompt
    if isinstance(prompt, str):
        return [prompt]
    if prompt and isinstance(prompt[0], int):
        return [prompt]  # type: ignore[list-item]
    if not prompt:
        raise APIError(400, "'prompt' must not be an empty list.", param="prompt",
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
    n = body.n or 1
    best_of = body.best_of or n
    if best_of < n:
        raise APIError(400, "'best_of' must be at least 'n'.", param="best_of",
                       code="invalid_value")
    if best_of > n and body.stream:
        raise APIError(400, "'best_of' greater than 'n' cannot be streamed: the best choices "
                       "are known only at the end.", param="best_of", code="invalid_value")
    prompts = prompts_of(body)
    # best_of ranks candidates by mean token logprob, so it needs them even if not returned
    engine_logprobs = body.logprobs if body.logprobs is not None else (
        0 if best_of > n else None)

    async def start(prompt: str | list[int], candidate: int) -> AsyncIterator[Event]:
        def build(model: ResidentModel) -> GenerationRequest:
            return GenerationRequest(
                prompt=prompt,
                suffix=body.suffix,
                max_tokens=body.max_tokens,
                stop=stop_list(body.stop),
                sampling=sampling_params(body, model, choice=candidate),
                grammar=body.grammar,
                logprobs=engine_logprobs,
                echo=bool(body.echo),
                cache_prompt=body.cache_prompt is not False,
            )

        _, events = await open_generation(request, body.model, build)
        return events

    first = await start(prompts[0], 0)  # errors before anything is sent become 4xx answers
    runs = [(p, prompt, c) for p, prompt in enumerate(prompts) for c in range(best_of)]

    async def tagged(run: int) -> AsyncIterator[tuple[int, Event]]:
        _, prompt, candidate = runs[run]
        async for event in first if run == 0 else await start(prompt, candidate):
            yield run, event

    def all_runs() -> AsyncIterator[tuple[int, Event]]:
        # every choice (and best_of candidate) is decoded together, events as they come
        return merged([tagged(run) for run in range(len(runs))])

    completion_id, created = new_id("cmpl"), now()

    def make(choices: list[CompletionChoice], usage: Usage | None = None) -> Completion:
        fields: dict[str, Any] = {"id": completion_id, "object": "text_completion",
                                  "created": created, "model": body.model,
                                  "system_fingerprint": SYSTEM_FINGERPRINT, "choices": choices}
        if usage is not None:
            fields["usage"] = usage
        return Completion(**fields)

    with_logprobs = body.logprobs is not None
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)

        async def chunks() -> AsyncIterator[Completion | dict[str, Any]]:
            done: list[Finished] = []
            # best_of == n here: every run is a choice
            texts = [ChoiceText(with_logprobs) for _ in runs]
            try:
                async for run, event in all_runs():
                    if isinstance(event, TextDelta):
                        piece = texts[run].add(event)
                        yield make([CompletionChoice(index=run, text=event.text,
                                                     logprobs=piece, finish_reason=None)])
                    else:
                        done.append(event)
                        yield make([CompletionChoice(index=run, text="", logprobs=None,
                                                     finish_reason=event.reason)])
            except (APIError, EngineError) as exc:
                # Headers are gone: report in-band, as OpenAI does for mid-stream errors.
                yield in_band_error(exc)
                return
            if include_usage:
                yield make([], usage_of(done))

        return sse_response(chunks())

    texts = [ChoiceText(with_logprobs) for _ in runs]
    async for run, event in all_runs():
        if isinstance(event, TextDelta):
            texts[run].add(event)
        else:
            texts[run].finished = event
    per_prompt: list[list[ChoiceText]] = [[] for _ in prompts]
    for run, (p, _, _) in enumerate(runs):
        per_prompt[p].append(texts[run])
    choices: list[CompletionChoice] = []
    finished: list[Finished] = []
    for candidates in per_prompt:
        finished.extend(c.finished for c in candidates if c.finished is not None)
        if best_of > n:
            candidates = sorted(candidates, key=lambda c: c.mean_logprob, reverse=True)[:n]
        for choice in candidates:
            assert choice.finished is not None
            choices.append(CompletionChoice(
                index=len(choices), text="".join(choice.text),
                logprobs=choice.logprobs if with_logprobs else None,
                finish_reason=choice.finished.reason,
            ))
    return JSONResponse(make(choices, usage_of(finished)).model_dump())

