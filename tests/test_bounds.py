"""Bounded time per request: prompts that cannot fit are refused before they are tokenized,
fan-out is bounded and runs in waves, and requests whose clients leave stop generating."""

from __future__ import annotations

import json
import re
import socket
import struct
import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from .conftest import LiveServer, assert_openai_error, start_server

CTX = 2048
# SmolLM2's end tokens (<|endoftext|>, <|im_start|>, <|im_end|>) banned: a generation runs to
# max_tokens, so an abandoned one holds its sequence until it is cancelled.
NO_END = {"0": -100, "1": -100, "2": -100}


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    server = start_server(["smollm2", "--ctx", str(CTX), "--parallel", "4"],
                          tmp_path_factory.mktemp("bounds"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def http(live: LiveServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=live.base_url, timeout=120) as client:
        yield client


def chat(content: str, **fields: object) -> dict:
    return {"model": "smollm2", "messages": [{"role": "user", "content": content}], **fields}


def send_raw(live: LiveServer, path: str, body: dict) -> socket.socket:
    """A POST whose answer is never read: the client of an abandoned request."""
    data = json.dumps(body).encode()
    port = int(live.base_url.rsplit(":", 1)[1])
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json"
                 f"\r\nContent-Length: {len(data)}\r\n\r\n".encode() + data)
    return sock


def reset(sock: socket.socket) -> None:
    """Close with a TCP reset, as a killed client does."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def metric(http: httpx.Client, name: str) -> int:
    text = http.get("/metrics").text
    match = re.search(rf'^{name}\{{model="smollm2"\}} (\S+)$', text, re.M)
    return int(float(match.group(1))) if match else 0


def in_flight(http: httpx.Client) -> int:
    return metric(http, "llamaserve_requests_in_flight")


def first_tokens(http: httpx.Client) -> int:
    """Generations that have produced their first token (they hold a sequence)."""
    return metric(http, "llamaserve_time_to_first_token_seconds_count")


def wait_for(condition, timeout: float = 60) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def log_count(live: LiveServer, text: str) -> int:
    return live.log().count(text)


# -- huge prompts ----------------------------------------------------------------------------


def test_a_chat_that_cannot_fit_is_refused_before_tokenizing(live: LiveServer,
                                                             http: httpx.Client) -> None:
    """A 31 MB prompt (~30 s to tokenize here) is a 400 at once, and a small chat sent behind
    it is not held up."""
    body = json.dumps(chat("All work and no play makes Jack a dull boy. " * 700_000)).encode()
    sent = threading.Event()
    answer: dict = {}

    def chunks() -> Iterator[bytes]:
        for start in range(0, len(body), 1 << 20):
            yield body[start:start + (1 << 20)]
        sent.set()

    def huge() -> None:
        started = time.monotonic()
        response = httpx.post(f"{live.base_url}/v1/chat/completions", content=chunks(),
                              headers={"Content-Type": "application/json",
                                       "Content-Length": str(len(body))}, timeout=120)
        answer.update(response=response, seconds=time.monotonic() - started)

    thread = threading.Thread(target=huge)
    thread.start()
    assert sent.wait(60)
    started = time.monotonic()
    small = http.post("/v1/chat/completions", json=chat("Hi", max_tokens=2))
    small_seconds = time.monotonic() - started
    thread.join()
    assert small.status_code == 200, small.text
    error = assert_openai_error(answer["response"], 400)
    assert f"maximum context length is {CTX} tokens" in error["message"]
    assert "at least" in error["message"] and error["param"] == "messages"
    assert answer["seconds"] < 15, answer["seconds"]
    assert small_seconds < 15, small_seconds


def test_a_completion_prompt_that_cannot_fit_is_refused_before_tokenizing(
        http: httpx.Client) -> None:
    response = http.post("/v1/completions", json={"model": "smollm2", "prompt": "x y " * 500_000,
                                                 "max_tokens": 1})
    error = assert_openai_error(response, 400)
    assert "at least" in error["message"] and error["param"] == "prompt"


def test_a_prompt_that_fits_is_still_served(http: httpx.Client) -> None:
    # ~30 bytes a token: far above the byte bound's floor, but well within the context
    response = http.post("/v1/completions", json={"model": "smollm2", "max_tokens": 1,
                                                 "prompt": "Quadrillion " * 120})
    assert response.status_code == 200, response.text


# -- fan-out -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("fields", "param"), [
    ({"prompt": ["Hi"] * 2048, "best_of": 20}, "best_of"),
    ({"prompt": ["Hi"] * 17, "n": 128}, "n"),
])
def test_fan_out_beyond_the_limit_is_400_naming_the_field(http: httpx.Client, fields: dict,
                                                          param: str) -> None:
    started = time.monotonic()
    response = http.post("/v1/completions", json={"model": "smollm2", "max_tokens": 1, **fields})
    error = assert_openai_error(response, 400)
    assert error["param"] == param and "2048" in error["message"], error
    assert time.monotonic() - started < 10


def test_n_128_on_an_idle_server_runs_in_waves(http: httpx.Client) -> None:
    """n is documented up to 128; the model has 4 sequences and a queue of 64: the choices
    beyond them wait for a sequence instead of being refused. /health stays quick."""
    answer: dict = {}
    thread = threading.Thread(target=lambda: answer.update(response=http.post(
        "/v1/chat/completions", json=chat("Hi", n=128, max_tokens=1))))
    thread.start()
    health = []
    while thread.is_alive():
        started = time.monotonic()
        assert http.get("/health").status_code == 200
        health.append(time.monotonic() - started)
        time.sleep(0.05)
    thread.join()
    response = answer["response"]
    assert response.status_code == 200, response.text
    assert sorted(c["index"] for c in response.json()["choices"]) == list(range(128))
    assert max(health) < 2, max(health)


def test_completions_n_128_on_an_idle_server(http: httpx.Client) -> None:
    response = http.post("/v1/completions", json={"model": "smollm2", "prompt": "Hi", "n": 128,
                                                 "max_tokens": 1})
    assert response.status_code == 200, response.text
    assert len(response.json()["choices"]) == 128


# -- abandoned requests --------------------------------------------------------------------------


def test_abandoned_non_streaming_requests_free_their_sequences(live: LiveServer,
                                                               http: httpx.Client) -> None:
    """Four (= --parallel) long answers whose clients reset the connection stop generating:
    a small request sent next is served at once, not after their 1,500 tokens."""
    cancelled = log_count(live, "generation cancelled")
    generating = first_tokens(http)
    long = {"max_tokens": 1500, "logit_bias": NO_END}
    clients = [
        send_raw(live, "/v1/chat/completions", chat("Tell me a story.", **long)),
        send_raw(live, "/v1/chat/completions", chat("Tell me a long story.", **long)),
        send_raw(live, "/v1/completions", {"model": "smollm2", "prompt": "Once upon", **long}),
        send_raw(live, "/v1/completions", {"model": "smollm2", "prompt": "Long ago", **long}),
    ]
    wait_for(lambda: first_tokens(http) == generating + 4)
    for sock in clients:
        reset(sock)
    started = time.monotonic()
    response = http.post("/v1/chat/completions", json=chat("Hi", max_tokens=2))
    assert response.status_code == 200, response.text
    assert time.monotonic() - started < 20
    wait_for(lambda: log_count(live, "generation cancelled") >= cancelled + 4, 20)
    wait_for(lambda: in_flight(http) == 0, 20)
    assert " 499 " in live.log()


@pytest.mark.parametrize(("path", "body"), [
    ("/v1/messages", {"model": "smollm2", "max_tokens": 1500,
                      "messages": [{"role": "user", "content": "Count to ten thousand."}]}),
    ("/api/chat", {"model": "smollm2", "stream": False, "options": {"num_predict": 1500},
                   "messages": [{"role": "user", "content": "Count to ten thousand."}]}),
    ("/api/generate", {"model": "smollm2", "stream": False, "prompt": "Count to ten thousand.",
                       "options": {"num_predict": 1500}}),
    ("/v1/responses", {"model": "smollm2", "max_output_tokens": 1500,
                       "input": "Count to ten thousand."}),
])
def test_abandoned_requests_of_every_protocol_are_cancelled(
        live: LiveServer, http: httpx.Client, path: str, body: dict) -> None:
    cancelled = log_count(live, "generation cancelled")
    generating = first_tokens(http)
    sock = send_raw(live, path, body)
    wait_for(lambda: first_tokens(http) > generating)
    reset(sock)
    wait_for(lambda: log_count(live, "generation cancelled") > cancelled, 20)
    wait_for(lambda: in_flight(http) == 0, 20)


def test_abandoned_embeddings_request_stops(live: LiveServer, http: httpx.Client) -> None:
    """Many long inputs (minutes of work here) whose client leaves: the work stops at the next
    batch, and the next embeddings request is served at once."""
    inputs = [f"Document {i}: " + "the quick brown fox jumps over the lazy dog " * 40
              for i in range(1000)]
    assert http.post("/v1/embeddings", json={"model": "smollm2", "input": "warm"}).is_success
    sock = send_raw(live, "/v1/embeddings", {"model": "smollm2", "input": inputs})
    time.sleep(2)  # the client gives up after 2 s
    reset(sock)
    started = time.monotonic()
    response = http.post("/v1/embeddings", json={"model": "smollm2", "input": "hello"})
    assert response.status_code == 200, response.text
    assert time.monotonic() - started < 20
    assert "embedding request cancelled" in live.log()


def test_a_finished_answer_is_not_cancelled(live: LiveServer, http: httpx.Client) -> None:
    """Keep-alive connections close after their answers: nothing is cancelled or logged."""
    before = log_count(live, "the client disconnected")
    for _ in range(3):
        assert http.post("/v1/chat/completions", json=chat("Hi", max_tokens=1)).is_success
    assert log_count(live, "the client disconnected") == before


def test_an_embedding_input_that_cannot_fit_is_refused_before_tokenizing(
        http: httpx.Client) -> None:
    response = http.post("/v1/embeddings", json={"model": "smollm2", "input": "x y " * 500_000})
    error = assert_openai_error(response, 400)
    assert "input[0] has at least" in error["message"] and error["param"] == "input"


def test_a_truncated_embedding_reads_only_the_head_of_a_huge_input(http: httpx.Client) -> None:
    """Ollama truncates by default: an 8 MB input embeds as its first tokens do."""
    sentence = "All work and no play makes Jack a dull boy. "
    vectors = [http.post("/api/embed", json={"model": "smollm2", "input": sentence * count})
               .json()["embeddings"][0] for count in (200, 200_000)]
    assert vectors[0] == pytest.approx(vectors[1], abs=1e-4)
