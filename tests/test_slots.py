"""Slot choice for the prefix cache: a pure function, tested without a model."""

from __future__ import annotations

import numpy as np
import pytest

from llamaserve.engine.slots import Placement, SlotView, choose_slot, common_prefix

PROMPT = list(range(100, 200))  # 100 tokens


def views(*slots: tuple[list[int], bool]) -> list[SlotView]:
    return [SlotView(seq, tokens, free) for seq, (tokens, free) in enumerate(slots)]


def test_common_prefix_stops_at_the_first_difference_and_the_limit() -> None:
    prompt = np.asarray(PROMPT)
    assert common_prefix(PROMPT[:40] + [0, 0], prompt, 99) == 40
    assert common_prefix(PROMPT, prompt, 99) == 99
    assert common_prefix([], prompt, 99) == 0
    assert common_prefix(PROMPT, prompt, 0) == 0


def test_empty_cache_takes_the_lowest_free_slot() -> None:
    slots = views(([], False), ([], True), ([], True))
    assert choose_slot(PROMPT, slots, reusable=99) == Placement(1, 0)


def test_the_lowest_free_slot_wins_unless_another_saves_enough() -> None:
    small_gain = views((PROMPT[:10], True), (PROMPT[:30], True))
    assert choose_slot(PROMPT, small_gain, reusable=99) == Placement(0, 10)
    big_gain = views((PROMPT[:10], True), (PROMPT[:60], True))
    assert choose_slot(PROMPT, big_gain, reusable=99) == Placement(1, 60)


def test_a_busy_slot_with_a_long_prefix_is_copied() -> None:
    slots = views((PROMPT[:80] + [1, 2, 3], False), ([], True))
    assert choose_slot(PROMPT, slots, reusable=99) == Placement(1, 80, copy_from=0)


def test_no_copy_when_it_saves_too_little() -> None:
    slots = views((PROMPT[:20], False), (PROMPT[:5], True))
    assert choose_slot(PROMPT, slots, reusable=99) == Placement(1, 5)


def test_short_prompts_need_half_their_length_to_move_or_copy() -> None:
    prompt = PROMPT[:20]  # margin = max(8, min(32, 10)) = 10
    slots = views(([], True), (prompt[:9], True), (prompt[:15], False))
    assert choose_slot(prompt, slots, reusable=19) == Placement(0, 15, copy_from=2)
    slots = views(([], True), (prompt[:9], True))
    assert choose_slot(prompt, slots, reusable=19) == Placement(0, 0)


def test_reuse_is_limited() -> None:
    slots = views((PROMPT, True),)
    assert choose_slot(PROMPT, slots, reusable=99) == Placement(0, 99)  # last token evaluated
    assert choose_slot(PROMPT, slots, reusable=40) == Placement(0, 40)  # e.g. an image at 40
    assert choose_slot(PROMPT, slots, reusable=0) == Placement(0, 0)  # cache_prompt: false


def test_cells_that_left_a_sliding_window_are_not_reused() -> None:
    kept = [SlotView(0, PROMPT, True, first_pos=0)]
    assert choose_slot(PROMPT, kept, reusable=99, window=32) == Placement(0, 99)
    dropped = [SlotView(0, PROMPT, True, first_pos=80)]  # 80 > 99 - 32
    assert choose_slot(PROMPT, dropped, reusable=99, window=32) == Placement(0, 0)


def test_no_free_slot_is_an_error() -> None:
    with pytest.raises(ValueError):
        choose_slot(PROMPT, views(([], False)), reusable=99)
