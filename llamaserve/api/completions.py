"""POST /v1/completions."""

from __future__ import annotations

from collections.abc import AsyncIterator

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ..engine import EngineError, Finished, GenerationRequest, TextDelta
from ..manager import ResidentModel
from .errors import APIError, in_band_error
from .generation import (
    SYSTEM_FINGERPRINT,
    new_id,
    now,
    open_generation,
    parse_request,
    reject_unsupported,
    sampling_params,
    sse_response,
    stop_list,
)
from .schemas import Completion, CompletionChoice, CompletionRequest, Usage


def prompts_of(body: CompletionRequest) -> list[str | list[int]]:
    """The four prompt forms (a string, strings, token ids, lists of token ids) as a list of
    prompts, one choice each."""
    prompt = body.prompt
    if isinstance(prompt, str):
        return [prompt]
    if prompt and isinstance(prompt[0], int):
        return [prompt]  # type: ignore[list-item]
    if not prompt:
        raise APIError(
            400, "'prompt' must not be an empty list.", param="prompt", code="invalid_value"
        )
    return list(prompt)  # type: ignore[arg-type]


async def create_completion(request: Request) -> Response:
    body = await parse_request(request, CompletionRequest)
    reject_unsupported(
        {
            "n": (body.n or 1) > 1,
            "best_of": (body.best_of or 1) > 1,
            "echo": body.echo,
            "logprobs": body.logprobs is not None,
            "logit_bias": body.logit_bias,
            "suffix": body.suffix is not None,
        }
    )
    prompts = prompts_of(body)
    manager = request.app.state.manager

    async def start(prompt: str | list[int]) -> AsyncIterator:
        def build(model: ResidentModel) -> GenerationRequest:
            return GenerationRequest(
                prompt=prompt,
                max_tokens=body.max_tokens,
                stop=stop_list(body.stop),
                sampling=sampling_params(body, model),
            )

        _, events = await open_generation(manager, body.model, build)
        return events

    completion_id, created = new_id("cmpl"), now()
    first_events = await start(prompts[0])

    def make(choices: list[CompletionChoice], usage: Usage | None = None) -> Completion:
        fields = {
            "id": completion_id,
            "created": created,
            "model": body.model,
            "system_fingerprint": SYSTEM_FINGERPRINT,
            "choices": choices,
            "object": "text_completion",
        }
        if usage is not None or not body.stream:
            fields["usage"] = usage
        return Completion(**fields)

    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)

        async def chunks() -> AsyncIterator[Completion | dict]:
            prompt_tokens = completion_tokens = 0
            for index, prompt in enumerate(prompts):
                try:
                    events = first_events if index == 0 else await start(prompt)
                except (APIError, EngineError) as exc:
                    # Headers are gone: report in-band, as OpenAI does for mid-stream errors.
                    yield in_band_error(exc)
                    return
                async for event in events:
                    if isinstance(event, TextDelta):
                        yield make(
                            [
                                CompletionChoice(
                                    index=index, text=event.text, logprobs=None, finish_reason=None
                                )
                            ]
                        )
                    else:
                        prompt_tokens += event.prompt_tokens
                        completion_tokens += event.completion_tokens
                        yield make(
                            [
                                CompletionChoice(
                                    index=index, text="", logprobs=None, finish_reason=event.reason
                                )
                            ]
                        )
            if include_usage:
                yield make(
                    [],
                    Usage(
                        prompt_tokens=prompt_tokens,
                        completion_tokens=completion_tokens,
                        total_tokens=prompt_tokens + completion_tokens,
                    ),
                )

        return sse_response(chunks())

    choices: list[CompletionChoice] = []
    prompt_tokens = completion_tokens = 0
    for index, prompt in enumerate(prompts):
        events = first_events if index == 0 else await start(prompt)
        parts: list[str] = []
        finished: Finished | None = None
        async for event in events:
            if isinstance(event, TextDelta):
                parts.append(event.text)
            else:
                finished = event
        assert finished is not None
        prompt_tokens += finished.prompt_tokens
        completion_tokens += finished.completion_tokens
        choices.append(
            CompletionChoice(
                index=index, text="".join(parts), logprobs=None, finish_reason=finished.reason
            )
        )
    usage = Usage(
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        total_tokens=prompt_tokens + completion_tokens,
    )
    return JSONResponse(make(choices, usage).model_dump())
