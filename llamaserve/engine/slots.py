"""Choosing a sequence (slot) for a new request: a pure function over token lists.

A slot is a llama.cpp sequence id whose KV cells still hold the tokens of its last request
(the prefix cache). A new request takes a free slot and keeps the longest prefix of its
prompt that the slot already holds; when another slot (even a busy one) holds much more,
that slot's cells are copied over first, which is cheaper than evaluating the prefix again.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

REUSE_MARGIN = 32  # cached tokens that justify leaving the lowest free slot, or a copy
MIN_REUSE = 8  # (for a short prompt, half of it, but at least this many)


@dataclass(frozen=True)
class SlotView:
    """What the chooser needs to know of one slot."""

    seq: int
    tokens: Sequence[int]  # what its KV cells hold, in position order
    free: bool
    first_pos: int = 0  # the lowest position still in its cells (a sliding window drops some)


@dataclass(frozen=True)
class Placement:
    seq: int  # the slot the request takes
    cached: int  # prompt tokens already in its cells (after the copy, if any)
    copy_from: int | None = None  # copy this slot's cells into `seq` first


def common_prefix(cached: Sequence[int], prompt: np.ndarray, limit: int) -> int:
    """How many leading tokens of `prompt` (at most `limit`) `cached` holds."""
    n = min(len(cached), limit)
    if n <= 0:
        return 0
    same = np.asarray(cached[:n], dtype=np.int64) == prompt[:n]
    return n if same.all() else int(np.argmin(same))


def choose_slot(
    prompt: Sequence[int], slots: Sequence[SlotView], reusable: int, window: int = 0
) -> Placement:
    """Where a request with `prompt` goes, reusing at most `reusable` cached tokens (the last
    prompt token is always evaluated for its logits; images and echo with logprobs limit it
    further). `window` is the model's sliding window (0: none): a slot whose cells have left
    the window cannot serve a long prefix.

    The lowest free sequence id is preferred: llama.cpp decodes the sequences of a step in
    one micro-batch only when their ids are consecutive. Another free slot is taken when its
    cache saves enough more (REUSE_MARGIN, or half a short prompt); a busy or other slot's
    cells are copied when they save that much over the chosen free one.
    """
    free = [slot for slot in slots if slot.free]
    if not free:
        raise ValueError("no free slot")
    tokens = np.asarray(prompt, dtype=np.int64)

    def usable(slot: SlotView) -> int:
        common = common_prefix(slot.tokens, tokens, reusable)
        if common and window and slot.first_pos > max(0, common - window):
            return 0
        return common

    common = {slot.seq: usable(slot) for slot in slots}
    margin = max(MIN_REUSE, min(REUSE_MARGIN, len(prompt) // 2))
    target = free[0]
    best_free = max(free, key=lambda s: common[s.seq])
    if common[best_free.seq] >= common[target.seq] + margin:
        target = best_free
    cached = common[target.seq]
    source = max(slots, key=lambda s: common[s.seq])
    if source.seq != target.seq and common[source.seq] >= cached + margin:
        return Placement(target.seq, common[source.seq], copy_from=source.seq)
    return Placement(target.seq, cached)
