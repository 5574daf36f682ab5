"""POST /v1/completions against SmolLM2."""

from __future__ import annotations

import httpx
import openai


def test_completion_continues_the_prompt(client: openai.OpenAI) -> None:
    completion = client.completions.create(
        model="smollm2", prompt="The capital of France is", max_tokens=8, temperature=0
    )
    assert completion.object == "text_completion"
    assert completion.id.startswith("cmpl-")
    choice = completion.choices[0]
    assert choice.text.strip()
    assert choice.finish_reason in ("stop", "length")
    assert completion.usage is not None and completion.usage.completion_tokens <= 8


def test_completion_default_max_tokens_is_16(client: openai.OpenAI) -> None:
    completion = client.completions.create(
        model="smollm2",
        prompt="Once upon a time, in a land far away,",
        temperature=0,
    )
    assert completion.usage is not None
    assert completion.usage.completion_tokens <= 16
    if completion.choices[0].finish_reason == "length":
        assert completion.usage.completion_tokens == 16


def test_completion_stream_matches_non_stream(client: openai.OpenAI) -> None:
    kwargs = dict(model="smollm2", prompt="One, two, three,", max_tokens=12, temperature=0)
    whole = client.completions.create(**kwargs).choices[0].text
    chunks = list(client.completions.create(stream=True, **kwargs))
    assert "".join(c.choices[0].text for c in chunks if c.choices) == whole
    assert chunks[-1].choices[0].finish_reason in ("stop", "length")


def test_completion_accepts_token_ids(client: openai.OpenAI, http: httpx.Client) -> None:
    text = client.completions.create(
        model="smollm2", prompt="Hello, my name is", max_tokens=6, temperature=0
    )
    prompt_tokens = text.usage.prompt_tokens
    # the same prompt as ids: SmolLM2's tokenizer adds no BOS, so the ids are the text's tokens
    ids = http.post(
        "/v1/completions",
        json={
            "model": "smollm2",
            "prompt": [19556, 28, 957, 1462, 314],
            "max_tokens": 6,
            "temperature": 0,
        },
    ).json()
    assert ids["usage"]["prompt_tokens"] == 5
    assert prompt_tokens == 5
    assert ids["choices"][0]["text"] == text.choices[0].text


def test_completion_list_of_prompts_gives_one_choice_each(client: openai.OpenAI) -> None:
    completion = client.completions.create(
        model="smollm2", prompt=["Red, green,", "Monday, Tuesday,"], max_tokens=4, temperature=0
    )
    assert [c.index for c in completion.choices] == [0, 1]
    assert all(c.text for c in completion.choices)
