"""Reasoning models on chat completions: SmolLM2 with a chat template that declares think tags
(a GGUF copy, tests/builders), made to think by a grammar, so what llama.cpp generates is really
parsed and streamed: `message.reasoning_content` / `reasoning`, `delta.reasoning_content`,
tool calls after reasoning, `reasoning_effort: "none"`, earlier reasoning in the history, and
`--reasoning-format none`."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from .builders import write_with_template
from .conftest import LiveServer, start_server

# SmolLM2's own template, plus what Qwen3's does with thinking: earlier reasoning in <think>
# tags, and `enable_thinking` false writing an empty block into the generation prompt.
THINKING_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging "
    "Face<|im_end|>\n' }}{% endif %}{{ '<|im_start|>' + message['role'] + '\n' }}"
    "{% if message.reasoning_content %}"
    "{{ '<think>\n' + message.reasoning_content + '\n</think>\n\n' }}{% endif %}"
    "{{ message['content'] + '<|im_end|>' + '\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}"
    "{% if enable_thinking is defined and enable_thinking is false %}"
    "{{ '<think>\n\n</think>\n\n' }}{% endif %}{% endif %}"
)
# "<think>" is plain text to SmolLM2: the tags arrive split across several tokens.
THINK_GRAMMAR = r'''root ::= "<think>\n" words "\n</think>\n\n" words
words ::= [a-z]{1,8} (" " [a-z]{1,8}){2,5}'''
TOOL_GRAMMAR = r'''root ::= "<think>" [a-z]{1,8} (" " [a-z]{1,8}){1,3} "</think>\n" call
call ::= "<tool_call>\n{\"name\": \"get_weather\", " arguments "}\n</tool_call>"
arguments ::= "\"arguments\": {\"city\": \"Paris\"}"'''
WEATHER_TOOL = {"type": "function", "function": {
    "name": "get_weather", "parameters": {"type": "object",
                                          "properties": {"city": {"type": "string"}}}}}
ASK = [{"role": "user", "content": "What is two plus two?"}]


@pytest.fixture(scope="module")
def thinking_model(smollm2_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_with_template(smollm2_path,
                               tmp_path_factory.mktemp("thinking") / "smollm2-thinking.gguf",
                               THINKING_TEMPLATE)


def serve(path: Path, directory: Path, env: dict[str, str] | None = None) -> LiveServer:
    return start_server([str(path), "--alias", "thinker", "--ctx", "1024"], directory, env)


@pytest.fixture(scope="module")
def thinker(thinking_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[
    LiveServer
]:
    live = serve(thinking_model, tmp_path_factory.mktemp("thinker"))
    yield live
    live.stop()


@pytest.fixture(scope="module")
def client(thinker: LiveServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=thinker.v1, api_key="IGNORED", max_retries=0, timeout=120)


@pytest.fixture(scope="module")
def raw(thinker: LiveServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=thinker.base_url, timeout=120) as http:
        yield http


def think(client: openai.OpenAI, **fields: object):
    return client.chat.completions.create(
        model="thinker", messages=ASK, max_tokens=80, temperature=0,
        extra_body={"grammar": THINK_GRAMMAR, **fields.pop("extra_body", {})},  # type: ignore
        **fields)


def test_reasoning_is_split_from_the_answer(client: openai.OpenAI) -> None:
    message = think(client).choices[0].message
    reasoning = message.reasoning_content  # type: ignore[attr-defined]
    assert reasoning and "<think>" not in reasoning and "</think>" not in reasoning
    assert reasoning == reasoning.strip() and reasoning.replace(" ", "").isalpha()
    assert message.reasoning == reasoning  # type: ignore[attr-defined]
    assert message.content and "think>" not in message.content
    assert message.content.replace(" ", "").isalpha()


def test_streamed_reasoning_comes_first_and_adds_up_to_the_folded_answer(
    client: openai.OpenAI,
) -> None:
    folded = think(client).choices[0].message
    reasoning, content, order = [], [], []
    for chunk in think(client, stream=True):
        for choice in chunk.choices:
            delta = choice.delta
            piece = getattr(delta, "reasoning_content", None)
            if piece:
                assert getattr(delta, "reasoning", None) == piece
                reasoning.append(piece)
                order.append("reasoning")
            if delta.content:
                content.append(delta.content)
                order.append("content")
    assert "".join(reasoning) == folded.reasoning_content  # type: ignore[attr-defined]
    assert "".join(content) == folded.content
    assert order == sorted(order, key=lambda kind: kind != "reasoning")
    assert order.count("reasoning") > 1  # streamed as it came, not in one piece at the end


def test_a_reply_without_reasoning_has_no_reasoning_fields(raw: httpx.Client) -> None:
    response = raw.post("/v1/chat/completions", json={
        "model": "thinker", "messages": ASK, "max_tokens": 8, "temperature": 0})
    message = response.json()["choices"][0]["message"]
    assert "reasoning_content" not in message and "reasoning" not in message
    assert message["content"]


def test_a_tool_call_after_reasoning_still_parses(client: openai.OpenAI) -> None:
    response = client.chat.completions.create(
        model="thinker", messages=[{"role": "user", "content": "Weather in Paris?"}],
        tools=[WEATHER_TOOL], max_tokens=80, temperature=0,
        extra_body={"grammar": TOOL_GRAMMAR})
    choice = response.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.reasoning_content  # type: ignore[attr-defined]
    call = choice.message.tool_calls[0]  # type: ignore[index]
    assert call.function.name == "get_weather"
    assert call.function.arguments == '{"city": "Paris"}'


def test_reasoning_effort_none_asks_the_template_not_to_think(raw: httpx.Client) -> None:
    def prompt_tokens(**fields: object) -> int:
        response = raw.post("/v1/chat/completions", json={
            "model": "thinker", "messages": ASK, "max_tokens": 1, **fields})
        assert response.status_code == 200, response.text
        return response.json()["usage"]["prompt_tokens"]

    # the template's enable_thinking switch writes an empty <think></think> into the prompt
    assert prompt_tokens(reasoning_effort="none") > prompt_tokens()
    assert prompt_tokens(reasoning_effort="high") == prompt_tokens()
    bad = raw.post("/v1/chat/completions", json={"model": "thinker", "messages": ASK,
                                                 "reasoning_effort": "extreme"})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "reasoning_effort"


@pytest.mark.parametrize("field", ["reasoning_content", "reasoning"])
def test_earlier_reasoning_in_the_history_is_templated(raw: httpx.Client, field: str) -> None:
    def prompt_tokens(assistant: dict) -> int:
        messages = [*ASK, {"role": "assistant", **assistant},
                    {"role": "user", "content": "And three plus three?"}]
        response = raw.post("/v1/chat/completions", json={
            "model": "thinker", "messages": messages, "max_tokens": 1})
        assert response.status_code == 200, response.text
        return response.json()["usage"]["prompt_tokens"]

    plain = prompt_tokens({"content": "Four."})
    assert prompt_tokens({"content": "Four.", field: "two and two make four"}) > plain + 5


def test_reasoning_format_none_leaves_the_tags_in_the_content(
    thinking_model: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    live = serve(thinking_model, tmp_path_factory.mktemp("no-reasoning"),
                 env={"LLAMASERVE_REASONING_FORMAT": "none"})
    try:
        with openai.OpenAI(base_url=live.v1, api_key="X", max_retries=0) as plain:
            message = think(plain).choices[0].message
    finally:
        live.stop()
    assert message.content and message.content.startswith("<think>\n")
    assert "</think>" in message.content
    assert getattr(message, "reasoning_content", None) is None


def test_a_model_whose_template_has_no_think_tags_keeps_them_in_content(
    http: httpx.Client,
) -> None:
    response = http.post("/v1/chat/completions", json={
        "model": "smollm2", "messages": ASK, "max_tokens": 80, "temperature": 0,
        "grammar": THINK_GRAMMAR})
    message = response.json()["choices"][0]["message"]
    assert message["content"].startswith("<think>") and "reasoning_content" not in message
