"""Running a core request on a resident model: borrowing the model, building the engine
request, starting every choice, and the events as they come.

`start_chat` and `start_completion` raise what goes wrong before the first token (an unknown
model, a prompt too long, a bad schema), so a protocol can still answer with a plain error;
after that, errors come out of the iterator and the protocol reports them in its stream.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any, TypeVar

from ..engine import Event, Finished, GenerationRequest, SamplingParams
from ..errors import RequestError, request_error
from ..models.errors import ModelError
from ..models.manager import ModelManager, ResidentModel
from ..observability import Metrics
from ..settings import Settings
from .choices import ChoiceDelta, shape_choice
from .plan import ChatPlan, fetch_images, plan_chat, template_messages
from .reasoning import ReasoningFormat, model_format
from .requests import ChatRequest, CompletionRequest, GenerationOptions, Sampling

T = TypeVar("T")


@dataclass
class Runtime:
    """What running a request needs of the server: its models, settings and metrics, and the
    request's own state, where its model and token counts are kept for the access log."""

    manager: ModelManager
    settings: Settings
    metrics: Metrics
    state: dict[str, Any]


@dataclass(frozen=True)
class Timings:
    """When a request's first generation began, got its model (loaded if it had to be) and
    produced its first event: time.monotonic() readings, kept in `Runtime.state["timings"]`
    for protocols that report durations (Ollama's load/prompt/eval durations)."""

    started: float
    loaded: float
    first_event: float


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int  # prompt tokens whose KV cells came from the prefix cache

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


def usage_of(finished: list[Finished]) -> Usage:
    """Usage over every generation of a request (all choices, all prompts)."""
    return Usage(sum(f.prompt_tokens for f in finished),
                 sum(f.completion_tokens for f in finished),
                 sum(f.cached_tokens for f in finished))


def sampling_params(sampling: Sampling, model: ResidentModel, choice: int = 0) -> SamplingParams:
    """Request fields, else the catalog's defaults for the model, else OpenAI's defaults.

    Choice i of a request with a seed uses seed + i, so n choices differ from each other
    while the whole answer stays reproducible.
    """
    defaults = model.spec.defaults
    base = SamplingParams()

    def pick(name: str) -> Any:
        value = getattr(sampling, name, None)
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
        seed=None if sampling.seed is None else sampling.seed + choice,
        mirostat_mode=pick("mirostat_mode"),
        mirostat_tau=pick("mirostat_tau"),
        mirostat_eta=pick("mirostat_eta"),
        logit_bias=token_bias(sampling.logit_bias, model.engine.n_vocab),
    )


def token_bias(bias: dict[str, float] | None, n_vocab: int) -> dict[int, float]:
    """A logit bias (token id strings → -100..100) as token ids, checked against the
    vocabulary. -100 bans a token: llama.cpp gets -inf, as a bias of -100 may not suffice."""
    result: dict[int, float] = {}
    for key, value in (bias or {}).items():
        try:
            token = int(key)
        except ValueError:
            token = -1
        if not 0 <= token < n_vocab:
            raise RequestError(
                400,
                f"Invalid key in 'logit_bias': '{key}' is not a token id of this model "
                f"(0..{n_vocab - 1}).",
                param="logit_bias",
                code="invalid_value",
            )
        result[token] = float("-inf") if value <= -100 else float(value)
    return result


async def open_generation(
    runtime: Runtime, options: GenerationOptions,
    build: Callable[[ResidentModel], GenerationRequest],
) -> AsyncIterator[Event]:
    """Borrow the model and start generating; errors that come before the first event (an
    unknown model, a prompt too long) are raised here, before any response is sent.

    `build(model)` makes the engine request once the model is known. The returned iterator
    holds the model until it is exhausted or closed, and records the request's tokens and
    time to first token for /metrics and the access log.
    """
    metrics, timeout = runtime.metrics, runtime.settings.request_timeout
    started = time.monotonic()
    stack = AsyncExitStack()
    try:
        model = await stack.enter_async_context(
            runtime.manager.use(options.model, options.keep_alive))
    except ModelError as exc:
        # as a RequestError: a later choice of a stream reports it in-band, as other errors
        raise request_error(exc) from exc
    loaded = time.monotonic()
    try:
        _check_context(options, model)
        generation = build(model)
        generation.deadline = started + timeout if timeout else None
        assert model.engine is not None
        events = model.engine.generate(generation)
        first = await anext(events)
    except BaseException:
        await stack.aclose()
        raise
    runtime.state.setdefault("timings", Timings(started, loaded, time.monotonic()))
    model_id = model.spec.id
    metrics.ttft.labels(model_id).observe(time.monotonic() - started)
    accounting = runtime.state.setdefault("usage", {"model": options.model})

    def record(finished: Finished) -> None:
        metrics.prompt_tokens.labels(model_id).inc(finished.prompt_tokens)
        metrics.generated_tokens.labels(model_id).inc(finished.completion_tokens)
        accounting["prompt_tokens"] = accounting.get("prompt_tokens", 0) + \
            finished.prompt_tokens
        accounting["completion_tokens"] = accounting.get("completion_tokens", 0) + \
            finished.completion_tokens

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

    return held()


def _check_context(options: GenerationOptions, model: ResidentModel) -> None:
    """A client that needs a larger context than the model was loaded with gets a 400 saying
    how to get one, rather than a shorter context than it asked for."""
    wanted, loaded = options.context, model.options.n_ctx
    if wanted is not None and loaded is not None and wanted.tokens > loaded:
        raise RequestError(
            400,
            f"'{wanted.param}' is {wanted.tokens} tokens, but model '{model.spec.id}' was loaded "
            f"with a context of {loaded} tokens per request: ask for {loaded} or fewer, or "
            f"restart the server with --ctx {wanted.tokens}.",
            param=wanted.param, code="context_too_large",
        )


async def merged(streams: list[AsyncIterator[T]], window: int | None = None) -> AsyncIterator[T]:
    """The items of several async iterators as they come, e.g. the choices of one request,
    which the engine decodes together. At most `window` are iterated at once (in waves: the
    next starts as one ends), so a request with more choices than the model has sequences
    neither fills its queue nor starts them all on the event loop at once. An error in any of
    them is raised here; closing this closes them all (their generations stop)."""
    if len(streams) == 1:
        async for item in streams[0]:
            yield item
        return
    queue: asyncio.Queue[tuple[int, Any]] = asyncio.Queue()
    gate = asyncio.Semaphore(window or len(streams))

    async def pump(stream: AsyncIterator[T]) -> None:
        try:
            async with gate:
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


async def _started(
    starts: list[Callable[[], Any]], window: int,
) -> AsyncIterator[Any]:
    """Start the first stream now (its errors raise to the caller, before any response),
    the others as the merged iterator runs, `window` at a time; those running decode
    together."""
    first = await starts[0]()

    def stream(index: int) -> AsyncIterator[Any]:
        async def run() -> AsyncIterator[Any]:
            async for item in first if index == 0 else await starts[index]():
                yield item
        return run()

    return merged([stream(index) for index in range(len(starts))], window)


async def start_chat(
    request: ChatRequest, runtime: Runtime
) -> tuple[ChatPlan, AsyncIterator[ChoiceDelta]]:
    """Plan the request, fetch its images, and start its n choices: their ChoiceDeltas,
    interleaved as they come."""
    plan = plan_chat(request)
    images = await fetch_images(request, runtime.manager.find(request.model), runtime.settings)

    # False: the template's switch where it has one (Qwen3's enable_thinking); others ignore it
    template_options = {"enable_thinking": False} if request.thinking is False else {}

    async def start(index: int) -> AsyncIterator[ChoiceDelta]:
        reasoning: list[ReasoningFormat | None] = [None]

        def build(model: ResidentModel) -> GenerationRequest:
            if (request.separate_reasoning and runtime.settings.reasoning_format == "auto"
                    and model.engine is not None):
                reasoning[0] = model_format(model.engine)
            return GenerationRequest(
                messages=template_messages(request, model),
                tools=plan.tool_definitions(),
                template_options=template_options,
                max_tokens=request.max_tokens or model.spec.defaults.max_tokens,
                stop=request.stop,
                sampling=sampling_params(request.sampling, model, choice=index),
                grammar=plan.grammar,
                json_schema=plan.json_schema,
                logprobs=request.logprobs,
                images=images,
                cache_prompt=request.cache_prompt,
                fit_context=request.fit_context,
            )

        events = await open_generation(runtime, request, build)
        return shape_choice(events, index, plan.mode, plan.tool_names, reasoning[0])

    starts = [lambda index=index: start(index) for index in range(request.n)]
    return plan, await _started(starts, runtime.settings.parallel)


async def start_completion(
    request: CompletionRequest, runtime: Runtime
) -> AsyncIterator[tuple[int, Event]]:
    """Start every run — each prompt's `best_of` (else `n`) candidates — and yield (run,
    event) as they come; run r is prompt r // candidates, candidate r % candidates."""
    candidates = request.best_of or request.n

    async def start(run: int) -> AsyncIterator[tuple[int, Event]]:
        prompt, candidate = request.prompts[run // candidates], run % candidates

        def build(model: ResidentModel) -> GenerationRequest:
            return GenerationRequest(
                prompt=prompt,
                suffix=request.suffix,
                max_tokens=request.max_tokens,
                stop=request.stop,
                sampling=sampling_params(request.sampling, model, choice=candidate),
                grammar=request.grammar,
                logprobs=request.logprobs,
                echo=request.echo,
                cache_prompt=request.cache_prompt,
            )

        events = await open_generation(runtime, request, build)

        async def tagged() -> AsyncIterator[tuple[int, Event]]:
            async for event in events:
                yield run, event

        return tagged()

    runs = len(request.prompts) * candidates
    return await _started([lambda run=run: start(run) for run in range(runs)],
                          runtime.settings.parallel)
