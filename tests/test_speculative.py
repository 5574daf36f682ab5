"""Speculative decoding on the real SmolLM2 over HTTP: the same outputs as without it.

Two servers, speculation off and n-gram drafts on (the default), answer the same requests;
a copy-the-passage prompt makes the drafts accepted (checked in /metrics), so tokens are
emitted several per step through every path: constraints, logprobs, stops, n, streaming,
max_tokens and the prefix cache afterwards.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from .conftest import LiveServer, start_server

PASSAGE = (
    "The lighthouse keeper climbed the spiral stairs every evening at dusk, carrying a small "
    "brass lantern and a notebook in which he recorded the weather, the ships that passed, and "
    "the colour of the sea. In winter the wind howled through the cracks in the old stone "
    "walls, and the gulls huddled on the rocks below."
)
COPY = [{"role": "user", "content": "Repeat this passage exactly:\n\n" + PASSAGE}]
CHATS = ["Why is the sky blue?", "Write a short story about a cat who learns to fly."]


# Bit-identical text needs batch invariance: without --deterministic a verification batch of
# several tokens rounds differently from one token, and a near-tie can flip (seen with 2
# threads on a copy prompt). Speculation itself changes nothing else, which these servers show.
SERVE = ["smollm2", "--ctx", "1024", "--deterministic"]


def serve(mode: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    live = start_server([*SERVE, "--speculative", mode],
                        tmp_path_factory.mktemp(f"speculative-{mode}"))
    yield live
    live.stop()


@pytest.fixture(scope="module")
def plain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    yield from serve("off", tmp_path_factory)


@pytest.fixture(scope="module")
def ngram(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    yield from serve("ngram", tmp_path_factory)


def client_of(server: LiveServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.v1, api_key="IGNORED", max_retries=0, timeout=300)


def chat_both(
    plain: LiveServer, ngram: LiveServer, *, drafts: bool = True, **kwargs: Any
) -> tuple[Any, Any]:
    """The same request to both servers (temperature 0 unless given); with `drafts`, the
    speculative server must have accepted draft tokens for it."""
    kwargs = {"model": "smollm2", "temperature": 0, "max_tokens": 80, **kwargs}
    before = speculation(ngram)[1]
    on = client_of(ngram).chat.completions.create(**kwargs)
    if drafts:
        assert speculation(ngram)[1] > before, "no draft token was accepted"
    return client_of(plain).chat.completions.create(**kwargs), on


def speculation(server: LiveServer) -> tuple[float, float]:
    """(drafted, accepted) tokens so far, from /metrics."""
    text = httpx.get(f"{server.base_url}/metrics").text
    values = []
    for name in ("drafted", "accepted"):
        match = re.search(rf'^llamaserve_speculative_{name}_tokens_total{{model="smollm2"}} (\S+)$',
                          text, re.MULTILINE)
        assert match is not None, text
        values.append(float(match.group(1)))
    return values[0], values[1]


def test_copying_a_passage_accepts_drafts_and_gives_the_same_text(
    plain: LiveServer, ngram: LiveServer
) -> None:
    drafted, accepted = speculation(ngram)
    off, on = chat_both(plain, ngram, messages=COPY)
    assert on.choices[0].message.content == off.choices[0].message.content
    assert on.usage.completion_tokens == off.usage.completion_tokens
    assert on.choices[0].finish_reason == off.choices[0].finish_reason
    now_drafted, now_accepted = speculation(ngram)
    assert now_accepted - accepted > off.usage.completion_tokens / 2, (drafted, now_drafted)
    assert speculation(plain) == (0, 0)


@pytest.mark.parametrize("question", CHATS)
def test_ordinary_chat_gives_the_same_text(
    plain: LiveServer, ngram: LiveServer, question: str
) -> None:
    off, on = chat_both(plain, ngram, messages=[{"role": "user", "content": question}],
                        drafts=False)
    assert on.choices[0].message.content == off.choices[0].message.content


def test_seeded_sampling_gives_the_same_text(plain: LiveServer, ngram: LiveServer) -> None:
    # Each emitted token is one draw of the request's own sampler chain, in the same order.
    off, on = chat_both(plain, ngram, messages=COPY, temperature=0.7, seed=42)
    assert on.choices[0].message.content == off.choices[0].message.content


def test_logprobs_have_one_entry_per_emitted_token(plain: LiveServer, ngram: LiveServer) -> None:
    off, on = chat_both(plain, ngram, messages=COPY, logprobs=True, top_logprobs=2)
    entries = on.choices[0].logprobs.content
    assert len(entries) == on.usage.completion_tokens
    assert "".join(e.token for e in entries) == on.choices[0].message.content
    expected = off.choices[0].logprobs.content
    assert [e.token for e in entries] == [e.token for e in expected]
    assert [e.logprob for e in entries] == pytest.approx([e.logprob for e in expected], abs=1e-4)


def test_a_stop_string_inside_accepted_drafts_ends_there(
    plain: LiveServer, ngram: LiveServer
) -> None:
    off, on = chat_both(plain, ngram, messages=COPY, stop=["the ships"])
    text = on.choices[0].message.content
    assert text == off.choices[0].message.content
    assert "the ships" not in text and text.rstrip().endswith("weather,")
    assert on.choices[0].finish_reason == "stop"
    assert on.usage.completion_tokens == off.usage.completion_tokens


@pytest.mark.parametrize("max_tokens", [1, 2, 7, 19])
def test_max_tokens_is_never_exceeded(
    plain: LiveServer, ngram: LiveServer, max_tokens: int
) -> None:
    off, on = chat_both(plain, ngram, messages=COPY, max_tokens=max_tokens,
                        drafts=max_tokens > 2)
    assert on.usage.completion_tokens == max_tokens
    assert on.choices[0].finish_reason == "length"
    assert on.choices[0].message.content == off.choices[0].message.content


def test_several_choices_match(plain: LiveServer, ngram: LiveServer) -> None:
    off, on = chat_both(plain, ngram, messages=COPY, n=3)
    texts = [c.message.content for c in on.choices]
    assert texts == [c.message.content for c in off.choices]
    assert len(set(texts)) == 1


def test_streaming_gives_the_non_streamed_text(ngram: LiveServer) -> None:
    client = client_of(ngram)
    whole = client.chat.completions.create(model="smollm2", messages=COPY, temperature=0,
                                           max_tokens=80)
    stream = client.chat.completions.create(model="smollm2", messages=COPY, temperature=0,
                                            max_tokens=80, stream=True,
                                            stream_options={"include_usage": True})
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens


def test_json_schema_output_matches_and_is_valid(plain: LiveServer, ngram: LiveServer) -> None:
    schema = {"type": "object", "properties": {"passage": {"type": "string"}},
              "required": ["passage"]}
    messages = [{"role": "user", "content": "Put this passage in JSON as 'passage':\n\n"
                 + PASSAGE}]
    format_ = {"type": "json_schema", "json_schema": {"name": "p", "schema": schema}}
    off, on = chat_both(plain, ngram, messages=messages, response_format=format_,
                        max_tokens=120)
    text = on.choices[0].message.content
    assert text == off.choices[0].message.content
    if on.choices[0].finish_reason == "stop":
        assert isinstance(json.loads(text)["passage"], str)


def test_a_gbnf_grammar_sees_only_accepted_tokens(plain: LiveServer, ngram: LiveServer) -> None:
    # The grammar is in the sampler chain: it accepts each emitted token as it is sampled.
    grammar = r'root ::= [A-Za-z ,.]+'
    off, on = chat_both(plain, ngram, messages=COPY, extra_body={"grammar": grammar})
    text = on.choices[0].message.content
    assert text == off.choices[0].message.content
    assert re.fullmatch(r"[A-Za-z ,.]+", text), text


def test_the_prefix_cache_afterwards_gives_the_same_answers(
    plain: LiveServer, ngram: LiveServer
) -> None:
    first_off, first_on = chat_both(plain, ngram, messages=COPY)
    follow_up = [*COPY, {"role": "assistant", "content": first_on.choices[0].message.content},
                 {"role": "user", "content": "Now repeat it once more."}]
    off, on = chat_both(plain, ngram, messages=follow_up)
    assert on.choices[0].message.content == off.choices[0].message.content
    assert on.usage.prompt_tokens_details.cached_tokens > first_on.usage.prompt_tokens
    again = client_of(ngram).chat.completions.create(
        model="smollm2", messages=COPY, temperature=0, max_tokens=80)
    assert again.choices[0].message.content == first_off.choices[0].message.content


def test_concurrent_requests_match_the_plain_server(plain: LiveServer, ngram: LiveServer) -> None:
    import concurrent.futures

    requests = [COPY, [{"role": "user", "content": CHATS[0]}],
                [{"role": "user", "content": "Copy this text:\n\n" + PASSAGE}]]

    def answers(server: LiveServer) -> list[str]:
        client = client_of(server)
        with concurrent.futures.ThreadPoolExecutor(len(requests)) as pool:
            results = pool.map(lambda m: client.chat.completions.create(
                model="smollm2", messages=m, temperature=0, max_tokens=60), requests)
            return [r.choices[0].message.content for r in results]

    assert answers(ngram) == answers(plain)


# -- a draft model: SmolLM2 drafting for itself, so nearly every draft is accepted -----------


@pytest.fixture(scope="module")
def drafted(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    live = start_server([*SERVE, "--draft", "smollm2"],
                        tmp_path_factory.mktemp("speculative-draft"))
    yield live
    live.stop()


@pytest.mark.parametrize("messages", [COPY, [{"role": "user", "content": CHATS[1]}]])
def test_a_draft_model_gives_the_same_text(
    plain: LiveServer, drafted: LiveServer, messages: list[dict[str, str]]
) -> None:
    drafted_before, accepted_before = speculation(drafted)
    # No repeat penalty: the draft proposes its plain greedy choice, as the target picks then.
    off, on = chat_both(plain, drafted, messages=messages, extra_body={"repeat_penalty": 1.0})
    assert on.choices[0].message.content == off.choices[0].message.content
    assert on.usage.completion_tokens == off.usage.completion_tokens
    now_drafted, now_accepted = speculation(drafted)
    assert now_accepted - accepted_before >= 0.9 * (now_drafted - drafted_before)


def test_a_draft_model_keeps_schemas_and_stops(plain: LiveServer, drafted: LiveServer) -> None:
    off, on = chat_both(plain, drafted, messages=COPY, stop=["the ships"])
    assert on.choices[0].message.content == off.choices[0].message.content
    assert "the ships" not in on.choices[0].message.content
    format_ = {"type": "json_schema", "json_schema": {"name": "p", "schema": {
        "type": "object", "properties": {"passage": {"type": "string"}},
        "required": ["passage"]}}}
    # The draft model proposes without the schema's mask, so its drafts may all fail here:
    # what matters is that the output is the one without speculation.
    off, on = chat_both(plain, drafted, messages=COPY, response_format=format_, max_tokens=60,
                        drafts=False)
    assert on.choices[0].message.content == off.choices[0].message.content


def test_a_draft_model_with_another_vocabulary_is_refused(
    tmp_path: Path, smollm2_path: Path
) -> None:
    from .builders import write_tiny_qwen25vl

    # SmolLM2's tokenizer plus three vision control tokens: almost, not quite, the same.
    model, _ = write_tiny_qwen25vl(tmp_path / "tiny.gguf", tmp_path / "mmproj.gguf", smollm2_path)
    result = subprocess.run(
        [sys.executable, "-m", "llamaserve", "run", "smollm2", "--ctx", "256", "--draft",
         str(model), "--port", "0"],
        capture_output=True, text=True, timeout=120, env={**os.environ, "LLAMASERVE_THREADS": "1"})
    assert result.returncode != 0
    assert "must share the model's vocabulary" in result.stderr, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
