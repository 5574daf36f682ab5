"""Prefill with llama.cpp's full-size micro-batches (the default, without --deterministic): a
repeated request gives its first run's output although its repeat starts from the prefix cache
(the last prompt token is decoded in a small batch of its own either way)."""

from __future__ import annotations

import uuid
from types import SimpleNamespace

import openai
import pytest

from llamaserve.engine.options import micro_batch
from llamaserve.settings import Settings, load_options

TOPICS = ["rivers", "bread", "trains", "bees", "glaciers", "violins", "harbours", "owls"]


def test_a_repeated_request_repeats_its_output_from_the_prefix_cache(
    client: openai.OpenAI,
) -> None:
    for topic in TOPICS:
        # ~230 tokens, evaluated in one micro-batch; a nonce keeps earlier tests' cells out
        prompt = (f"Note {uuid.uuid4().hex}. " + f"This is a long essay about {topic}. " * 25
                  + f"In short, {topic}")
        first, again = (client.completions.create(model="smollm2", prompt=prompt, max_tokens=32,
                                                  temperature=0) for _ in range(2))
        assert first.usage.prompt_tokens_details.cached_tokens < 8  # type: ignore[union-attr]
        assert again.usage.prompt_tokens_details.cached_tokens == \
            first.usage.prompt_tokens - 1  # type: ignore[union-attr]
        assert again.choices[0].text == first.choices[0].text, topic


def test_deterministic_and_cache_types_reach_the_load_options(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    spec = SimpleNamespace(context=None, chat_format=None, chat_handler=None)
    default = load_options(Settings(), spec)  # type: ignore[arg-type]
    assert (default.deterministic, default.cache_type_k, default.cache_type_v) == \
        (False, "f16", "f16")
    assert micro_batch(0, default.deterministic) == 512
    monkeypatch.setenv("LLAMASERVE_DETERMINISTIC", "true")
    monkeypatch.setenv("LLAMASERVE_CACHE_TYPE_V", "q4_0")
    chosen = load_options(Settings(cache_type_k="q8_0"), spec)  # type: ignore[arg-type]
    assert (chosen.deterministic, chosen.cache_type_k, chosen.cache_type_v) == \
        (True, "q8_0", "q4_0")
    assert micro_batch(0, chosen.deterministic) == 63
    assert micro_batch(-1, chosen.deterministic) == 512  # a GPU: llama.cpp's kernels decide
