"""POST /tokenize and /detokenize (and their /v1/ spellings) in llama-server's shapes, on the
real SmolLM2 over HTTP, checked against SmolLM2's own tokenizer. The embedding-only models'
tokenizing is in test_rerank.py, beside the tiny reranker."""

from __future__ import annotations

import httpx
import pytest

from .conftest import assert_openai_error

TEXTS = [
    "Hello, world!",
    "  leading spaces and\ttabs\nand newlines",
    "Ünïcödé, 日本語 and an emoji 🦙🦙",
    "",
]


def tokenize(http: httpx.Client, content: object, path: str = "/tokenize", **fields: object):
    response = http.post(path, json={"content": content, **fields})
    assert response.status_code == 200, response.text
    return response.json()["tokens"]


def detokenize(http: httpx.Client, tokens: list[int], path: str = "/detokenize") -> str:
    response = http.post(path, json={"tokens": tokens})
    assert response.status_code == 200, response.text
    return response.json()["content"]


@pytest.mark.parametrize("text", TEXTS)
def test_tokenize_equals_the_models_own_tokenizer(http: httpx.Client, tokenizer, text: str) -> None:
    expected = tokenizer.tokenize(text.encode(), add_bos=False, special=True)
    assert tokenize(http, text) == expected
    assert tokenize(http, text, "/v1/tokenize", model="smollm2") == expected


def test_add_special_asks_for_the_models_own_special_tokens(http: httpx.Client, tokenizer) -> None:
    # SmolLM2's header says add_bos_token false: the answer is llama.cpp's, whatever it adds.
    assert tokenize(http, "Hi", add_special=True) == tokenizer.tokenize(b"Hi", add_bos=True)


def test_special_text_is_parsed_unless_asked_not_to(http: httpx.Client, tokenizer) -> None:
    start = tokenizer.tokenize(b"<|im_start|>", add_bos=False, special=True)
    assert len(start) == 1  # one control token
    assert tokenize(http, "<|im_start|>user")[0] == start[0]
    plain = tokenize(http, "<|im_start|>user", parse_special=False)
    assert start[0] not in plain and len(plain) > 2


def test_mixed_content_of_strings_and_token_ids(http: httpx.Client, tokenizer) -> None:
    hello = tokenizer.tokenize(b"Hello", add_bos=False, special=True)
    world = tokenizer.tokenize(b" world", add_bos=False, special=True)
    assert tokenize(http, ["Hello", 1, " world"]) == [*hello, 1, *world]


def test_pieces_give_each_tokens_text(http: httpx.Client, tokenizer) -> None:
    text = "Hello, world!"
    pieces = tokenize(http, text, with_pieces=True)
    assert [p["id"] for p in pieces] == tokenize(http, text)
    assert "".join(p["piece"] for p in pieces) == text
    assert pieces[0] == {"id": pieces[0]["id"], "piece": "Hello"}


def test_pieces_that_split_a_character_come_as_bytes(http: httpx.Client) -> None:
    text = "日本語🦙"
    pieces = tokenize(http, text, with_pieces=True)
    assert any(isinstance(p["piece"], list) for p in pieces)  # SmolLM2 splits these bytes
    joined = b"".join(bytes(p["piece"]) if isinstance(p["piece"], list)
                      else p["piece"].encode() for p in pieces)
    assert joined == text.encode()


@pytest.mark.parametrize("text", TEXTS)
def test_detokenize_round_trips(http: httpx.Client, text: str) -> None:
    assert detokenize(http, tokenize(http, text)) == text
    assert detokenize(http, tokenize(http, text), "/v1/detokenize") == text


def test_detokenize_renders_control_tokens(http: httpx.Client, tokenizer) -> None:
    tokens = tokenize(http, "<|im_start|>user\nHi<|im_end|>")
    assert detokenize(http, tokens) == "<|im_start|>user\nHi<|im_end|>"


def test_detokenize_of_nothing_is_empty(http: httpx.Client) -> None:
    assert detokenize(http, []) == ""


@pytest.mark.parametrize("bad", [-1, 49152, 10**12])
def test_token_ids_outside_the_vocabulary_are_400_naming_the_index(
    http: httpx.Client, bad: int
) -> None:
    error = assert_openai_error(http.post("/detokenize", json={"tokens": [1, 2, bad]}), 400)
    assert error["param"] == "tokens[2]"
    assert str(bad) in error["message"] and "0..49151" in error["message"]
    error = assert_openai_error(http.post("/tokenize", json={"content": ["a", bad]}), 400)
    assert error["param"] == "content[1]"


@pytest.mark.parametrize("body", [
    {"tokens": [1.5]}, {"tokens": [True]}, {"tokens": "1 2"}, {}, {"tokens": [[1]]},
])
def test_detokenize_bodies_that_are_not_token_lists_are_400(http: httpx.Client, body) -> None:
    error = assert_openai_error(http.post("/detokenize", json=body), 400)
    assert error["param"].startswith("tokens")


@pytest.mark.parametrize("body", [{}, {"content": 5}, {"content": [None]},
                                  {"content": "x", "add_special": "maybe"}])
def test_tokenize_bodies_that_are_malformed_are_400(http: httpx.Client, body) -> None:
    assert_openai_error(http.post("/tokenize", json=body), 400)


def test_model_is_optional_and_checked_when_given(http: httpx.Client, tokenizer) -> None:
    expected = tokenizer.tokenize(b"Hi", add_bos=False, special=True)
    assert tokenize(http, "Hi", model="gpt-3.5-turbo") == expected  # an alias
    error = assert_openai_error(
        http.post("/tokenize", json={"model": "nope", "content": "Hi"}), 404)
    assert error["code"] == "model_not_found"
