"""Stop-string matching over streamed pieces (pure logic)."""

from __future__ import annotations

import pytest

from llamaserve.engine.stops import StopMatcher


def run(stops: list[str], pieces: list[str]) -> tuple[str, bool]:
    matcher = StopMatcher(stops)
    out = "".join(matcher.feed(p) for p in pieces)
    if not matcher.stopped:
        out += matcher.flush()
    return out, matcher.stopped


def test_no_stops_passes_everything_through() -> None:
    assert run([], ["a", "b"]) == ("ab", False)


def test_stop_inside_one_piece_cuts_before_it() -> None:
    assert run(["END"], ["hello END world"]) == ("hello ", True)


@pytest.mark.parametrize(
    "pieces", [["ab", "cE", "N", "Dxyz"], ["abcEND"], ["a", "b", "c", "E", "N", "D"]]
)
def test_stop_split_across_pieces_is_never_emitted(pieces: list[str]) -> None:
    assert run(["END"], pieces) == ("abc", True)


def test_partial_match_that_fails_is_released() -> None:
    matcher = StopMatcher(["END"])
    assert matcher.feed("abE") == "ab"  # "E" may start END: held
    assert matcher.feed("x") == "Ex"
    assert not matcher.stopped


def test_held_tail_is_flushed_at_the_end() -> None:
    assert run(["END"], ["abcEN"]) == ("abcEN", False)


def test_earliest_of_several_stops_wins() -> None:
    assert run(["world", "lo"], ["hello world"]) == ("hel", True)


def test_nothing_after_stop() -> None:
    matcher = StopMatcher(["."])
    assert matcher.feed("Hi. There") == "Hi"
    assert matcher.feed("more") == ""


def test_matcher_names_the_stop_that_matched() -> None:
    matcher = StopMatcher(["world", "lo", "xyz"])
    assert matcher.matched is None
    matcher.feed("hel")
    assert matcher.matched is None
    matcher.feed("lo world")
    assert matcher.matched == "lo"  # the earliest in the text, not the first in the list


def test_no_match_leaves_matched_empty() -> None:
    matcher = StopMatcher(["END"])
    matcher.feed("abcEN")
    matcher.flush()
    assert matcher.matched is None
