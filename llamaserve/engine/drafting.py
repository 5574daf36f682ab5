"""Speculative decoding in the scheduler: which sequences draft this step and what they
propose (prompt lookup, or a draft model), with the running counts /metrics reports. The
rules themselves are pure functions in speculative.py."""

from __future__ import annotations

import logging
import threading

from .draft_model import DraftModel
from .jobs import Job
from .speculative import DraftPolicy, SequenceDrafts, draft_cap

logger = logging.getLogger(__name__)

MODES = ("auto", "ngram", "draft", "off")


class Speculation:
    """One engine's drafting: per sequence, adaptive, capped by what the sequence may still
    emit, its free KV cells and the batch's room (scheduler thread, except `counts`)."""

    def __init__(
        self, mode: str, draft_max: int, n_ctx: int, enabled: bool = True,
        draft_model: DraftModel | None = None,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"unknown speculative mode '{mode}': use one of {', '.join(MODES)}")
        if mode == "draft" and draft_model is None:
            raise ValueError("--speculative draft needs a draft model: give --draft MODEL (or a "
                             "catalog entry's 'draft')")
        if mode == "auto":
            mode = "draft" if draft_model is not None else "ngram"
        self.mode = mode if enabled and draft_max > 0 else "off"
        self.draft_model = draft_model if self.mode == "draft" else None
        self._loaded = draft_model  # closed with the engine, used or not
        self.draft_max = draft_max
        self.n_ctx = n_ctx
        self.drafted = 0
        self.accepted = 0
        self._lock = threading.Lock()

    @property
    def active(self) -> bool:
        return self.mode != "off"

    def plan(self, jobs: list[Job], room: int) -> None:
        """Set each job's draft for this step (`job.drafts.draft`, maybe empty): `jobs` have a
        pending token each, and their drafts share `room` batch entries."""
        if not self.active:
            return
        wanted: dict[int, tuple[Job, int]] = {}
        for job in jobs:
            slot = job.slot
            assert slot is not None and job.pending is not None
            drafts = job.drafts
            if drafts is None:
                drafts = job.drafts = SequenceDrafts(DraftPolicy(self.draft_max))
            drafts.draft = []
            cap = draft_cap(drafts.policy.allowed(), job.limit - job.generated,
                            self.n_ctx - slot.cells, room)
            if cap <= 0:
                continue
            if self.draft_model is None or job.media is not None:
                drafts.index.sync(slot.tokens, job.pending)
                drafts.draft = drafts.index.propose(cap, drafts.policy.min_match())
            else:
                wanted[slot.seq] = (job, cap)
            room -= len(drafts.draft) if self.draft_model is None else cap
        if wanted:
            assert self.draft_model is not None
            try:
                proposed = self.draft_model.propose(
                    {seq: ([*job.slot.tokens, job.pending], cap)  # type: ignore[union-attr]
                     for seq, (job, cap) in wanted.items()})
            except RuntimeError:  # drafts are an optimisation: the model decides alone
                logger.exception("the draft model failed; these sequences do not draft now")
                return
            for seq, draft in proposed.items():
                drafts = wanted[seq][0].drafts
                assert drafts is not None
                drafts.draft = draft

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

    def close(self) -> None:
        if self._loaded is not None:
            self._loaded.close()
