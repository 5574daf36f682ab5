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
import numpy as np
from llama_cpp import Llama
from llama_cpp._internals import LlamaSampler

from .prompt import ChatPrompter
from .sampling import LogprobReader, build_sampler
from .stops import StopMatcher
from .types import (
    EngineError,
    Event,
    Finished,
    GenerationRequest,
    PromptTooLongError,
    TextDelta,
    TokenLogprob,
)
from .vision import MediaPrompt, VisionProjector, choose_handler, handler_format

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoadOptions:
    n_ctx: int | None = None  # None: the model's training context, capped at 4096
    n_threads: int | None = None
    n_gpu_layers: int = 0
    chat_format: str | None = None
    chat_handler: str | None = None  # multimodal prompt format, see vision.HANDLERS
    verbose: bool = False


DEFAULT_CONTEXT_CAP = 4096


class SerialEngine:
    """Runs one loaded model; `generate` yields events for one request at a time."""

    def __init__(
        self,
        llama: Llama,
        prompter: ChatPrompter,
        path: Path,
        vision: VisionProjector | None = None,
    ) -> None:
        self.llama = llama
        self.prompter = prompter
        self.path = path
        self.vision = vision  # None: the model does not accept images
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="llama")
        self._eog = llama_cpp.llama_vocab_is_eog
        self._vocab = llama._model.vocab

    @classmethod
    def load(
        cls, path: Path, options: LoadOptions, projector: Path | None = None
    ) -> SerialEngine:
        """Load the weights, and the vision projector when given (blocking: call it from a
        worker thread)."""
        n_ctx = options.n_ctx
        if n_ctx is None:
            # Ask the header first: a 128k training context would allocate gigabytes of KV.
            probe = Llama(str(path), vocab_only=True, verbose=False)
            n_ctx = min(probe._model.n_ctx_train() or DEFAULT_CONTEXT_CAP, DEFAULT_CONTEXT_CAP)
            probe.close()
        llama = Llama(
            model_path=str(path),
            n_ctx=n_ctx,
            n_threads=options.n_threads,
            n_threads_batch=options.n_threads,
            n_gpu_layers=options.n_gpu_layers,
            verbose=options.verbose,
        )
        if projector is None:
            return cls(llama, ChatPrompter(llama, options.chat_format), path)
        try:
            vision = VisionProjector(projector, llama, options.n_gpu_layers != 0, options.verbose)
            handler = choose_handler(options.chat_handler, llama, projector)
        except BaseException:
            llama.close()
            raise
        template, default_system = handler_format(handler)
        if options.chat_format is not None:
            template, default_system = None, None
        prompter = ChatPrompter(llama, options.chat_format, template, default_system)
        logger.info("vision projector %s, prompts in %s (handler %s)", projector,
                    prompter.source, handler)
        return cls(llama, prompter, path, vision)

    @property
    def n_ctx(self) -> int:
        return self.llama.n_ctx()

    @property
    def n_vocab(self) -> int:
        return self.llama.n_vocab()

    @property
    def memory_bytes(self) -> int:
        """Weights plus the context's state (KV cache, logits): what staying resident costs."""
        return self.llama._model.size() + llama_cpp.llama_state_get_size(self.llama._ctx.ctx)

    def close(self) -> None:
        self._worker.shutdown(wait=True, cancel_futures=True)
        self.llama.close()

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

    def _prompt_tokens(
        self, request: GenerationRequest
    ) -> tuple[list[int], list[str], MediaPrompt | None]:
        llama = self.llama
        if request.messages is not None:
            rendered = self.prompter.render(request.messages, request.tools)
            if request.images:
                if self.vision is None:
                    raise EngineError("this model does not accept images", param="messages")
                media = self.vision.tokenize(rendered.text, rendered.add_bos, request.images)
                return media.tokens, rendered.stop, media
            tokens = llama.tokenize(
                rendered.text.encode("utf-8"), add_bos=rendered.add_bos, special=True
            )
            return tokens, rendered.stop, None
        prompt = request.prompt
        if isinstance(prompt, list):
            n_vocab = llama.n_vocab()
            bad = next((t for t in prompt if not 0 <= t < n_vocab), None)
            if bad is not None:
                raise EngineError(
                    f"token id {bad} is outside the model's vocabulary (0..{n_vocab - 1})",
                    param="prompt",
                )
            tokens = list(prompt)
        else:
            add_bos = llama._model.add_bos_token()
            tokens = llama.tokenize((prompt or "").encode("utf-8"), add_bos=add_bos, special=False)
        if request.suffix is not None:
            tokens = self._infill(tokens, request.suffix)
        return tokens, [], None

    def _infill(self, prefix: list[int], suffix: str) -> list[int]:
        """Fill-in-the-middle prompt in llama.cpp's prefix-suffix-middle order."""
        vocab = self.llama._model.vocab
        fim = [llama_cpp.llama_vocab_fim_pre(vocab), llama_cpp.llama_vocab_fim_suf(vocab),
               llama_cpp.llama_vocab_fim_mid(vocab)]
        if -1 in fim:
            raise EngineError(
                "this model has no fill-in-the-middle tokens, so 'suffix' cannot be used",
                param="suffix",
            )
        pre, suf, mid = fim
        suffix_tokens = self.llama.tokenize(suffix.encode("utf-8"), add_bos=False, special=False)
        return [pre, *prefix, suf, *suffix_tokens, mid]

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

    def _decode(self, tokens: list[int], all_logits: bool = False) -> list[np.ndarray]:
        """Evaluate tokens after what the context holds, in n_batch chunks. With all_logits,
        returns each position's logits (for the prompt's logprobs)."""
        llama = self.llama
        rows: list[np.ndarray] = []
        for start in range(0, len(tokens), llama.n_batch):
            chunk = tokens[start : start + llama.n_batch]
            n_past = llama.n_tokens
            llama._batch.set_batch(batch=chunk, n_past=n_past, logits_all=all_logits)
            llama._ctx.decode(llama._batch)
            llama.input_ids[n_past : n_past + len(chunk)] = chunk
            llama.n_tokens += len(chunk)
            if all_logits:
                logits = np.ctypeslib.as_array(
                    llama._ctx.get_logits(), shape=(len(chunk), llama.n_vocab())
                )
                rows.extend(logits.copy())
        return rows

    def _reuse_prefix(self, tokens: list[int], media: MediaPrompt | None = None) -> int:
        """Keep the KV cells of the longest prefix the context already holds (multi-turn
        chats re-send the whole conversation); returns how many prompt tokens are cached.
        Image positions are never reused: the same placeholder may stand for another image."""
        llama = self.llama
        cached = llama.input_ids[: llama.n_tokens]
        limit = min(len(cached), len(tokens) - 1)  # at least one token must be decoded
        if media is not None:
            limit = min(limit, media.first_media)
        same = cached[:limit] == np.asarray(tokens[:limit], dtype=cached.dtype)
        common = limit if same.all() else int(np.argmin(same))
        if not llama._ctx.kv_cache_seq_rm(-1, common, -1):
            llama._ctx.kv_cache_seq_rm(-1, 0, -1)
            common = 0
        llama.n_tokens = common
        return common

    def _run(
        self,
        request: GenerationRequest,
        emit: Callable[[Event | BaseException], None],
        cancelled: threading.Event,
    ) -> None:
        if cancelled.is_set():  # the client left while queued
            return
        llama = self.llama
        tokens, template_stops, media = self._prompt_tokens(request)
        try:
            n_prompt = len(tokens) if media is None else media.n_tokens
            self._check_fits(n_prompt, request.max_tokens)
            limit = self.n_ctx - n_prompt
            if request.max_tokens is not None:
                limit = min(limit, request.max_tokens)
            text_tokens = tokens if media is None else [t for t in tokens if t >= 0]
            sampler = build_sampler(llama, request.sampling, request.grammar, text_tokens)
            try:
                self._generate(request, tokens, template_stops, limit, sampler, emit, cancelled,
                               media)
            finally:
                sampler.close()
        finally:
            if media is not None:
                media.close()

    def _generate(
        self,
        request: GenerationRequest,
        tokens: list[int],
        template_stops: list[str],
        limit: int,
        sampler: LlamaSampler,
        emit: Callable[[Event | BaseException], None],
        cancelled: threading.Event,
        media: MediaPrompt | None = None,
    ) -> None:
        llama = self.llama
        reader = LogprobReader(llama, request.logprobs or 0)
        want_logprobs = request.logprobs is not None
        started = time.perf_counter()
        if request.echo:
            self._echo(tokens, want_logprobs, reader, emit)
        else:
            cached = self._reuse_prefix(tokens, media)
            if media is None:
                self._decode(tokens[cached:])
            else:
                assert self.vision is not None
                self.vision.evaluate(media, cached, self._decode)

        stops = StopMatcher([*request.stop, *template_stops])
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        generated = 0
        logprob_sum = 0.0
        reason = "length"
        while generated < limit:
            if cancelled.is_set():
                logger.info("generation cancelled after %d tokens", generated)
                return
            if request.deadline is not None and time.monotonic() > request.deadline:
                logger.warning("generation stopped at the request time limit after %d tokens",
                               generated)
                break
            token = sampler.sample(llama._ctx, -1)
            if self._eog(self._vocab, token):
                reason = "stop"
                break
            generated += 1
            logprobs = None
            if want_logprobs:
                entry = reader.read(reader.last_row(), token)
                logprob_sum += entry.logprob or 0.0
                logprobs = [entry]
            text = stops.feed(decoder.decode(llama.detokenize([token])))
            if text or logprobs:
                emit(TextDelta(text, logprobs))
            if stops.stopped:
                reason = "stop"
                break
            if generated < limit:
                self._decode([token])
        tail = stops.feed(decoder.decode(b"", final=True)) + stops.flush()
        if tail:
            emit(TextDelta(tail))
        elapsed = time.perf_counter() - started
        n_prompt = len(tokens) if media is None else media.n_tokens
        logger.debug("%d prompt + %d completion tokens in %.2fs", n_prompt, generated, elapsed)
        emit(Finished(reason, n_prompt, generated, logprob_sum))

    def _echo(
        self,
        tokens: list[int],
        want_logprobs: bool,
        reader: LogprobReader,
        emit: Callable[[Event | BaseException], None],
    ) -> None:
        """Decode the whole prompt and emit it as text, with each token's logprob given the
        tokens before it (the first has none)."""
        llama = self.llama
        llama._ctx.kv_cache_seq_rm(-1, 0, -1)
        llama.n_tokens = 0
        rows = self._decode(tokens, all_logits=want_logprobs)
        text = llama.detokenize(tokens).decode("utf-8", errors="replace")
        logprobs = None
        if want_logprobs:
            first_text, first_bytes = reader.piece(tokens[0])
            logprobs = [TokenLogprob(first_text, first_bytes, None)]
            logprobs += [reader.read(rows[i - 1], tokens[i]) for i in range(1, len(tokens))]
        emit(TextDelta(text, logprobs, echo=True))
