"""Reasoning ("thinking") models: which tags a model thinks in, and splitting its output into
reasoning and answer as it streams.

A thinking model (Qwen3, DeepSeek-R1 distills, SmolLM3, QwQ: `<think>…</think>`; Magistral:
`[THINK]…[/THINK]`) opens its reply with a reasoning block. The format is read from the chat
template (it writes the tags around past reasoning, or opens the block in the generation
prompt) and from the vocabulary (the tags are single special tokens). Only a block at the very
start of the reply is reasoning: a tag later in the answer is the answer's text.

When the template's generation prompt itself ends inside an open block (DeepSeek-R1 distills:
`<｜Assistant｜><think>\\n`), the reply starts inside the reasoning and only the end tag comes.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal
from weakref import WeakKeyDictionary

from ..engine import BatchEngine

# (start, end) tag pairs, in the order they are tried.
TAG_PAIRS = [("<think>", "</think>"), ("[THINK]", "[/THINK]")]
# The part of a template that renders the generation prompt.
_GENERATION_PROMPT = re.compile(r"if\s+add_generation_prompt\b(.*)$", re.DOTALL)

Part = tuple[Literal["reasoning", "content"], str]


@dataclass(frozen=True)
class ReasoningFormat:
    start: str
    end: str
    starts_open: bool = False  # the prompt opened the block: the reply begins inside it


def detect(template: str | None, single_token: Callable[[str], bool]) -> ReasoningFormat | None:
    """The reasoning format of a model, from its chat template text (None: a named format)
    and `single_token(text)`: whether the vocabulary has `text` as one token."""
    for start, end in TAG_PAIRS:
        opens = _opens_block(template, start, end)
        in_template = template is not None and start in template and end in template
        if opens or in_template or (single_token(start) and single_token(end)):
            return ReasoningFormat(start, end, opens)
    return None


_DETECTED: WeakKeyDictionary[BatchEngine, ReasoningFormat | None] = WeakKeyDictionary()


def model_format(engine: BatchEngine) -> ReasoningFormat | None:
    """The loaded model's reasoning format, detected once per engine (a vocabulary lookup of
    a few characters; the template is the one the engine renders with)."""
    if engine not in _DETECTED:
        _DETECTED[engine] = detect(engine.prompter.template, engine.vocabulary.is_single_token)
    return _DETECTED[engine]


def _opens_block(template: str | None, start: str, end: str) -> bool:
    """Whether the generation prompt ends with the block open: the start tag follows
    `add_generation_prompt` with no end tag after it."""
    match = _GENERATION_PROMPT.search(template or "")
    if match is None:
        return False
    tail = match.group(1)
    opened = tail.rfind(start)
    return opened >= 0 and end not in tail[opened:]


def _partial_suffix(text: str, tag: str) -> int:
    """The length of the longest end of `text` that is a start of `tag` (a tag that may be
    split across tokens)."""
    for size in range(min(len(tag) - 1, len(text)), 0, -1):
        if text.endswith(tag[:size]):
            return size
    return 0


class ReasoningParser:
    """Feeds of model text → parts, each ("reasoning", text) or ("content", text), in order.

    Text is held back only while it may still be a tag, or whitespace around the reasoning
    (trimmed, as llama-server trims it). `finish()` releases what is held at the end of the
    reply; a block that never closes is all reasoning.
    """

    def __init__(self, reasoning_format: ReasoningFormat) -> None:
        self.format = reasoning_format
        self._state = "inside" if reasoning_format.starts_open else "before"
        self._held = ""
        self._started = False  # some reasoning was sent (until then whitespace is trimmed)
        self._answering = False  # some answer was sent (likewise)

    def feed(self, text: str) -> list[Part]:
        self._held += text
        parts: list[Part] = []
        while True:
            if self._state == "before":
                if not self._before():
                    break
            elif self._state == "inside":
                if not self._inside(parts):
                    break
            else:  # after: the answer
                answer = self._held if self._answering else self._held.lstrip()
                self._held = ""
                if answer:
                    self._answering = True
                    parts.append(("content", answer))
                break
        return parts

    def finish(self) -> list[Part]:
        held, self._held = self._held, ""
        if self._state == "inside":
            text = held.rstrip() if self._started else held.strip()
            return [("reasoning", text)] if text else []
        if self._state == "before" and held:
            return [("content", held)]
        answer = held if self._answering else held.lstrip()
        return [("content", answer)] if answer else []

    def _before(self) -> bool:
        """Decide whether the reply opens with the start tag; False: wait for more text."""
        start = self.format.start
        stripped = self._held.lstrip()
        if stripped.startswith(start):
            self._held = stripped[len(start):]
            self._state = "inside"
            return True
        if start.startswith(stripped):  # empty, or a tag still arriving
            return False
        self._state, self._answering = "after", True  # an answer without reasoning, as is
        return True

    def _inside(self, parts: list[Part]) -> bool:
        end = self.format.end
        if not self._started:
            self._held = self._held.lstrip()
        found = self._held.find(end)
        if found >= 0:
            reasoning = self._held[:found].rstrip()
            if reasoning:
                parts.append(("reasoning", reasoning))
            self._held = self._held[found + len(end):]
            self._state = "after"
            return True
        # Send all but a tail that may be the end tag arriving, or trailing whitespace.
        keep = _partial_suffix(self._held, end)
        body = self._held[:len(self._held) - keep]
        sendable = body.rstrip()
        if sendable:
            parts.append(("reasoning", sendable))
            self._started = True
            self._held = self._held[len(sendable):]
        return False
