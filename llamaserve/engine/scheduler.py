"""The batching scheduler: up to `parallel` requests of one model decoded together.

One scheduler thread per model owns the llama.cpp context. Each step it builds one
`llama_batch` holding the next token of every generating sequence plus pieces of waiting
prompts (chunked while others generate, so a long prompt does not stall running streams),
calls `llama_decode` once — the weights are read once for all sequences — and samples every
sequence that produced logits with that request's own sampler chain.

KV cache: one stream of n_ctx cells per sequence (context.py), so each request may use a
whole n_ctx (as with Ollama's OLLAMA_NUM_PARALLEL) and its cells stay in position order. A
slot is a sequence id. When its request ends (or the client leaves) the slot is free again but
keeps its cells and the tokens they hold: that is the prefix cache. A new request takes the
slot `slots.choose_slot` picks, drops the cells past the prefix it shares with the prompt, and
decodes only the rest, after copying another slot's cells when they share much more.

Requests wait in a bounded FIFO queue for a free slot: a full queue is refused at once, a
request waiting longer than the queue timeout gets an error (both EngineBusyError: 503).
Events cross to the event loop once per step through `call_soon_threadsafe`; a consumer that
stops listening (client disconnect) sets a flag the scheduler checks before every step. A job
ends in one place, `_end`, whether it finished, failed or was cancelled.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

from .admission import Admission
from .context import ModelContext, decode_failure, load_llama
from .draft_model import DraftModel
from .drafting import Speculation
from .jobs import Job, JobState
from .options import CPU_UBATCH, N_BATCH, LoadOptions, micro_batch
from .prepare import Preparer, make_prompter
from .slots import SlotView, choose_slot
from .speculative import verify
from .types import (
    EngineBusyError,
    EngineError,
    EngineInternalError,
    Finished,
    TextDelta,
    TokenLogprob,
)
from .vision import MediaChunk, VisionProjector

logger = logging.getLogger(__name__)

PROMPT_CHUNK = 128  # prompt tokens per step while other sequences are generating


class BatchEngine(Admission):
    """Runs one loaded model; `generate` yields the events of one request, many at a time."""

    def __init__(
        self, context: ModelContext, preparer: Preparer, path: Path, options: LoadOptions,
        vision: VisionProjector | None = None, draft_model: DraftModel | None = None,
    ) -> None:
        self.llama = context.llama
        self.vocabulary = preparer.vocabulary  # tokenizing for clients, off the loop
        self.prompter = preparer.prompter
        self.path = path
        self.vision = vision  # None: the model does not accept images
        super().__init__(preparer, options)
        self._context = context
        self._split_last = micro_batch(options.n_gpu_layers, options.deterministic) > CPU_UBATCH
        self._vision_lock = preparer.vision_lock
        # Dropping a sequence's rejected cells needs partial removal (not recurrent state).
        self.speculation = Speculation(options.speculative, options.draft_max, self.n_ctx,
                                       context.prefix_reuse, draft_model)
        self._thread = threading.Thread(target=self._run, name=f"llama-{path.stem}", daemon=True)
        self._thread.start()

    @classmethod
    def load(
        cls, path: Path, options: LoadOptions, projector: Path | None = None,
        draft: Path | None = None,
    ) -> BatchEngine:
        """Load the weights (and the vision projector and draft model when given) and start
        the scheduler (blocking: call it from a worker thread). `options.n_ctx` must be
        decided."""
        llama = load_llama(path, options)
        context = ModelContext(llama)
        draft_model = None
        try:
            prompter, vision = make_prompter(llama, options, projector)
            if draft is not None and options.speculative in ("auto", "draft"):
                draft_model = DraftModel.load(draft, options, context)
            assert options.n_ctx is not None
            preparer = Preparer(llama, prompter, vision, options.n_ctx, threading.Lock())
            return cls(context, preparer, path, options, vision, draft_model)
        except BaseException:
            if draft_model is not None:
                draft_model.close()
            context.close()
            raise

    @property
    def n_ctx(self) -> int:
        """The context of one request: prompt plus completion."""
        return self._preparer.n_ctx

    @property
    def n_vocab(self) -> int:
        return self._context.n_vocab

    @property
    def memory_bytes(self) -> int:
        return self._context.memory_bytes

    def close(self) -> None:
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self._thread.join()
        self._prep.shutdown(wait=True, cancel_futures=True)
        self.speculation.close()
        self._context.close()

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
                        self._end(slot.job, error=EngineInternalError(
                            f"The model failed while generating ({exc}); see the server log."),
                            drop_cells=True)
            self._outbox.flush()
        with self._cond:
            jobs = [*self._queue, *(s.job for s in self._slots if s.job is not None)]
            self._queue.clear()
        for job in jobs:
            self._end(job, error=EngineBusyError("the model was unloaded; retry the request"))
        self._outbox.flush()

    def _place(self, job: Job) -> None:
        """Seat a request in the slot `choose_slot` picks, reusing its cached prefix."""
        context = self._context
        reusable = len(job.tokens) - 1  # the last prompt token is decoded for its logits
        if job.media is not None:
            # Image cells are never reused, so a cached prefix is text: as many cells as
            # positions.
            reusable = min(reusable, job.media.first_media)
        if not context.prefix_reuse or job.scores_prompt or not job.request.cache_prompt:
            reusable = 0
        window = context.n_swa
        views = [SlotView(s.seq, s.tokens, s.job is None,
                          context.first_position(s.seq) if window and s.tokens else 0)
                 for s in self._slots]
        placement = choose_slot(job.tokens, views, reusable, window)
        target = self._slots[placement.seq]
        cached, tokens = placement.cached, target.tokens
        if placement.copy_from is not None:
            context.copy_cells(placement.copy_from, target.seq)
            tokens = self._slots[placement.copy_from].tokens
        if not context.drop_cells(target.seq, cached):
            context.drop_cells(target.seq)
            cached = 0
        target.tokens = tokens[:cached]
        target.cells = cached
        target.job = job
        job.slot = target
        job.pos = job.cached = cached
        job.state = JobState.PROMPT
        if cached:
            logger.debug("sequence %d reuses %d cached prompt tokens of %d", target.seq, cached,
                         len(job.tokens))
        if job.limit == 0 and not job.request.echo:
            self._end(job, reason="length")  # nothing to generate: no need to decode the prompt

    def _step(self) -> None:
        now = time.monotonic()
        jobs: list[Job] = []
        for slot in self._slots:
            job = slot.job
            if job is None:
                continue
            if job.cancelled:
                logger.info("generation cancelled after %d tokens", job.generated)
                self._end(job)
            elif job.request.deadline is not None and now > job.request.deadline:
                logger.warning("generation stopped at the request time limit after %d tokens",
                               job.generated)
                self._end(job, reason="length")
            elif self._winding_down:
                logger.warning("generation stopped by the shutdown after %d tokens",
                               job.generated)
                self._end(job, reason="length")
            else:
                jobs.append(job)
        if not jobs:
            return
        # Images are encoded and decoded by mtmd, outside the shared batch.
        for job in jobs:
            image = job.next_image() if job.state is JobState.PROMPT else None
            if image is not None and image.start == job.pos:
                try:
                    self._eval_image(job, image)
                except Exception as exc:  # noqa: BLE001 - this request fails, the others go on
                    logger.exception("evaluating an image into sequence %d failed",
                                     job.slot.seq if job.slot else -1)
                    self._end(job, error=EngineInternalError(
                        f"The model failed while reading an image ({exc}); see the server log."),
                        drop_cells=True)
        context = self._context
        n = 0
        samples: list[tuple[Job, int]] = []
        scores: list[tuple[Job, int, int]] = []  # echo: (job, batch index, prompt position)
        decoding = [j for j in jobs if j.pending is not None and j.slot is not None]
        self.speculation.plan(decoding, N_BATCH - len(decoding))
        for job in decoding:
            slot = job.slot
            assert slot is not None and job.pending is not None
            draft = job.drafts.draft if job.drafts is not None else []
            position = len(slot.tokens)
            for i, token in enumerate((job.pending, *draft)):
                context.put(n + i, token, position + i, slot.seq, True)
            slot.tokens.append(job.pending)
            slot.tokens.extend(draft)
            slot.cells += 1 + len(draft)
            job.pending = None
            samples.append((job, n))
            n += 1 + len(draft)
        budget = N_BATCH - n
        if n:
            budget = min(budget, PROMPT_CHUNK)
        for job in sorted((j for j in jobs if j.state is JobState.PROMPT and j.slot is not None),
                          key=lambda j: j.enqueued):
            if budget <= 0:
                break
            image = job.next_image()
            end = image.start if image is not None else len(job.tokens)
            if end == job.pos:
                continue  # an image comes next (next step)
            count = min(end - job.pos, budget)
            if (self._split_last and count > 1 and job.pos + count == len(job.tokens)
                    and n + count > CPU_UBATCH):
                # The last prompt token (the one whose logits are sampled) goes in a step
                # of its own, as it does after a prefix-cache hit: a large batch rounds
                # differently, so a repeated request would not repeat its output.
                count -= 1
            slot = job.slot
            assert slot is not None
            last = job.pos + count == len(job.tokens)
            score = job.scores_prompt
            for i in range(count):
                position = job.pos + i
                final = last and i == count - 1
                context.put(n, job.tokens[position], position, slot.seq, score or final)
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
        result = context.decode(n)
        if result != 0:
            failed = {job for job, _ in samples} | {job for job, _, _ in scores}
            failed |= {j for j in jobs if j.slot is not None and j.state is JobState.PROMPT}
            self._decode_failed(result, n, failed)
            return
        for job, index, position in scores:
            if position + 1 < len(job.tokens):
                job.echo_logprobs.append(
                    job.reader.read(context.logits(index), job.tokens[position + 1]))
        for job, index in samples:
            if job.slot is None:
                continue
            if job.drafts is not None and job.drafts.draft:
                self._verify(job, index)
            else:
                self._sample(job, index)

    def _verify(self, job: Job, index: int) -> None:
        """Sample the batch entries of the last token and its draft in order while the target
        agrees with the draft (speculative.verify); then drop the cells past the last kept
        token, so the slot's cells hold exactly the tokens emitted (but the pending one)."""
        slot, drafts = job.slot, job.drafts
        assert slot is not None and drafts is not None
        draft = drafts.draft
        first = len(slot.tokens) - len(draft) - 1  # the position of the last sampled token
        cells = slot.cells - len(draft) - 1

        def sample(i: int) -> int | None:
            slot.cells = cells + i + 1  # the cells holding tokens up to this one
            self._sample(job, index + i)
            return job.pending if job.state is JobState.GENERATE else None

        sampled, accepted = verify(draft, sample)
        self.speculation.record(job, accepted)
        keep = first + sampled
        if len(slot.tokens) > keep:
            self._context.drop_cells(slot.seq, keep)
            del slot.tokens[keep:]
        slot.cells = cells + sampled

    def _decode_failed(self, result: int, n_tokens: int, failed: set[Job]) -> None:
        """llama_decode refused a batch: the server's fault, not the requests', so they fail
        with a 500 (a 4xx would tell the client its request was wrong)."""
        cause = decode_failure(result)
        held = ", ".join(f"{slot.seq} ({slot.cells} of {self.n_ctx} cells)"
                         for slot in self._slots if slot.job in failed)
        logger.error("llama_decode returned %d (%s) on a batch of %d tokens; failing %d "
                     "requests on sequences %s", result, cause, n_tokens, len(failed), held)
        for job in failed:
            self._end(job, error=EngineInternalError(
                f"The model failed while generating (llama_decode returned {result}: {cause}); "
                "see the server log."), drop_cells=True)

    def _eval_image(self, job: Job, image: MediaChunk) -> None:
        start, n_pos, n_tokens, chunk = image
        slot = job.slot
        assert slot is not None and self.vision is not None
        last = start + n_pos == len(job.tokens)
        with self._vision_lock:
            new_pos = self.vision.eval_image(self._context.raw, chunk, job.pos, slot.seq,
                                             N_BATCH, last)
        slot.tokens.extend(job.tokens[start : start + n_pos])
        slot.cells += n_tokens
        job.pos = start + n_pos
        assert new_pos == job.pos, (new_pos, job.pos)
        if last:
            self._sample(job, -1)

    def _sample(self, job: Job, index: int) -> None:
        """The prompt's end or the last generated token was decoded: pick the next token."""
        request, context = job.request, self._context
        if job.generated == 0 and request.echo:
            text = self.vocabulary.text(job.tokens).decode("utf-8", errors="replace")
            logprobs = None
            if request.logprobs is not None:
                first_text, first_bytes = job.reader.piece(job.tokens[0])
                logprobs = [TokenLogprob(first_text, first_bytes, None), *job.echo_logprobs]
            self._outbox.emit(job, TextDelta(text, logprobs, echo=True))
        if job.generated >= job.limit:
            self._end(job, reason="length")
            return
        constraint, unmasked = job.constraint, None
        if constraint is not None:
            row = context.logits(index)
            if request.logprobs is not None:
                unmasked = row.copy()  # logprobs show the model's own distribution
            try:
                constraint.mask(row)  # the sampler chain reads this row: it sees the mask
            except EngineError as exc:
                logger.warning("JSON schema constraint failed: %s", exc)
                self._end(job, error=exc)
                return
        token = job.sampler.sample(context.context, index)
        if context.is_end(token):
            self._end(job, reason="stop")
            return
        if constraint is not None:
            try:
                constraint.accept(token)
            except EngineError as exc:
                logger.warning("JSON schema constraint failed: %s", exc)
                self._end(job, error=exc)
                return
        job.generated += 1
        logprobs = None
        if request.logprobs is not None:
            row = unmasked if unmasked is not None else context.logits(index)
            entry = job.reader.read(row, token)
            job.logprob_sum += entry.logprob or 0.0
            logprobs = [entry]
        text = job.stops.feed(job.decoder.decode(self.vocabulary.known_piece(token, False)))
        if text or logprobs:
            self._outbox.emit(job, TextDelta(text, logprobs))
        if job.stops.stopped or (constraint is not None and constraint.complete):
            self._end(job, reason="stop")
        elif job.generated >= job.limit:
            self._end(job, reason="length")
        elif job.slot is not None and job.slot.cells >= self.n_ctx:
            self._end(job, reason="length")  # no KV cell left for the next token: the end
        else:
            job.pending = token
            job.state = JobState.GENERATE

    def _end(
        self, job: Job, *, reason: str | None = None, error: BaseException | None = None,
        drop_cells: bool = False,
    ) -> None:
        """The one place a job ends: finished with `reason`, failed with `error`, or cancelled
        (neither). Its slot is freed and keeps its cells as a prefix cache, unless
        `drop_cells` (after a failure its cells no longer match the tokens the slot records).
        """
        if job.state is JobState.DONE:
            return
        if reason is not None:
            tail = job.stops.feed(job.decoder.decode(b"", final=True)) + job.stops.flush()
            if tail:
                self._outbox.emit(job, TextDelta(tail))
            logger.debug("%d prompt (%d cached) + %d completion tokens", job.n_prompt,
                         job.cached, job.generated)
            matched = job.stops.matched
            stop_sequence = matched if reason == "stop" and matched in job.request.stop else None
            self._outbox.emit(job, Finished(
                reason, job.n_prompt, job.generated,  # type: ignore[arg-type]
                job.logprob_sum, job.cached, stop_sequence))
        elif error is not None:
            self._outbox.emit(job, error)
        slot = job.slot
        if slot is not None:
            if drop_cells:
                self._context.drop_cells(slot.seq)
                slot.tokens, slot.cells = [], 0
            with self._cond:
                slot.job = None
            job.slot = None
        job.close()
