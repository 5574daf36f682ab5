"""The reasoning parser and format detection (core/reasoning.py), without a model: every
format, every split of the text into stream pieces, tags split across tokens."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llamaserve.core.reasoning import ReasoningFormat, ReasoningParser, detect

THINK = ReasoningFormat("<think>", "</think>")
BRACKETS = ReasoningFormat("[THINK]", "[/THINK]")
OPEN = ReasoningFormat("<think>", "</think>", starts_open=True)


def split(fmt: ReasoningFormat, pieces: list[str]) -> tuple[str, str, list[tuple[str, str]]]:
    parser = ReasoningParser(fmt)
    parts = [part for piece in pieces for part in parser.feed(piece)] + parser.finish()
    reasoning = "".join(text for kind, text in parts if kind == "reasoning")
    content = "".join(text for kind, text in parts if kind == "content")
    return reasoning, content, parts


@pytest.mark.parametrize("fmt, text, reasoning, content", [
    (THINK, "<think>I add 2 and 2.</think>4", "I add 2 and 2.", "4"),
    (THINK, "<think>\nStep one.\nStep two.\n</think>\n\nThe answer.", "Step one.\nStep two.",
     "The answer."),
    (THINK, "\n <think>a</think> b", "a", "b"),
    (THINK, "No thinking here.", "", "No thinking here."),
    (THINK, "  An answer that mentions <think>tags</think> later.", "",
     "  An answer that mentions <think>tags</think> later."),
    (THINK, "<think>never closed", "never closed", ""),
    (THINK, "<think></think>Just the answer.", "", "Just the answer."),
    (THINK, "<thi", "", "<thi"),
    (THINK, "", "", ""),
    (BRACKETS, "[THINK]Hmm.[/THINK]Yes.", "Hmm.", "Yes."),
    (OPEN, "Already thinking.\n</think>\n\nDone.", "Already thinking.", "Done."),
    (OPEN, "Thinking that never ends", "Thinking that never ends", ""),
])
def test_reasoning_and_answer_are_split(fmt, text, reasoning, content) -> None:
    assert split(fmt, [text])[:2] == (reasoning, content)


def test_every_character_as_its_own_piece_gives_the_same_split() -> None:
    text = "<think>\nWhy is the sky blue? Rayleigh.\n</think>\n\nBecause of scattering."
    assert split(THINK, list(text))[:2] == split(THINK, [text])[:2]


def test_reasoning_streams_before_the_end_tag_arrives() -> None:
    parser = ReasoningParser(THINK)
    assert parser.feed("<thi") == []
    assert parser.feed("nk>First thought") == [("reasoning", "First thought")]
    assert parser.feed(" and more </th") == [("reasoning", " and more")]
    assert parser.feed("ink>\n\nAns") == [("content", "Ans")]
    assert parser.feed("wer") == [("content", "wer")]
    assert parser.finish() == []


def test_an_answer_without_reasoning_is_not_held_back() -> None:
    parser = ReasoningParser(THINK)
    assert parser.feed("Hello") == [("content", "Hello")]
    assert parser.feed(" <think>") == [("content", " <think>")]


@settings(max_examples=300, deadline=None)
@given(reasoning=st.text(max_size=30), answer=st.text(max_size=30),
       cuts=st.lists(st.integers(0, 80), max_size=8))
def test_any_split_into_pieces_gives_the_split_of_the_whole(
    reasoning: str, answer: str, cuts: list[int]
) -> None:
    text = f"<think>{reasoning}</think>{answer}"
    bounds = sorted({min(c, len(text)) for c in cuts})
    pieces = [text[a:b] for a, b in zip([0, *bounds], [*bounds, len(text)], strict=True)]
    assert split(THINK, pieces)[:2] == split(THINK, [text])[:2]
    if "</think>" not in reasoning and "<think>" not in reasoning:
        got_reasoning, got_answer, _ = split(THINK, [text])
        assert got_reasoning == reasoning.strip()
        assert got_answer == answer.lstrip()


QWEN3_LIKE = """{%- for message in messages %}{%- if message.role == "assistant" %}
{{- '<|im_start|>assistant\\n<think>\\n' + message.reasoning_content + '\\n</think>\\n\\n' }}
{%- endif %}{%- endfor %}
{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}
{%- if enable_thinking is defined and enable_thinking is false %}
{{- '<think>\\n\\n</think>\\n\\n' }}{%- endif %}{%- endif %}"""
R1_DISTILL_LIKE = """{% for message in messages %}{{ message.content }}{% endfor %}
{% if add_generation_prompt %}{{'<｜Assistant｜><think>\\n'}}{% endif %}"""


def never(_: str) -> bool:
    return False


def test_formats_are_detected_from_the_template() -> None:
    assert detect(QWEN3_LIKE, never) == ReasoningFormat("<think>", "</think>")
    assert detect(R1_DISTILL_LIKE, never) == ReasoningFormat("<think>", "</think>",
                                                             starts_open=True)
    assert detect("[THINK]{{ m }}[/THINK]", never) == BRACKETS
    assert detect("{{ messages }}", never) is None
    assert detect(None, never) is None


def test_formats_are_detected_from_single_tokens_in_the_vocabulary() -> None:
    assert detect(None, lambda text: text in {"<think>", "</think>"}) == THINK
    assert detect("{{ messages }}", lambda text: text == "<think>") is None
