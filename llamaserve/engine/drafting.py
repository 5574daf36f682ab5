"""Speculative decoding in the scheduler: which sequences draft this step and what they
propose (prompt lookup, or a draft model), with the running counts /metrics reports. The
rules themselves are pure functions in speculative.py."""

from __future__ import annotations

import logging
import threading

from .jobs import Job
from .speculative import DraftPolicy, SequenceDrafts, draft_cap

logger = logging.getLogger(__name__)

MODES = ("auto", "ngram", "draft", "off")


class Speculation:
    """One engine's drafting: per sequence, adaptive, capped by what the sequence may still
    emit, its free KV cells and the batch's room (scheduler thread, except `counts`)."""

    def __init__(self, mode: str, draft_max: int, n_ctx: int, enabled: bool = True) -> None:
        if mode not in MODES:
            raise ValueError(f"unknown speculative mode '{mode}': use one of {', '.join(MODES)}")
        self.mode = mode if enabled and draft_max > 0 else "off"
        self.draft_max = draft_max
        self.n_ctx = n_ctx
        self.drafted = 0
        self.accepted = 0
        self._lock = threading.Lock()

    @property
    def active(self) -> bool:
        return self.mode != "off"

    def propose(self, job: Job, room: int) -> list[int]:
        """Draft tokens to decode after `job.pending` this step (empty: none)."""
        slot = job.slot
        if not self.active or slot is None or job.pending is None:
            return []
        drafts = job.drafts
        if drafts is None:
            drafts = job.drafts = SequenceDrafts(DraftPolicy(self.draft_max))
        cap = draft_cap(drafts.policy.allowed(), job.limit - job.generated,
                        self.n_ctx - slot.cells, room)
        if cap <= 0:
            drafts.draft = []
            return []
        drafts.index.sync(slot.tokens, job.pending)
        drafts.draft = drafts.index.propose(cap)
        return drafts.draft

    def record(self, job: Job, accepted: int) -> None:
        drafts = job.drafts
        if drafts is None or not drafts.draft:
            return
        drafts.policy.record(len(drafts.draft), accepted)
        with self._lock:
            self.drafted += len(drafts.draft)
            self.accepted += accepted
        drafts.draft = []

    def counts(self) -> tuple[int, int]:
        """(draft tokens proposed, of which accepted) since the model was loaded."""
        with self._lock:
            return self.drafted, self.accepted
