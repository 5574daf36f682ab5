"""Every error is OpenAI-shaped with the right status; none is a 500, none kills the server."""

from __future__ import annotations

import time

import httpx
import openai
import pytest

from .conftest import assert_openai_error

CHAT = "/v1/chat/completions"
GOOD = {"model": "smollm2", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}


def test_malformed_json_is_400(http: httpx.Client) -> None:
    response = http.post(
        CHAT,
        content=b'{"model": "smollm2", "messages": [',
        headers={"Content-Type": "application/json"},
    )
    error = assert_openai_error(response, 400)
    assert error["type"] == "invalid_request_error"
    assert error["code"] == "invalid_json"


def test_non_object_json_is_400(http: httpx.Client) -> None:
    assert_openai_error(http.post(CHAT, json=[1, 2, 3]), 400)


@pytest.mark.parametrize(
    ("change", "param"),
    [
        ({"temperature": 3}, "temperature"),
        ({"top_p": -0.1}, "top_p"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"presence_penalty": 2.5}, "presence_penalty"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "wizard", "content": "hi"}]}, "messages[0]"),
        ({"messages": [{"role": "user"}]}, "messages[0].content"),
        ({"model": 7}, "model"),
    ],
)
def test_invalid_field_is_400_naming_the_field(
    http: httpx.Client, change: dict, param: str
) -> None:
    error = assert_openai_error(http.post(CHAT, json={**GOOD, **change}), 400)
    assert error["param"] == param, error


def test_missing_required_field_is_400_not_422(http: httpx.Client) -> None:
    error = assert_openai_error(http.post(CHAT, json={"model": "smollm2"}), 400)
    assert error["param"] == "messages"
    assert "Missing required parameter" in error["message"]


def test_unknown_model_is_404(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(model="gpt-17", messages=GOOD["messages"])
    assert caught.value.code == "model_not_found"
    assert "gpt-17" in caught.value.message


def test_unknown_route_is_404(http: httpx.Client) -> None:
    assert_openai_error(http.post("/v1/engines/davinci/completions", json={}), 404)


def test_wrong_method_is_405(http: httpx.Client) -> None:
    response = http.get(CHAT)
    assert_openai_error(response, 405)
    assert "POST" in response.headers.get("allow", "")


def test_oversized_body_is_413(http: httpx.Client) -> None:
    huge = {**GOOD, "messages": [{"role": "user", "content": "x" * (2 * 1024 * 1024)}]}
    error = assert_openai_error(http.post(CHAT, json=huge), 413)
    assert error["code"] == "request_too_large"


def test_oversized_chunked_body_is_413(http: httpx.Client) -> None:
    def chunks():
        for _ in range(40):
            yield b"x" * 65536

    response = http.post(CHAT, content=chunks(), headers={"Content-Type": "application/json"})
    assert_openai_error(response, 413)


def test_prompt_longer_than_context_is_400_with_token_counts(http: httpx.Client) -> None:
    long = {**GOOD, "messages": [{"role": "user", "content": "hello " * 1500}]}
    error = assert_openai_error(http.post(CHAT, json=long), 400)
    assert "1024" in error["message"]  # the context size the test server runs with
    assert "tokens" in error["message"]


def test_prompt_plus_max_tokens_over_context_is_400(http: httpx.Client) -> None:
    error = assert_openai_error(http.post(CHAT, json={**GOOD, "max_tokens": 5000}), 400)
    assert error["param"] == "max_tokens"


def test_seed_request_with_empty_functions_is_accepted(http: httpx.Client) -> None:
    response = http.post(CHAT, json={**GOOD, "functions": []})
    assert response.status_code == 200, response.text


def test_image_to_text_model_is_400(http: httpx.Client) -> None:
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}
    body = {
        **GOOD,
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "What is this?"}, image]}
        ],
    }
    error = assert_openai_error(http.post(CHAT, json=body), 400)
    assert "does not accept images" in error["message"]
    assert error["param"] == "messages[0].content[1]"


def test_server_still_serves_after_errors(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(**GOOD)
    assert completion.choices[0].message.content is not None


def test_client_disconnect_stops_generation(server, http: httpx.Client) -> None:
    body = {
        "model": "smollm2",
        "stream": True,
        "max_tokens": 900,
        "temperature": 1,
        "messages": [{"role": "user", "content": "Write a very long essay about rivers."}],
    }
    with http.stream("POST", CHAT, json=body) as response:
        lines = response.iter_lines()
        for _ in range(3):
            next(lines)
    # The server notices the closed connection and ends the generation early.
    deadline = time.monotonic() + 20
    while "generation cancelled" not in server.log() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "generation cancelled" in server.log()
    completion = http.post(CHAT, json=GOOD)
    assert completion.status_code == 200
