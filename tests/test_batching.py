"""The batching engine: concurrent requests decoded together give what each gives alone; the
prefix cache changes nothing but the work; disconnects free sequences; the wait queue is
bounded. All on the real SmolLM2 over HTTP, served with --deterministic: bit-identical outputs
across batch shapes are that option's promise (the default's is weaker: the same request under
the same concurrency)."""

from __future__ import annotations

import io
import json
import re
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import openai
import pytest

from .builders import data_uri
from .conftest import LiveServer, assert_openai_error, start_server

# Eight requests with different sampling settings; greedy ones and seeded ones.
SETTINGS: list[dict[str, Any]] = [
    {"temperature": 0},
    {"temperature": 0.9, "seed": 11},
    {"temperature": 1.2, "top_p": 0.8, "seed": 12},
    {"temperature": 0.7, "extra_body": {"top_k": 5, "min_p": 0.1}, "seed": 13},
    {"temperature": 0, "frequency_penalty": 1.0},
    {"temperature": 1.0, "presence_penalty": 0.8, "seed": 14},
    {"temperature": 0, "logit_bias": {"504": -100}},
    {"temperature": 0.8, "seed": 15, "stop": ["\n\n"]},
]
QUESTIONS = ["Tell me about cats.", "What is the capital of France?", "Name three colours.",
             "Write a haiku about rain.", "Why is the sky blue?", "Describe a forest.",
             "What do bees make?", "Give me a tip for sleeping well."]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """As conftest's shared server, with --deterministic (LLAMASERVE_DETERMINISTIC here)."""
    live = start_server(["smollm2", "--ctx", "1024"], tmp_path_factory.mktemp("server"),
                        env={"LLAMASERVE_DETERMINISTIC": "1"})
    yield live
    live.stop()


@pytest.fixture(scope="module")
def client(server: LiveServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.v1, api_key="IGNORED", max_retries=0, timeout=120)


@pytest.fixture(scope="module")
def http(server: LiveServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.base_url, timeout=120) as raw:
        yield raw


@pytest.fixture(scope="module")
def vision_client(tmp_path_factory: pytest.TempPathFactory,
                  projector_path: Path) -> Iterator[openai.OpenAI]:
    live = start_server(["smollm2", "--ctx", "1024", "--mmproj", str(projector_path),
                         "--deterministic"], tmp_path_factory.mktemp("vision"))
    yield openai.OpenAI(base_url=live.v1, api_key="IGNORED", max_retries=0, timeout=120)
    live.stop()


def stream_text(client: openai.OpenAI, question: str, **fields: Any) -> str:
    stream = client.chat.completions.create(
        model="smollm2", messages=[{"role": "user", "content": question}], max_tokens=32,
        stream=True, **fields)
    return "".join(c.choices[0].delta.content or "" for c in stream if c.choices)


def test_concurrent_streams_equal_the_same_requests_alone(client: openai.OpenAI) -> None:
    alone = [stream_text(client, q, **s) for q, s in zip(QUESTIONS, SETTINGS, strict=True)]
    with ThreadPoolExecutor(len(SETTINGS)) as pool:
        together = list(pool.map(lambda qs: stream_text(client, qs[0], **qs[1]),
                                 zip(QUESTIONS, SETTINGS, strict=True)))
    assert together == alone
    assert len(set(alone)) == len(alone)  # eight different answers, not one repeated


def test_same_request_eight_times_at_once_gives_one_answer(client: openai.OpenAI) -> None:
    settings = {"temperature": 1.0, "seed": 99}
    alone = stream_text(client, "Invent a name for a cat.", **settings)
    with ThreadPoolExecutor(8) as pool:
        together = list(pool.map(lambda _: stream_text(client, "Invent a name for a cat.",
                                                       **settings), range(8)))
    assert together == [alone] * 8


def complete(client: openai.OpenAI, prompt: str, **fields: Any) -> Any:
    return client.completions.create(model="smollm2", prompt=prompt, max_tokens=24,
                                     temperature=0, **fields)


def cached_tokens(result: Any) -> int:
    return result.usage.prompt_tokens_details.cached_tokens


def test_prefix_cache_hit_gives_the_same_output_as_a_miss(client: openai.OpenAI) -> None:
    # A prompt no earlier test sent, long enough to span several micro-batches.
    prompt = f"Note {uuid.uuid4().hex}. " + "The history of the bicycle is long. " * 40 + \
        "In one sentence, the bicycle"
    miss = complete(client, prompt)
    hit = complete(client, prompt)
    uncached = complete(client, prompt, extra_body={"cache_prompt": False})
    assert cached_tokens(miss) == 0
    assert cached_tokens(hit) == hit.usage.prompt_tokens - 1  # all but the last token
    assert cached_tokens(uncached) == 0
    assert hit.choices[0].text == miss.choices[0].text == uncached.choices[0].text


def test_second_chat_turn_reuses_the_first_and_matches_a_fresh_evaluation(
    client: openai.OpenAI,
) -> None:
    system = f"Session {uuid.uuid4().hex}. You are a terse assistant. " * 8
    turn1 = [{"role": "system", "content": system}, {"role": "user", "content": "Hi!"}]
    first = client.chat.completions.create(model="smollm2", messages=turn1, max_tokens=16,
                                           temperature=0)
    turn2 = [*turn1, {"role": "assistant", "content": first.choices[0].message.content},
             {"role": "user", "content": "And what is 2 + 2?"}]
    second = client.chat.completions.create(model="smollm2", messages=turn2, max_tokens=16,
                                            temperature=0)
    fresh = client.chat.completions.create(model="smollm2", messages=turn2, max_tokens=16,
                                           temperature=0, extra_body={"cache_prompt": False})
    assert second.usage.prompt_tokens_details.cached_tokens >= first.usage.prompt_tokens - 1
    assert fresh.usage.prompt_tokens_details.cached_tokens == 0
    assert second.choices[0].message.content == fresh.choices[0].message.content


def test_prefix_of_a_running_sequence_is_shared(client: openai.OpenAI, http: httpx.Client) -> None:
    """A request sharing a long prefix with one still generating starts from its cells."""
    prefix = f"Tag {uuid.uuid4().hex}. " + "Rivers flow to the sea. " * 30
    body = {"model": "smollm2", "prompt": prefix + "Count: 1, 2, 3,", "max_tokens": 200,
            "temperature": 0, "stream": True}
    with http.stream("POST", "/v1/completions", json=body) as stream:
        lines = stream.iter_lines()
        next(line for line in lines if line.startswith("data:"))  # generating now
        other = complete(client, prefix + "Rivers are")
        assert cached_tokens(other) >= 100
    alone = complete(client, prefix + "Rivers are", extra_body={"cache_prompt": False})
    assert other.choices[0].text == alone.choices[0].text


# Bounded strings, so that a sampled answer ends well within max_tokens.
SCHEMA = {"type": "object", "properties": {"name": {"type": "string", "maxLength": 30},
                                           "age": {"type": "integer"}},
          "required": ["name", "age"], "additionalProperties": False}
TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "Weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 40}},
                   "required": ["city"], "additionalProperties": False}}}


def test_json_mode_and_forced_tools_stay_valid_under_concurrency(client: openai.OpenAI) -> None:
    def json_request(i: int) -> dict:
        answer = client.chat.completions.create(
            model="smollm2", max_tokens=100, temperature=0.8, seed=i,
            messages=[{"role": "user", "content": f"Make up person number {i} as JSON."}],
            response_format={"type": "json_schema",
                             "json_schema": {"name": "person", "schema": SCHEMA}})
        value = json.loads(answer.choices[0].message.content)
        jsonschema.validate(value, SCHEMA)
        return value

    def tool_request(i: int) -> dict:
        answer = client.chat.completions.create(
            model="smollm2", max_tokens=100, temperature=0.8, seed=i, tools=[TOOL],
            tool_choice="required",
            messages=[{"role": "user", "content": f"Weather in city number {i}?"}])
        [call] = answer.choices[0].message.tool_calls
        assert call.function.name == "get_weather"
        arguments = json.loads(call.function.arguments)
        jsonschema.validate(arguments, TOOL["function"]["parameters"])
        return arguments

    with ThreadPoolExecutor(8) as pool:
        jobs = [pool.submit(json_request, i) for i in range(4)]
        jobs += [pool.submit(tool_request, i) for i in range(4)]
        results = [job.result() for job in jobs]
    assert len(results) == 8


def test_embedding_request_is_served_during_generation(client: openai.OpenAI,
                                                       http: httpx.Client) -> None:
    body = {"model": "smollm2", "prompt": "1, 2, 3, 4, 5, 6,", "max_tokens": 300,
            "temperature": 0, "stream": True}
    with http.stream("POST", "/v1/completions", json=body) as stream:
        lines = stream.iter_lines()
        next(line for line in lines if line.startswith("data:"))
        embedded = client.embeddings.create(model="smollm2", input=["a cat", "a dog"])
        assert [len(e.embedding) for e in embedded.data] == [576, 576]
        # the stream goes on after the embedding was answered
        assert sum(1 for line in lines if line.startswith("data:")) > 10


def test_images_go_into_their_own_sequences(vision_client: openai.OpenAI) -> None:
    from PIL import Image

    def picture(colour: tuple[int, int, int]) -> str:
        buffer = io.BytesIO()
        Image.new("RGB", (32, 32), colour).save(buffer, "PNG")
        return data_uri(buffer.getvalue())

    def ask(content: Any) -> str:
        answer = vision_client.chat.completions.create(
            model="smollm2", max_tokens=12, temperature=0,
            messages=[{"role": "user", "content": content}])
        return answer.choices[0].message.content

    requests: list[Any] = [
        [{"type": "text", "text": "What is this?"},
         {"type": "image_url", "image_url": {"url": picture(colour)}}]
        for colour in [(255, 0, 0), (0, 255, 0), (0, 0, 255)]
    ] + ["What is a picture?"]
    alone = [ask(r) for r in requests]
    with ThreadPoolExecutor(len(requests)) as pool:
        together = list(pool.map(ask, requests))
    assert together == alone


# -- one sequence, a queue of one: back-pressure and disconnects --------------------------

@pytest.fixture(scope="module")
def narrow(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    live = start_server(["smollm2", "--ctx", "2048", "--parallel", "1", "--queue-size", "1",
                         "--queue-timeout", "4", "--deterministic", "--verbose"],
                        tmp_path_factory.mktemp("narrow"))
    yield live
    live.stop()


LONG = {"model": "smollm2", "prompt": "1, 2, 3, 4, 5, 6, 7, 8, 9, 10,", "max_tokens": 1900,
        "temperature": 0, "stream": True}
SHORT = {"model": "smollm2", "prompt": "Hello", "max_tokens": 4, "temperature": 0}


def sequences(live: LiveServer) -> dict[str, int]:
    [model] = httpx.get(f"{live.base_url}/api/ps").json()["models"]
    return model["sequences"]


def wait_until(condition: Any, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_full_queue_is_a_503_with_retry_after_and_a_long_wait_times_out(
    narrow: LiveServer,
) -> None:
    with httpx.Client(base_url=narrow.base_url, timeout=60) as http:
        with http.stream("POST", "/v1/completions", json=LONG) as running:
            lines = running.iter_lines()
            next(line for line in lines if line.startswith("data:"))  # the one sequence is busy
            waiting: dict[str, httpx.Response] = {}
            waiter = threading.Thread(
                target=lambda: waiting.update(r=http.post("/v1/completions", json=SHORT)))
            waiter.start()
            wait_until(lambda: sequences(narrow)["waiting"] == 1, "a request to wait")
            refused = http.post("/v1/completions", json=SHORT)
            error = assert_openai_error(refused, 503)
            assert error["code"] == "server_busy" and error["type"] == "server_error"
            assert refused.headers["Retry-After"] == "1"
            waiter.join(timeout=30)  # the waiting one gives up after --queue-timeout (4 s)
            error = assert_openai_error(waiting["r"], 503)
            assert error["code"] == "queue_timeout" and "waited" in error["message"]
            assert sum(1 for line in lines if line.startswith("data:")) > 0  # still streaming


def test_a_disconnect_frees_the_sequence_for_the_next_request(narrow: LiveServer) -> None:
    with httpx.Client(base_url=narrow.base_url, timeout=60) as http:
        with http.stream("POST", "/v1/completions", json=LONG) as running:
            lines = running.iter_lines()
            next(line for line in lines if line.startswith("data:"))
            assert sequences(narrow)["running"] == 1
        # Closed after one token of 1900: were the sequence still generating, this request
        # would wait for it and time out (503) after 4 s.
        answer = http.post("/v1/completions", json=SHORT)
        assert answer.status_code == 200, answer.text
        assert answer.json()["usage"]["completion_tokens"] == 4
        assert sequences(narrow) == {"parallel": 1, "running": 0, "waiting": 0}


def test_deterministic_runs_micro_batches_under_64_tokens_with_flash_attention(
    narrow: LiveServer,
) -> None:
    log = narrow.log()
    served = log[log.rindex("llama_context: n_seq_max"):]  # the context that replaced the first
    assert re.search(r"n_ubatch\s+= 63\n", served), served[:2000]
    assert re.search(r"flash_attn\s+= enabled", served)


def test_a_queued_request_runs_when_the_sequence_frees(narrow: LiveServer) -> None:
    body = {**LONG, "max_tokens": 40}
    with httpx.Client(base_url=narrow.base_url, timeout=60) as http, ThreadPoolExecutor(2) as pool:
        first = pool.submit(http.post, "/v1/completions", json={**body, "stream": False})
        wait_until(lambda: sequences(narrow)["running"] == 1, "the first to run")
        second = pool.submit(http.post, "/v1/completions", json=SHORT)
        assert first.result().status_code == 200
        assert second.result().status_code == 200


def test_parallel_option_is_checked(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="parallel"):
        start_server(["smollm2", "--parallel", "0"], tmp_path, timeout=30)
