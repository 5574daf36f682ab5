"""Tokens whose text is longer than 32 bytes come out whole.

llama-cpp-python's detokenize reads at most 32 bytes per token and returns nothing for a
longer piece: 47 of SmolLM2's tokens (indentation runs, a line of 64 dashes), which code and
markdown answers use. Generated text, streamed text, logprobs and echo all go through the
engine's own piece table (engine/tokens.Vocabulary.known_piece)."""

from __future__ import annotations

import ctypes

import llama_cpp
import openai
import pytest


@pytest.fixture(scope="module")
def long_token(tokenizer) -> tuple[int, str]:
    """SmolLM2's token for a line of 64 dashes, and its text."""
    buffer = ctypes.create_string_buffer(256)
    n = llama_cpp.llama_token_to_piece(tokenizer._model.vocab, 15069, buffer, 256, 0, False)
    text = buffer.raw[:n].decode()
    assert text == "-" * 64
    assert tokenizer.detokenize([15069]) == b""  # the library's bug this guards against
    return 15069, text


def forced(token: int) -> dict:
    """Completion arguments that make the model emit `token` first."""
    return {"model": "smollm2", "prompt": "A line:", "max_tokens": 1, "temperature": 0,
            "logit_bias": {str(token): 100}}


def test_a_generated_long_token_is_whole(client: openai.OpenAI, long_token) -> None:
    token, text = long_token
    completion = client.completions.create(**forced(token))
    assert completion.choices[0].text == text


def test_a_streamed_long_token_is_whole(client: openai.OpenAI, long_token) -> None:
    token, text = long_token
    pieces = [chunk.choices[0].text for chunk in
              client.completions.create(**forced(token), stream=True) if chunk.choices]
    assert "".join(pieces) == text


def test_a_long_token_in_chat_is_whole(client: openai.OpenAI, long_token) -> None:
    token, text = long_token
    chat = client.chat.completions.create(
        model="smollm2", messages=[{"role": "user", "content": "Draw a line."}], max_tokens=2,
        temperature=0, logit_bias={str(token): 100}, logprobs=True, top_logprobs=2)
    assert chat.choices[0].message.content == text * 2
    entry = chat.choices[0].logprobs.content[0]
    assert entry.token == text and entry.bytes == list(text.encode())
    assert all(top.bytes == list(top.token.encode()) for top in entry.top_logprobs)


def test_an_echoed_long_token_is_whole(client: openai.OpenAI, long_token) -> None:
    _, text = long_token
    prompt = f"Title\n{text}\nBody"
    completion = client.completions.create(model="smollm2", prompt=prompt, max_tokens=1,
                                           temperature=0, echo=True)
    assert completion.choices[0].text.startswith(prompt)
