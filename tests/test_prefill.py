"""Prefill with llama.cpp's full-size micro-batches (the default, without --deterministic): a
repeated request gives its first run's output although its repeat starts from the prefix cache
(the last prompt token is decoded in a small batch of its own either way)."""

from __future__ import annotations

import uuid

import openai

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
