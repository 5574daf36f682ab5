"""Speculative decoding, the pure part: where drafts come from, how long they may be, and
which drafted tokens are kept.

A drafting sequence puts its last sampled token plus up to N draft tokens in the step's
batch, with logits for every one. Verification samples the target at each position in order
with the request's own sampler chain (and constraint mask), and keeps going while the
sampled token equals the draft: the first mismatch's sampled token is the correction and the
rest is dropped. For a deterministic proposal (prompt lookup, or a draft model's greedy
choice) this is the exact rule: each emitted token is sampled from the target's own
distribution given the tokens before it, so outputs are those of ordinary decoding (at
temperature 0 identical; with a seed, the same random draws in the same order).

`speculative_accept` is the general rule for a draft *sampled* from a distribution q
(Leviathan et al., Chen et al.): accept with probability min(1, p/q), else resample from
max(0, p - q). The engine's proposals are deterministic, so it only needs `verify`; the
general rule is kept, tested, for a sampled draft model.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

NGRAM_MAX = 3  # longest suffix looked up in the history
# Shortest. Shorter matches propose mostly noise in ordinary text, and on a CPU every drafted
# token costs ~0.6 of a whole step (SmolLM2, one thread: 1, 2, 5, 9 tokens in one decode
# took 1, 1.8, 3.6, 5.4 times one token's time), so noise is not free. Replaying 13 chat
# answers and 2 copy tasks (SmolLM2, temperature 0) under that cost: k = 3 only loses chat
# ~1 % and copies 1.47x faster; k = 2..3 loses chat ~1.6 %, copies 1.47x.
NGRAM_MIN = 3
# Until a sequence's drafts have paid (DraftPolicy.credit > 0), a match must run this many
# tokens back before it is drafted from. Ordinary chat meets 3-token matches (", and the")
# all the time and its drafts from them mostly fail; copying and editing a passage meets long
# ones within a few tokens. Replaying 16 chat answers, 3 copies and 3 edits (SmolLM2,
# temperature 0, a drafted token costing 0.45-0.7 of a step): the worst chat went from 0.95
# to 0.98 of plain decoding's speed, chat on average +2.5 %, copies and edits unchanged.
NGRAM_TRUSTED = 6
FIRST_LENGTH = 2  # a sequence's first draft; wholly accepted drafts double it
DRAFT_COST = 0.6  # of a step, per drafted token (measured on the CPU, see NGRAM_MIN)
CREDIT_MAX = 4.0  # steps saved that a sequence may bank against later failed drafts
MAX_SKIP = 64  # most steps a sequence goes without drafting after drafts that did not pay
BACKOFF = 4  # the skip after the n-th losing draft in a row: BACKOFF**n - 1 steps


def verify(draft: Sequence[int], sample: Callable[[int], int | None]) -> tuple[int, int]:
    """Sample the target at positions 0..len(draft) while it agrees with the draft.

    `sample(i)` returns the target's token at position i (the token after the last sampled
    one, then after draft[0], ...), or None when the sequence ended on it (end of
    generation, stop string, max_tokens). Returns (tokens sampled, draft tokens accepted):
    every sampled token is emitted, and at most one (the correction or the bonus token after
    a wholly accepted draft) is not a draft token.
    """
    sampled = accepted = 0
    for i in range(len(draft) + 1):
        token = sample(i)
        sampled += 1
        if token is None or i == len(draft) or token != draft[i]:
            break
        accepted += 1
    return sampled, accepted


def speculative_accept(
    p: np.ndarray, q: np.ndarray, draft_token: int, rng: np.random.Generator
) -> tuple[int, bool]:
    """One position of standard speculative sampling: the draft token was drawn from `q`;
    keep it with probability min(1, p/q), else draw from the residual max(0, p - q),
    normalized. The returned token is distributed exactly as `p`. Returns (token, kept)."""
    p_token, q_token = float(p[draft_token]), float(q[draft_token])
    if q_token > 0 and rng.random() < min(1.0, p_token / q_token):
        return draft_token, True
    residual = np.maximum(p - q, 0.0)
    total = residual.sum()
    if total <= 0:  # p == q: the draft is always kept, this is not reached in exact math
        residual, total = p, p.sum()
    return int(rng.choice(len(p), p=residual / total)), False


class NgramIndex:
    """Prompt lookup: the most recent earlier occurrence of the history's last k tokens
    (k = NGRAM_MAX down to NGRAM_MIN) and the tokens that followed it.

    The history (prompt plus emitted tokens) only grows; each n-gram maps to where it last
    started with at least one token after it, so a lookup costs a few dict probes."""

    def __init__(self) -> None:
        self.history: list[int] = []
        self._last: dict[tuple[int, ...], int] = {}

    def sync(self, tokens: Sequence[int], extra: int | None = None) -> None:
        """Make the history `tokens` (+ `extra`): `tokens` must extend what was seen."""
        history = self.history
        start = len(history)
        history.extend(tokens[start:])
        if extra is not None:
            history.append(extra)
        for end in range(max(start, 1), len(history)):
            # the n-grams ending just before position `end` now have a follower
            for k in range(NGRAM_MIN, NGRAM_MAX + 1):
                if end - k >= 0:
                    self._last[tuple(history[end - k : end])] = end - k

    def propose(self, limit: int, min_match: int = NGRAM_MIN) -> list[int]:
        """Up to `limit` tokens that followed the latest earlier match of the suffix, if that
        match runs at least `min_match` tokens back."""
        history = self.history
        if limit <= 0:
            return []
        for k in range(NGRAM_MAX, NGRAM_MIN - 1, -1):
            if len(history) <= k:
                continue
            start = self._last.get(tuple(history[-k:]))
            if start is None or self._match_length(start, k, min_match) < min_match:
                continue
            follow = history[start + k : start + k + limit]
            cut = next((i for i, t in enumerate(follow) if t < 0), len(follow))  # image cells
            if cut:
                return follow[:cut]
        return []


    def _match_length(self, start: int, k: int, enough: int) -> int:
        """How far the history's suffix and the k tokens at `start` agree, counted back
        (at least k; counting stops at `enough`)."""
        history, n = self.history, k
        while n < enough and start - (n - k) - 1 >= 0 and \
                history[-n - 1] == history[start - (n - k) - 1]:
            n += 1
        return n


@dataclass
class DraftPolicy:
    """How long a sequence's next draft may be, from how its drafts fared.

    Each drafted token costs about DRAFT_COST of a step and each accepted one saves a step:
    the sequence keeps a running balance of both (capped at CREDIT_MAX, so a long run of
    successes does not buy a long run of failures). While the balance is negative it skips
    drafting for 3, 15, 63 steps (at most MAX_SKIP) after each losing draft. A wholly
    accepted draft doubles the length (at most `n_max`); a partly accepted one sets it to
    what was accepted plus one. Ordinary chat, whose drafts mostly fail, then drafts rarely
    and pays almost nothing; copying from the prompt drafts n_max tokens a step."""

    n_max: int
    trusted: int = NGRAM_TRUSTED  # the shortest match drafted from before drafts have paid
    length: int = 0
    skip: int = 0
    misses: int = 0
    credit: float = 0.0

    def __post_init__(self) -> None:
        self.length = self.length or min(FIRST_LENGTH, self.n_max)

    def min_match(self) -> int:
        """The shortest prompt-lookup match to draft from now (NGRAM_TRUSTED)."""
        return NGRAM_MIN if self.credit > 0 else self.trusted

    def allowed(self) -> int:
        """The draft length for this step (0: do not draft now)."""
        if self.skip > 0:
            self.skip -= 1
            return 0
        return self.length

    def record(self, drafted: int, accepted: int) -> None:
        if drafted == 0:
            return
        if accepted == drafted:
            self.length = min(self.n_max, self.length * 2)
        else:
            self.length = max(1, accepted + 1 if accepted else self.length // 2)
        self.credit = min(CREDIT_MAX, self.credit + accepted - DRAFT_COST * drafted)
        if self.credit >= 0:
            self.misses = 0
        elif accepted < DRAFT_COST * drafted:
            self.misses += 1
            self.skip = min(MAX_SKIP, BACKOFF**self.misses - 1)


@dataclass
class SequenceDrafts:
    """One generating request's speculation state."""

    policy: DraftPolicy
    index: NgramIndex = field(default_factory=NgramIndex)
    draft: list[int] = field(default_factory=list)  # in the current step's batch


def draft_cap(n_max: int, remaining: int, free_cells: int, batch_room: int) -> int:
    """Draft tokens a sequence may put in this step: the emitted tokens (draft + one) never
    exceed what max_tokens leaves, and every drafted token needs a KV cell and a batch
    entry beyond the one for the last sampled token."""
    return max(0, min(n_max, remaining - 1, free_cells - 1, batch_room))
