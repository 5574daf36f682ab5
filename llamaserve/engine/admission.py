"""Admission: requests from the event loop into the scheduler's queue, and from the queue
into free slots (sequences), with the queue's bounds (size, wait time).

`BatchEngine` (scheduler.py) is an Admission: this half runs on the event loop (`generate`)
and at the start of each scheduler step (`_admit`); the other half decodes.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor

from .jobs import Job, Outbox, Slot, close_prepared
from .options import LoadOptions
from .prepare import Preparer
from .types import EngineBusyError, EngineInternalError, Event, Finished, GenerationRequest

logger = logging.getLogger(__name__)

# Threads preparing prompts (template, tokenizer, sampler): more than one, so a long prompt
# being tokenized does not hold up the small ones behind it (llama.cpp's tokenizer is const
# and ctypes releases the GIL while it runs).
MAX_PROMPT_THREADS = 4


class Admission:
    def __init__(self, preparer: Preparer, options: LoadOptions) -> None:
        self.parallel = options.parallel
        self.queue_size = options.queue_size
        self.queue_timeout = options.queue_timeout
        self._preparer = preparer
        self._slots = [Slot(seq) for seq in range(self.parallel)]
        self._queue: deque[Job] = deque()
        self._cond = threading.Condition()
        self._closing = False
        self._winding_down = False  # shutting down: running requests end now, as "length"
        self._outbox = Outbox()
        self._prep = ThreadPoolExecutor(max_workers=max(2, min(self.parallel, MAX_PROMPT_THREADS)),
                                        thread_name_prefix="prompt")

    def _place(self, job: Job) -> None:  # pragma: no cover - the scheduler's
        raise NotImplementedError

    def _end(self, job: Job, *, reason: str | None = None, error: BaseException | None = None,
             drop_cells: bool = False) -> None:  # pragma: no cover - the scheduler's
        raise NotImplementedError

    def sequences(self) -> dict[str, int]:
        """How many sequences there are, how many run a request, how many requests wait."""
        with self._cond:
            running = sum(s.job is not None for s in self._slots)
            return {"parallel": self.parallel, "running": running,
                    "waiting": max(0, len(self._queue) - (self.parallel - running))}

    def wind_down(self) -> None:
        """End every request now: running ones finish as "length" (their streams close with
        their protocol's last frames), waiting and new ones fail as busy. For shutdown, when
        the grace period is over."""
        with self._cond:
            self._winding_down = True
            self._cond.notify_all()

    # -- the event-loop side -----------------------------------------------------------------

    async def generate(self, request: GenerationRequest) -> AsyncIterator[Event]:
        """Events for one request: TextDelta*, then one Finished. Errors found before the first
        token (prompt too long, template rejected, queue full) are raised from the first
        `anext`."""
        loop = asyncio.get_running_loop()
        self._check_room()
        future = loop.run_in_executor(self._prep, self._preparer.job, request)
        try:
            job = await asyncio.shield(future)
        except asyncio.CancelledError:
            future.add_done_callback(close_prepared)
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

    async def count_tokens(self, request: GenerationRequest) -> int:
        """The prompt tokens `request` would take (image tokens included), as its Finished
        event would count them, without running it: prepared on the prompt thread."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._prep, self._preparer.count, request)

    def _check_room(self) -> None:
        with self._cond:
            if any(job.cancelled for job in self._queue):  # their clients left while waiting
                for job in self._queue:
                    if job.cancelled:
                        self._end(job)
                self._queue = deque(job for job in self._queue if not job.cancelled)
            if self._closing or self._winding_down:
                raise EngineBusyError("the model is being unloaded; retry the request")
            free = sum(s.job is None for s in self._slots)
            if len(self._queue) - free >= self.queue_size:
                raise EngineBusyError(
                    f"the server is busy: all {self.parallel} sequences are generating and "
                    f"{len(self._queue)} requests are waiting (--queue-size {self.queue_size}); "
                    "retry shortly",
                    code="server_busy",
                )

    def _submit(self, job: Job) -> None:
        self._check_room()
        with self._cond:
            job.enqueued = time.monotonic()
            self._queue.append(job)
            self._cond.notify()

    def _active(self) -> bool:
        return any(s.job is not None for s in self._slots)

    def _admit(self, now: float) -> None:
        """Give free slots to queued requests, oldest first; time out those waiting too long.
        Called with the lock held."""
        while self._queue and (self._queue[0].cancelled or self._winding_down
                               or now - self._queue[0].enqueued > self.queue_timeout):
            job = self._queue.popleft()
            error = None
            if self._winding_down and not job.cancelled:
                error = EngineBusyError("the server is shutting down; retry the request on "
                                        "another server or after the restart")
            elif not job.cancelled:
                waited = now - job.enqueued
                error = EngineBusyError(
                    f"the request waited {waited:.0f} s for a free sequence (all "
                    f"{self.parallel} are generating; --queue-timeout {self.queue_timeout:g} s); "
                    "retry later", code="queue_timeout")
            self._end(job, error=error)
        while self._queue:
            if all(s.job is not None for s in self._slots):
                return
            job = self._queue.popleft()
            if job.cancelled:
                self._end(job)
                continue
            try:
                self._place(job)
            except Exception as exc:  # noqa: BLE001 - this request fails, the others go on
                logger.exception("seating a request failed")
                self._end(job, error=EngineInternalError(
                    f"The request could not be started ({exc}); see the server log."),
                    drop_cells=True)

