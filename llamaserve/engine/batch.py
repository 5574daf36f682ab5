"""The batching executor: up to `parallel` requests of one model decoded together.

One scheduler thread per model owns the llama.cpp context. Each step it builds one
`llama_batch` holding the next token of every generating sequence plus pieces of waiting
prompts (chunked while others generate, so a long prompt does not stall running streams),
calls `llama_decode` once — the weights are read once for all sequences — and samples every
sequence that produced logits with that request's own sampler chain.

KV cache: one stream of n_ctx cells per sequence, so each request may use a whole n_ctx (as
with Ollama's OLLAMA_NUM_PARALLEL) and its cells stay in position order (see
_replace_context). A slot is a sequence id. When its request ends (or the client leaves) the
slot is free again but keeps its cells and the tokens they hold: that is the prefix cache. A
new request takes a free slot, drops the cells past the prefix it shares with the prompt, and
decodes only the rest; when another slot (even a busy one) shares much more, its stream is
copied first (`llama_memory_seq_cp`), which is cheaper than recomputing the prefix.

Requests wait in a bounded FIFO queue for a free slot: a full queue is refused at once, a
request waiting longer than the queue timeout gets an error (both EngineBusyError: 503).
Events cross to the event loop once per step through `call_soon_threadsafe`; a consumer that
stops listening (client disconnect) sets a flag the scheduler checks before every step.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import llama_cpp
import numpy as np
from llama_cpp import Llama
from llama_cpp._internals import LlamaContext, LlamaSampler

from .options import CPU_UBATCH, N_BATCH, LoadOptions
from .prompt import ChatPrompter
from .sampling import LogprobReader, build_sampler
from .stops import StopMatcher
from .types import (
    EngineBusyError,
    EngineError,
    EngineInternalError,
    Event,
    Finished,
    GenerationRequest,
    PromptTooLongError,
    TextDelta,
    TokenLogprob,
)
from .vision import MediaChunk, MediaPrompt, VisionProjector, choose_handler, handler_format

logger = logging.getLogger(__name__)

PROMPT_CHUNK = 128  # prompt tokens per step while other sequences are generating
REUSE_MARGIN = 32  # cached tokens that justify leaving the lowest free slot, or a copy
MIN_REUSE = 8  # (for a short prompt, half of it, but at least this many)
# llama_decode's non-zero results (llama.h); any other negative value is a fatal error.
DECODE_FAILURES = {
    1: "no free KV cells for the batch",
    2: "aborted",
    -1: "invalid input batch",
}


@dataclass(eq=False)
class _Job:
    """One request inside the engine, from its prepared prompt to its Finished event."""

    request: GenerationRequest
    tokens: list[int]  # one entry per prompt position (MEDIA_POSITION where images go)
    # Prompt tokens, image tokens included: its usage and the KV cells it takes. With M-RoPE
    # an image's tokens share positions, so this can exceed len(tokens).
    n_prompt: int
    limit: int  # tokens it may generate
    sampler: LlamaSampler
    reader: LogprobReader
    stops: StopMatcher
    media: MediaPrompt | None = None
    loop: asyncio.AbstractEventLoop | None = None
    queue: asyncio.Queue[Event | BaseException] | None = None
    cancelled: bool = False
    enqueued: float = 0.0
    # Once running:
    slot: _Slot | None = None
    pos: int = 0  # prompt positions in the KV cache so far
    cached: int = 0  # of which came from the prefix cache
    pending: int | None = None  # sampled, to be decoded in the next step
    generated: int = 0
    logprob_sum: float = 0.0
    echo_logprobs: list[TokenLogprob] = field(default_factory=list)
    decoder: Any = field(default_factory=lambda: codecs.getincrementaldecoder("utf-8")("replace"))

    @property
    def prompting(self) -> bool:
        return self.pending is None and self.pos < len(self.tokens)

    @property
    def scores_prompt(self) -> bool:
        """Echo with logprobs: every prompt position's logits are needed, none is cached."""
        return self.request.echo and self.request.logprobs is not None

    def next_image(self) -> MediaChunk | None:
        if self.media is None:
            return None
        return next((img for img in self.media.images if img.start >= self.pos), None)

    def close(self) -> None:
        self.sampler.close()
        if self.media is not None:
            self.media.close()


@dataclass(eq=False)
class _Slot:
    seq: int
    tokens: list[int] = field(default_factory=list)  # what its KV cells hold, by position
    cells: int = 0  # KV cells it holds (more than len(tokens) after an M-RoPE image)
    job: _Job | None = None


def _common_prefix(cached: list[int], tokens: np.ndarray, limit: int) -> int:
    n = min(len(cached), limit)
    if n <= 0:
        return 0
    same = np.asarray(cached[:n], dtype=np.int64) == tokens[:n]
    return n if same.all() else int(np.argmin(same))


class BatchEngine:
    """Runs one loaded model; `generate` yields the events of one request, many at a time."""

    def __init__(
        self,
        llama: Llama,
        prompter: ChatPrompter,
        path: Path,
        options: LoadOptions,
        n_ctx: int,
        vision: VisionProjector | None = None,
    ) -> None:
        self.llama = llama
        self.prompter = prompter
        self.path = path
        self.vision = vision  # None: the model does not accept images
        self.parallel = options.parallel
        self.queue_size = options.queue_size
        self.queue_timeout = options.queue_timeout
        self._n_ctx = n_ctx
        self._ctx: LlamaContext = llama._ctx
        self._memory = llama_cpp.llama_get_memory(self._ctx.ctx)
        self._vocab = llama._model.vocab
        self._eog = llama_cpp.llama_vocab_is_eog
        model = llama._model.model
        # Partial removal of a sequence's cells is impossible for recurrent state, so their
        # prompts are always evaluated whole.
        self._prefix_reuse = not (llama_cpp.llama_model_is_recurrent(model)
                                  or llama_cpp.llama_model_is_hybrid(model))
        self._n_swa = llama_cpp.llama_model_n_swa(model)
        self._batch = llama_cpp.llama_batch_init(N_BATCH, 0, 1)
        self._slots = [_Slot(seq) for seq in range(self.parallel)]
        self._queue: deque[_Job] = deque()
        self._cond = threading.Condition()
        self._closing = False
        self._outbox: list[tuple[_Job, Event | BaseException]] = []
        self._vision_lock = threading.Lock()
        self._prep = ThreadPoolExecutor(max_workers=1, thread_name_prefix="prompt")
        self._thread = threading.Thread(target=self._run, name=f"llama-{path.stem}", daemon=True)
        self._thread.start()

    @classmethod
    def load(
        cls, path: Path, options: LoadOptions, projector: Path | None = None
    ) -> BatchEngine:
        """Load the weights (and the vision projector when given) and start the scheduler
        (blocking: call it from a worker thread)."""
        n_ctx = options.n_ctx
        if n_ctx is None:  # decided by the caller (gguf_info.effective_context), never here
            raise ValueError("LoadOptions.n_ctx must be set to load a model")
        llama = Llama(
            model_path=str(path),
            n_ctx=16,  # a placeholder context, replaced below
            n_batch=16,
            n_ubatch=16,
            n_threads=options.n_threads,
            n_threads_batch=options.n_threads,
            n_gpu_layers=options.n_gpu_layers,
            swa_full=True,  # a sliding-window model keeps every cell, so prefixes stay reusable
            verbose=options.verbose,
        )
        try:
            _replace_context(llama, n_ctx, options.parallel, options.n_gpu_layers == 0)
            vision, prompter = None, None
            if projector is not None:
                vision = VisionProjector(projector, llama, options.n_gpu_layers != 0,
                                         options.verbose)
                handler = choose_handler(options.chat_handler, llama, projector)
                template, default_system = handler_format(handler)
                if options.chat_format is not None:
                    template, default_system = None, None
                prompter = ChatPrompter(llama, options.chat_format, template, default_system)
                logger.info("vision projector %s, prompts in %s (handler %s)", projector,
                            prompter.source, handler)
            else:
                prompter = ChatPrompter(llama, options.chat_format)
        except BaseException:
            llama.close()
            raise
        return cls(llama, prompter, path, options, n_ctx, vision)

    @property
    def n_ctx(self) -> int:
        """The context of one request: prompt plus completion."""
        return self._n_ctx

    @property
    def n_vocab(self) -> int:
        return self.llama.n_vocab()

    @property
    def memory_bytes(self) -> int:
        """Weights plus the context's state (KV cache, logits): what staying resident costs."""
        return self.llama._model.size() + llama_cpp.llama_state_get_size(self._ctx.ctx)

    def sequences(self) -> dict[str, int]:
        """How many sequences there are, how many run a request, how many requests wait."""
        with self._cond:
            running = sum(s.job is not None for s in self._slots)
            return {"parallel": self.parallel, "running": running,
                    "waiting": max(0, len(self._queue) - (self.parallel - running))}

    def close(self) -> None:
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self._thread.join()
        self._prep.shutdown(wait=True, cancel_futures=True)
        llama_cpp.llama_batch_free(self._batch)
        self.llama.close()

    # -- the event-loop side -----------------------------------------------------------------

    async def generate(self, request: GenerationRequest) -> AsyncIterator[Event]:
        """Events for one request: TextDelta*, then one Finished. Errors found before the first
        token (prompt too long, template rejected, queue full) are raised from the first
        `anext`."""
        loop = asyncio.get_running_loop()
        self._check_room()
        future = loop.run_in_executor(self._prep, self._prepare, request)
        try:
            job = await asyncio.shield(future)
        except asyncio.CancelledError:
            future.add_done_callback(_close_prepared)
            raise
        job.loop, job.queue = loop, asyncio.Queue()
        try:
            self._submit(job)
        except BaseException:
            job.close()
            raise
        try:
            while True:
                item = await job.queue.get()
                if isinstance(item, BaseException):
                    raise item
                yield item
                if isinstance(item, Finished):
                    return
        finally:
            job.cancelled = True  # the scheduler frees the slot (or drops it from the queue)

    def _waiting(self) -> int:
        """Requests queued beyond the free slots (negative: free slots to spare). Called with
        the lock held."""
        free = sum(s.job is None for s in self._slots)
        return len(self._queue) - free

    def _check_room(self) -> None:
        with self._cond:
            if any(job.cancelled for job in self._queue):  # their clients left while waiting
                for job in self._queue:
                    if job.cancelled:
                        job.close()
                self._queue = deque(job for job in self._queue if not job.cancelled)
            if self._closing:
                raise EngineBusyError("the model is being unloaded; retry the request")
            if self._waiting() >= self.queue_size:
                raise EngineBusyError(
                    f"the server is busy: all {self.parallel} sequences are generating and "
                    f"{len(self._queue)} requests are waiting (--queue-size {self.queue_size}); "
                    "retry shortly",
                    code="server_busy",
                )

    def _submit(self, job: _Job) -> None:
        self._check_room()
        with self._cond:
            job.enqueued = time.monotonic()
            self._queue.append(job)
            self._cond.notify()

    # -- preparing a prompt (the prompt thread) ----------------------------------------------

    def _prepare(self, request: GenerationRequest) -> _Job:
        tokens, template_stops, media = self._prompt_tokens(request)
        try:
            n_prompt = len(tokens) if media is None else media.n_tokens
            self._check_fits(n_prompt, request.max_tokens)
            limit = self.n_ctx - n_prompt  # the cells left, not the positions
            if request.max_tokens is not None:
                limit = min(limit, request.max_tokens)
            text_tokens = tokens if media is None else [t for t in tokens if t >= 0]
            sampler = build_sampler(self.llama, request.sampling, request.grammar, text_tokens)
        except BaseException:
            if media is not None:
                media.close()
            raise
        reader = LogprobReader(self.llama, request.logprobs or 0)
        stops = StopMatcher([*request.stop, *template_stops])
        return _Job(request, tokens, n_prompt, limit, sampler, reader, stops, media)

    def _prompt_tokens(
        self, request: GenerationRequest
    ) -> tuple[list[int], list[str], MediaPrompt | None]:
        llama = self.llama
        if request.messages is not None:
            rendered = self.prompter.render(request.messages, request.tools)
            if request.images:
                if self.vision is None:
                    raise EngineError("this model does not accept images", param="messages")
                with self._vision_lock:
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
        vocab = self._vocab
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
        """The prompt's KV cells plus max_tokens must fit in a sequence's n_ctx cells (its
        positions may be fewer: M-RoPE images, but every token takes a cell)."""
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

    # -- the scheduler thread ----------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._closing and not self._queue and not self._active():
                    self._cond.wait()
                if self._closing:
                    break
            try:
                with self._cond:
                    self._admit(time.monotonic())
                self._step()
            except Exception as exc:  # noqa: BLE001 - a failed step fails its requests, not us
                logger.exception("a decoding step failed")
                for slot in self._slots:
                    if slot.job is not None:
                        self._fail(slot.job, EngineInternalError(
                            f"The model failed while generating ({exc}); see the server log."))
                        self._forget(slot)
            self._flush()
        with self._cond:
            jobs = [*self._queue, *(s.job for s in self._slots if s.job is not None)]
            self._queue.clear()
        for job in jobs:
            self._fail(job, EngineBusyError("the model was unloaded; retry the request"))
            self._release(job)
        self._flush()

    def _active(self) -> bool:
        return any(s.job is not None for s in self._slots)

    def _admit(self, now: float) -> None:
        """Give free slots to queued requests, oldest first; time out those waiting too long.
        Called with the lock held."""
        while self._queue and (self._queue[0].cancelled
                               or now - self._queue[0].enqueued > self.queue_timeout):
            job = self._queue.popleft()
            if not job.cancelled:
                waited = now - job.enqueued
                self._fail(job, EngineBusyError(
                    f"the request waited {waited:.0f} s for a free sequence (all "
                    f"{self.parallel} are generating; --queue-timeout {self.queue_timeout:g} s); "
                    "retry later", code="queue_timeout"))
            job.close()
        while self._queue:
            free = [s for s in self._slots if s.job is None]
            if not free:
                return
            job = self._queue.popleft()
            if job.cancelled:
                job.close()
                continue
            try:
                self._place(job, free)
            except Exception as exc:  # noqa: BLE001 - this request fails, the others go on
                logger.exception("seating a request failed")
                slot = job.slot
                self._fail(job, EngineInternalError(
                    f"The request could not be started ({exc}); see the server log."))
                if slot is not None:
                    self._forget(slot)
                job.close()

    def _place(self, job: _Job, free: list[_Slot]) -> None:
        """Seat a request in a free slot, reusing the longest cached prefix of its prompt.

        The lowest free sequence id is preferred: llama.cpp decodes the sequences of a step in
        one micro-batch only when their ids are consecutive. Another free slot is taken when
        its cache saves enough tokens more (REUSE_MARGIN, or half a short prompt); a busy
        slot's cells are copied when they save that much over the best free one (a copy
        between streams copies the whole stream: cheaper than evaluating a dozen tokens).
        """
        tokens = np.asarray(job.tokens, dtype=np.int64)
        limit = len(job.tokens) - 1  # the last prompt token is decoded for its logits
        if job.media is not None:
            # Image cells are never reused, so a cached prefix is text: as many cells as
            # positions.
            limit = min(limit, job.media.first_media)
        if not self._prefix_reuse or job.scores_prompt or not job.request.cache_prompt:
            limit = 0
        common = {s.seq: _common_prefix(s.tokens, tokens, limit) for s in self._slots}
        common = {seq: n if self._usable(seq, n) else 0 for seq, n in common.items()}
        margin = max(MIN_REUSE, min(REUSE_MARGIN, len(job.tokens) // 2))
        target = free[0]  # the lowest free id
        best_free = max(free, key=lambda s: common[s.seq])
        if common[best_free.seq] >= common[target.seq] + margin:
            target = best_free
        cached = common[target.seq]
        source = max(self._slots, key=lambda s: common[s.seq])
        seq = target.seq
        if common[source.seq] >= cached + margin:
            cached = common[source.seq]
            llama_cpp.llama_memory_seq_rm(self._memory, seq, -1, -1)
            llama_cpp.llama_memory_seq_cp(self._memory, source.seq, seq, -1, -1)
            source_tokens = source.tokens
        else:
            source_tokens = target.tokens
        if not llama_cpp.llama_memory_seq_rm(self._memory, seq, cached, -1):
            llama_cpp.llama_memory_seq_rm(self._memory, seq, -1, -1)
            cached = 0
        target.tokens = source_tokens[:cached]
        target.cells = cached
        target.job = job
        job.slot = target
        job.pos = job.cached = cached
        if cached:
            logger.debug("sequence %d reuses %d cached prompt tokens of %d", seq, cached,
                         len(job.tokens))
        if job.limit == 0 and not job.request.echo:
            self._finish(job, "length")  # nothing to generate: the prompt need not be decoded

    def _usable(self, seq: int, common: int) -> bool:
        """Whether a sequence's first `common` cells are all still there (a sliding-window
        cache without swa_full drops cells that leave the window)."""
        if common == 0 or self._n_swa == 0:
            return True
        pos_min = llama_cpp.llama_memory_seq_pos_min(self._memory, seq)
        return pos_min <= max(0, common - self._n_swa)

    def _step(self) -> None:
        now = time.monotonic()
        jobs: list[_Job] = []
        for slot in self._slots:
            job = slot.job
            if job is None:
                continue
            if job.cancelled:
                logger.info("generation cancelled after %d tokens", job.generated)
                self._release(job)
            elif job.request.deadline is not None and now > job.request.deadline:
                logger.warning("generation stopped at the request time limit after %d tokens",
                               job.generated)
                self._finish(job, "length")
            else:
                jobs.append(job)
        if not jobs:
            return
        # Images are encoded and decoded by mtmd, outside the shared batch.
        for job in jobs:
            image = job.next_image() if job.prompting else None
            if image is not None and image.start == job.pos:
                try:
                    self._eval_image(job, image)
                except Exception as exc:  # noqa: BLE001 - this request fails, the others go on
                    logger.exception("evaluating an image into sequence %d failed",
                                     job.slot.seq if job.slot else -1)
                    self._abort(job, EngineInternalError(
                        f"The model failed while reading an image ({exc}); see the server log."))
        batch = self._batch
        n = 0
        samples: list[tuple[_Job, int]] = []
        scores: list[tuple[_Job, int, int]] = []  # echo: (job, batch index, prompt position)
        for job in jobs:
            if job.pending is None:
                continue
            assert job.slot is not None
            slot = job.slot
            _put(batch, n, job.pending, len(slot.tokens), slot.seq, True)
            slot.tokens.append(job.pending)
            slot.cells += 1
            job.pending = None
            samples.append((job, n))
            n += 1
        budget = N_BATCH - n
        if n:
            budget = min(budget, PROMPT_CHUNK)
        for job in sorted((j for j in jobs if j.prompting and j.slot is not None),
                          key=lambda j: j.enqueued):
            if budget <= 0:
                break
            image = job.next_image()
            end = image.start if image is not None else len(job.tokens)
            if end == job.pos:
                continue  # an image comes next (next step)
            count = min(end - job.pos, budget)
            slot = job.slot
            assert slot is not None
            last = job.pos + count == len(job.tokens)
            score = job.scores_prompt
            for i in range(count):
                position = job.pos + i
                final = last and i == count - 1
                _put(batch, n, job.tokens[position], position, slot.seq, score or final)
                if score:
                    scores.append((job, n, position))
                if final:
                    samples.append((job, n))
                n += 1
            slot.tokens.extend(job.tokens[job.pos : job.pos + count])
            slot.cells += count
            job.pos += count
            budget -= count
        if n == 0:
            return
        batch.n_tokens = n
        result = llama_cpp.llama_decode(self._ctx.ctx, batch)
        if result != 0:
            failed = {job for job, _ in samples} | {job for job, _, _ in scores}
            failed |= {j for j in jobs if j.slot is not None and j.prompting}
            self._decode_failed(result, n, failed)
            return
        for job, index, position in scores:
            if position + 1 < len(job.tokens):
                job.echo_logprobs.append(
                    job.reader.read(self._row(index, job), job.tokens[position + 1]))
        for job, index in samples:
            if job.slot is not None:
                self._sample(job, index)

    def _decode_failed(self, result: int, n_tokens: int, failed: set[_Job]) -> None:
        """llama_decode refused a batch: the server's fault, not the requests', so they fail
        with a 500 (a 4xx would tell the client its request was wrong)."""
        cause = DECODE_FAILURES.get(result, "fatal error")
        held = ", ".join(f"{slot.seq} ({slot.cells} of {self.n_ctx} cells)"
                         for slot in self._slots if slot.job in failed)
        logger.error("llama_decode returned %d (%s) on a batch of %d tokens; failing %d "
                     "requests on sequences %s", result, cause, n_tokens, len(failed), held)
        for job in failed:
            self._abort(job, EngineInternalError(
                f"The model failed while generating (llama_decode returned {result}: {cause}); "
                "see the server log."))

    def _eval_image(self, job: _Job, image: MediaChunk) -> None:
        start, n_pos, n_tokens, chunk = image
        slot = job.slot
        assert slot is not None and self.vision is not None
        last = start + n_pos == len(job.tokens)
        with self._vision_lock:
            new_pos = self.vision.eval_image(self._ctx.ctx, chunk, job.pos, slot.seq, N_BATCH,
                                             last)
        slot.tokens.extend(job.tokens[start : start + n_pos])
        slot.cells += n_tokens
        job.pos = start + n_pos
        assert new_pos == job.pos, (new_pos, job.pos)
        if last:
            self._sample(job, -1)

    def _row(self, index: int, job: _Job) -> np.ndarray:
        pointer = self._ctx.get_logits_ith(index)
        return np.ctypeslib.as_array(pointer, shape=(job.reader.n_vocab,))

    def _sample(self, job: _Job, index: int) -> None:
        """The prompt's end or the last generated token was decoded: pick the next token."""
        request = job.request
        if job.generated == 0 and request.echo:
            text = self.llama.detokenize(job.tokens).decode("utf-8", errors="replace")
            logprobs = None
            if request.logprobs is not None:
                first_text, first_bytes = job.reader.piece(job.tokens[0])
                logprobs = [TokenLogprob(first_text, first_bytes, None), *job.echo_logprobs]
            self._emit(job, TextDelta(text, logprobs, echo=True))
        if job.generated >= job.limit:
            self._finish(job, "length")
            return
        token = job.sampler.sample(self._ctx, index)
        if self._eog(self._vocab, token):
            self._finish(job, "stop")
            return
        job.generated += 1
        logprobs = None
        if request.logprobs is not None:
            entry = job.reader.read(self._row(index, job), token)
            job.logprob_sum += entry.logprob or 0.0
            logprobs = [entry]
        text = job.stops.feed(job.decoder.decode(self.llama.detokenize([token])))
        if text or logprobs:
            self._emit(job, TextDelta(text, logprobs))
        if job.stops.stopped:
            self._finish(job, "stop")
        elif job.generated >= job.limit:
            self._finish(job, "length")
        elif job.slot is not None and job.slot.cells >= self.n_ctx:
            self._finish(job, "length")  # no KV cell left for the next token: the end, not an error
        else:
            job.pending = token

    def _finish(self, job: _Job, reason: str) -> None:
        tail = job.stops.feed(job.decoder.decode(b"", final=True)) + job.stops.flush()
        if tail:
            self._emit(job, TextDelta(tail))
        logger.debug("%d prompt (%d cached) + %d completion tokens", job.n_prompt, job.cached,
                     job.generated)
        self._emit(job, Finished(reason, job.n_prompt, job.generated,  # type: ignore[arg-type]
                                 job.logprob_sum, job.cached))
        self._release(job)

    def _release(self, job: _Job) -> None:
        """The request is done: its slot is free, and keeps its cells as a prefix cache."""
        slot = job.slot
        if slot is not None:
            with self._cond:
                slot.job = None
            job.slot = None
        job.close()

    def _forget(self, slot: _Slot) -> None:
        llama_cpp.llama_memory_seq_rm(self._memory, slot.seq, -1, -1)
        slot.tokens = []
        slot.cells = 0

    def _abort(self, job: _Job, exc: BaseException) -> None:
        """Fail a running request and drop its sequence's cells: after a failed decode they
        no longer match the tokens the slot records."""
        slot = job.slot
        self._fail(job, exc)
        if slot is not None:
            self._forget(slot)

    def _fail(self, job: _Job, exc: BaseException) -> None:
        self._emit(job, exc)
        if job.slot is not None:
            self._release(job)

    def _emit(self, job: _Job, item: Event | BaseException) -> None:
        self._outbox.append((job, item))

    def _flush(self) -> None:
        """Hand this step's events to their event loops, one wake-up per loop."""
        if not self._outbox:
            return
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[_Job, Any]]] = {}
        for job, item in self._outbox:
            if job.loop is not None and not job.cancelled:
                by_loop.setdefault(job.loop, []).append((job, item))
        self._outbox = []
        for loop, items in by_loop.items():
            try:
                loop.call_soon_threadsafe(_deliver, items)
            except RuntimeError:  # the loop closed under us (shutdown): nobody is listening
                for job, _ in items:
                    job.cancelled = True


def _deliver(items: list[tuple[_Job, Any]]) -> None:
    for job, item in items:
        assert job.queue is not None
        job.queue.put_nowait(item)


def _close_prepared(future: asyncio.Future[_Job]) -> None:
    if not future.cancelled() and future.exception() is None:
        future.result().close()


def _put(batch: Any, i: int, token: int, pos: int, seq: int, logits: bool) -> None:
    batch.token[i] = token
    batch.pos[i] = pos
    batch.n_seq_id[i] = 1
    batch.seq_id[i][0] = seq
    batch.logits[i] = logits


def _replace_context(llama: Llama, n_ctx: int, parallel: int, on_cpu: bool) -> None:
    """Swap the Llama's context for one with `parallel` sequences, each with its own KV
    stream of n_ctx cells (llama-cpp-python's constructor cannot ask for that)."""
    params = llama.context_params
    params.n_ctx = n_ctx * parallel
    params.n_seq_max = parallel
    params.kv_unified = False  # a stream of n_ctx cells per sequence
    params.n_batch = N_BATCH
    if on_cpu:
        # Batch invariance. llama.cpp's CPU attention sums over KV cells in cell order, in
        # f16: where a sequence's cells sit changes its output. A unified cache interleaves
        # sequences and refills holes out of order; one stream per sequence keeps each
        # sequence's cells in position order. Flash attention also takes a tiled path (other
        # rounding) for 64 or more query tokens, so micro-batches stay under 64. Then a
        # request's output does not depend on what else is decoded with it or on the prefix
        # cache (tests/test_batching.py). The cost: ~20 % of prompt throughput here.
        params.flash_attn_type = llama_cpp.LLAMA_FLASH_ATTN_TYPE_ENABLED
        params.n_ubatch = CPU_UBATCH
    else:
        params.flash_attn_type = llama_cpp.LLAMA_FLASH_ATTN_TYPE_AUTO
        params.n_ubatch = N_BATCH
    llama._ctx.close()
    llama._ctx = llama._stack.enter_context(contextlib.closing(
        LlamaContext(model=llama._model, params=params, verbose=llama.verbose)))
    llama._n_ctx = llama._ctx.n_ctx()
