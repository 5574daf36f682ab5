"""The first executor: one request at a time per model, on llama-cpp-python's `Llama`.

Every llama.cpp call runs on the model's single worker thread, so requests are serialised by
construction and the event loop never blocks. Events cross back to the loop through an
asyncio queue; a consumer that stops listening (client disconnect) sets a flag the token loop
checks before each token.
"""

from __future__ import annotations

import asyncio
import codecs
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import llama_cpp
from llama_cpp import Llama

from .prompt import ChatPrompter
from .stops import StopMatcher
from .types import (
    EngineError,
    Event,
    Finished,
    GenerationRequest,
    PromptTooLongError,
    TextDelta,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoadOptions:
    n_ctx: int | None = None  # None: the model's training context, capped at 4096
    n_threads: int | None = None
    n_gpu_layers: int = 0
    chat_format: str | None = None
    verbose: bool = False


DEFAULT_CONTEXT_CAP = 4096


class SerialEngine:
    """Runs one loaded model; `generate` yields events for one request at a time."""

    def __init__(self, llama: Llama, prompter: ChatPrompter, path: Path) -> None:
        self.llama = llama
        self.prompter = prompter
        self.path = path
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="llama")
        self._eog = llama_cpp.llama_vocab_is_eog
        self._vocab = llama._model.vocab

    @classmethod
    def load(cls, path: Path, options: LoadOptions) -> SerialEngine:
        """Load the weights (blocking: call it from a worker thread)."""
        n_ctx = options.n_ctx
        if n_ctx is None:
            # Ask the header first: a 128k training context would allocate gigabytes of KV.
            probe = Llama(str(path), vocab_only=True, verbose=False)
            n_ctx = min(probe.n_ctx_train() or DEFAULT_CONTEXT_CAP, DEFAULT_CONTEXT_CAP)
            probe.close()
        llama = Llama(
            model_path=str(path),
            n_ctx=n_ctx,
            n_threads=options.n_threads,
            n_threads_batch=options.n_threads,
            n_gpu_layers=options.n_gpu_layers,
            verbose=options.verbose,
        )
        return cls(llama, ChatPrompter(llama, options.chat_format), path)

    @property
    def n_ctx(self) -> int:
        return self.llama.n_ctx()

    def close(self) -> None:
        self._worker.shutdown(wait=True, cancel_futures=True)
        self.llama.close()

    def count_tokens(self, text: str) -> int:
        return len(self.llama.tokenize(text.encode("utf-8"), add_bos=False, special=True))

    async def generate(self, request: GenerationRequest) -> AsyncIterator[Event]:
        """Events for one request: TextDelta*, then one Finished. Errors found before the first
        token (prompt too long, template rejected) are raised from the first `anext`."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Event | BaseException] = asyncio.Queue()
        cancelled = threading.Event()

        def emit(item: Event | BaseException) -> None:
            try:
                loop.call_soon_threadsafe(queue.put_nowait, item)
            except RuntimeError:  # the loop closed under us (shutdown); nobody is listening
                cancelled.set()

        def work() -> None:
            try:
                self._run(request, emit, cancelled)
            except BaseException as exc:  # noqa: BLE001 - handed to the consumer to raise
                emit(exc)

        self._worker.submit(work)
        try:
            while True:
                item = await queue.get()
                if isinstance(item, BaseException):
                    raise item
                yield item
                if isinstance(item, Finished):
                    return
        finally:
            cancelled.set()

    def _prompt_tokens(self, request: GenerationRequest) -> tuple[list[int], list[str]]:
        if request.messages is not None:
            rendered = self.prompter.render(request.messages)
            tokens = self.llama.tokenize(
                rendered.text.encode("utf-8"), add_bos=rendered.add_bos, special=True
            )
            return tokens, rendered.stop
        prompt = request.prompt
        if isinstance(prompt, list):
            n_vocab = self.llama.n_vocab()
            bad = next((t for t in prompt if not 0 <= t < n_vocab), None)
            if bad is not None:
                raise EngineError(
                    f"token id {bad} is outside the model's vocabulary (0..{n_vocab - 1})",
                    param="prompt",
                )
            return list(prompt), []
        text = prompt or ""
        add_bos = self.llama._model.add_bos_token()
        return self.llama.tokenize(text.encode("utf-8"), add_bos=add_bos, special=False), []

    def _check_fits(self, n_prompt: int, max_tokens: int | None) -> None:
        n_ctx = self.n_ctx
        if n_prompt == 0:
            raise EngineError("the prompt is empty", param="prompt")
        if n_prompt >= n_ctx:
            raise PromptTooLongError(
                f"This model's maximum context length is {n_ctx} tokens. However, your prompt "
                f"has {n_prompt} tokens, leaving no room for a completion. Shorten the prompt.",
                param="messages",
            )
        if max_tokens is not None and n_prompt + max_tokens > n_ctx:
            raise PromptTooLongError(
                f"This model's maximum context length is {n_ctx} tokens. However, you requested "
                f"{n_prompt + max_tokens} tokens ({n_prompt} in the prompt, {max_tokens} for the "
                "completion). Reduce the prompt or max_tokens.",
                param="max_tokens",
            )

    def _run(
        self,
        request: GenerationRequest,
        emit: Callable[[Event | BaseException], None],
        cancelled: threading.Event,
    ) -> None:
        if cancelled.is_set():  # the client left while queued
            return
        llama = self.llama
        tokens, template_stops = self._prompt_tokens(request)
        self._check_fits(len(tokens), request.max_tokens)
        limit = self.n_ctx - len(tokens)
        if request.max_tokens is not None:
            limit = min(limit, request.max_tokens)

        sampling = request.sampling
        llama.set_seed(sampling.seed if sampling.seed is not None else llama_cpp.LLAMA_DEFAULT_SEED)
        stops = StopMatcher([*request.stop, *template_stops])
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        started = time.perf_counter()
        generated = 0
        reason = "length"
        generator = llama.generate(
            tokens,
            temp=sampling.temperature,
            top_p=sampling.top_p,
            top_k=sampling.top_k,
            min_p=sampling.min_p,
            repeat_penalty=sampling.repeat_penalty,
            frequency_penalty=sampling.frequency_penalty,
            presence_penalty=sampling.presence_penalty,
        )
        try:
            for token in generator:
                if cancelled.is_set():
                    logger.info("generation cancelled after %d tokens", generated)
                    return
                if self._eog(self._vocab, token):
                    reason = "stop"
                    break
                generated += 1
                text = stops.feed(decoder.decode(llama.detokenize([token])))
                if text:
                    emit(TextDelta(text))
                if stops.stopped:
                    reason = "stop"
                    break
                if generated >= limit:
                    break
        finally:
            generator.close()
        tail = stops.feed(decoder.decode(b"", final=True)) + stops.flush()
        if tail:
            emit(TextDelta(tail))
        elapsed = time.perf_counter() - started
        logger.debug("%d prompt + %d completion tokens in %.2fs", len(tokens), generated, elapsed)
        emit(Finished(reason=reason, prompt_tokens=len(tokens), completion_tokens=generated))
