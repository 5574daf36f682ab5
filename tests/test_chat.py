"""POST /v1/chat/completions against SmolLM2, with the official openai client and raw HTTP."""

from __future__ import annotations

import json

import httpx
import openai

from .conftest import LiveServer

MESSAGES = [{"role": "user", "content": "Say this is a test"}]


def test_chat_completion_answers_with_text_and_exact_usage(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(model="smollm2", messages=MESSAGES, max_tokens=24)
    assert completion.object == "chat.completion"
    assert completion.id.startswith("chatcmpl-")
    assert completion.model == "smollm2"
    assert completion.system_fingerprint
    choice = completion.choices[0]
    assert choice.index == 0
    assert choice.message.role == "assistant"
    assert choice.message.content and choice.message.content.strip()
    assert choice.finish_reason in ("stop", "length")
    usage = completion.usage
    assert usage is not None and usage.prompt_tokens > 5
    assert 0 < usage.completion_tokens <= 24
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


def test_chat_max_tokens_ends_with_length(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(
        model="smollm2",
        messages=[{"role": "user", "content": "Write a long story about a dragon."}],
        max_tokens=5,
        temperature=0,
    )
    assert completion.choices[0].finish_reason == "length"
    assert completion.usage is not None and completion.usage.completion_tokens == 5


def test_chat_temperature_zero_is_deterministic(client: openai.OpenAI) -> None:
    def ask() -> str | None:
        return (
            client.chat.completions.create(
                model="smollm2", messages=MESSAGES, max_tokens=16, temperature=0
            )
            .choices[0]
            .message.content
        )

    assert ask() == ask()


def test_chat_system_and_multi_turn_messages(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(
        model="smollm2",
        messages=[
            {"role": "system", "content": "You are a terse assistant."},
            {"role": "user", "content": "What is the capital of France?"},
            {"role": "assistant", "content": "Paris."},
            {"role": "user", "content": [{"type": "text", "text": "And of Italy?"}]},
        ],
        max_tokens=12,
        temperature=0,
    )
    assert completion.choices[0].message.content


def test_chat_stream_chunks_concatenate_to_the_answer(client: openai.OpenAI) -> None:
    kwargs = dict(model="smollm2", messages=MESSAGES, max_tokens=20, temperature=0)
    whole = client.chat.completions.create(**kwargs).choices[0].message.content
    chunks = list(client.chat.completions.create(stream=True, **kwargs))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert len({c.id for c in chunks}) == 1 and len({c.created for c in chunks}) == 1
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert text == whole
    assert chunks[-1].choices[0].finish_reason in ("stop", "length")


def test_chat_stream_is_server_sent_events_ending_in_done(http: httpx.Client) -> None:
    body = {"model": "smollm2", "messages": MESSAGES, "max_tokens": 8, "stream": True}
    with http.stream("POST", "/v1/chat/completions", json=body) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in response.iter_lines() if line]
    assert all(line.startswith("data: ") for line in lines)
    assert lines[-1] == "data: [DONE]"
    for line in lines[:-1]:
        assert json.loads(line[len("data: ") :])["object"] == "chat.completion.chunk"


def test_chat_stream_include_usage_sends_a_final_usage_chunk(client: openai.OpenAI) -> None:
    chunks = list(
        client.chat.completions.create(
            model="smollm2",
            messages=MESSAGES,
            max_tokens=6,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    last = chunks[-1]
    assert last.choices == []
    assert last.usage is not None and last.usage.completion_tokens <= 6
    assert last.usage.total_tokens == last.usage.prompt_tokens + last.usage.completion_tokens
    assert all(c.usage is None for c in chunks[:-1])


def test_chat_stop_string_is_not_in_output(client: openai.OpenAI) -> None:
    kwargs = dict(model="smollm2", messages=[{"role": "user", "content": "Count from 1 to 10."}],
                  max_tokens=40, temperature=0)
    free = client.chat.completions.create(**kwargs).choices[0].message.content
    stop = free.split()[3]
    stopped = client.chat.completions.create(stop=[stop], **kwargs).choices[0]
    assert stop not in stopped.message.content
    assert free.startswith(stopped.message.content)
    assert stopped.finish_reason == "stop"


def test_chat_trailing_slash_route_answers_directly(server: LiveServer) -> None:
    body = {"model": "smollm2", "messages": MESSAGES, "max_tokens": 4}
    response = httpx.post(f"{server.base_url}/v1/chat/completions/", json=body, timeout=60)
    assert response.status_code == 200
    assert response.json()["choices"][0]["message"]["role"] == "assistant"


def test_chat_model_alias_from_catalog_is_served(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(
        model="gpt-3.5-turbo", messages=MESSAGES, max_tokens=4
    )
    assert completion.model == "gpt-3.5-turbo"
    assert completion.choices[0].message.content is not None
