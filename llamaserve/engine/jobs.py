"""One request inside the engine (`Job`) and the sequences that run them (`Slot`).

A job's life, as llama.cpp's server tracks `slot_state`:

    WAITING ── seated in a slot ──> PROMPT ── its last prompt token decoded ──> GENERATE
       │                              │                                          │
       └──────────── finished, failed or cancelled: DONE (closed once) <─────────┘
"""

from __future__ import annotations

import asyncio
import codecs
import enum
from dataclasses import dataclass, field
from typing import Any

from llama_cpp._internals import LlamaSampler

from .constraint import TokenConstraint
from .sampling import GreedySampler, LogprobReader
from .speculative import SequenceDrafts
from .stops import StopMatcher
from .types import Event, GenerationRequest, TokenLogprob
from .vision import MediaChunk, MediaPrompt


class JobState(enum.Enum):
    WAITING = "waiting"  # queued for a free slot
    PROMPT = "prompt"  # seated; its prompt is being evaluated
    GENERATE = "generate"  # sampling tokens
    DONE = "done"  # finished, failed or cancelled; its resources are released


@dataclass(eq=False)
class Job:
    """One request, from its prepared prompt to its Finished event (or error)."""

    request: GenerationRequest
    tokens: list[int]  # one entry per prompt position (MEDIA_POSITION where images go)
    # Prompt tokens, image tokens included: its usage and the KV cells it takes. With M-RoPE
    # an image's tokens share positions, so this can exceed len(tokens).
    n_prompt: int
    limit: int  # tokens it may generate
    sampler: LlamaSampler | GreedySampler
    reader: LogprobReader
    stops: StopMatcher
    media: MediaPrompt | None = None
    constraint: TokenConstraint | None = None  # a JSON schema the output must match
    state: JobState = JobState.WAITING
    loop: asyncio.AbstractEventLoop | None = None
    queue: asyncio.Queue[Event | BaseException] | None = None
    cancelled: bool = False  # its consumer stopped listening (set from the event loop)
    enqueued: float = 0.0
    # Once seated:
    slot: Slot | None = None
    pos: int = 0  # prompt positions in the KV cache so far
    cached: int = 0  # of which came from the prefix cache
    pending: int | None = None  # sampled, to be decoded in the next step
    generated: int = 0
    logprob_sum: float = 0.0
    echo_logprobs: list[TokenLogprob] = field(default_factory=list)
    drafts: SequenceDrafts | None = None  # speculative decoding state, once generating
    decoder: Any = field(default_factory=lambda: codecs.getincrementaldecoder("utf-8")("replace"))

    @property
    def scores_prompt(self) -> bool:
        """Echo with logprobs: every prompt position's logits are needed, none is cached."""
        return self.request.echo and self.request.logprobs is not None

    def next_image(self) -> MediaChunk | None:
        if self.media is None:
            return None
        return next((img for img in self.media.images if img.start >= self.pos), None)

    def close(self) -> None:
        """Release what the job holds in llama.cpp (its sampler, its image chunks)."""
        self.state = JobState.DONE
        self.sampler.close()
        if self.media is not None:
            self.media.close()


@dataclass(eq=False)
class Slot:
    """A sequence id of the context. Its cells outlive its job: the prefix cache."""

    seq: int
    tokens: list[int] = field(default_factory=list)  # what its KV cells hold, by position
    cells: int = 0  # KV cells it holds (more than len(tokens) after an M-RoPE image)
    job: Job | None = None


class Outbox:
    """Events of the scheduler's step, handed to their event loops together: one wake-up
    per loop per step (scheduler thread only)."""

    def __init__(self) -> None:
        self._items: list[tuple[Job, Event | BaseException]] = []

    def emit(self, job: Job, item: Event | BaseException) -> None:
        self._items.append((job, item))

    def flush(self) -> None:
        if not self._items:
            return
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[Job, Any]]] = {}
        for job, item in self._items:
            if job.loop is not None and not job.cancelled:
                by_loop.setdefault(job.loop, []).append((job, item))
        self._items = []
        for loop, items in by_loop.items():
            try:
                loop.call_soon_threadsafe(_deliver, items)
            except RuntimeError:  # the loop closed under us (shutdown): nobody is listening
                for job, _ in items:
                    job.cancelled = True


def _deliver(items: list[tuple[Job, Any]]) -> None:
    for job, item in items:
        assert job.queue is not None
        job.queue.put_nowait(item)


def close_prepared(future: asyncio.Future[Job]) -> None:
    """A job prepared for a client that has left: release it."""
    if not future.cancelled() and future.exception() is None:
        future.result().close()
