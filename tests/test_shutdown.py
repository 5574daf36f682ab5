"""Signals and slow clients: a shutdown (SIGTERM, SIGINT, SIGHUP) ends every running stream
with its protocol's last frames and exits 0 without a traceback; connections that stall while
sending a request are closed."""

from __future__ import annotations

import json
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from .conftest import LiveServer, start_server

ESSAY = [{"role": "user", "content": "Write a very long essay about the sea."}]
# One stream per protocol, each far from its end when the shutdown comes
STREAMS = {
    "openai": ("/v1/chat/completions", {"model": "smollm2", "stream": True, "max_tokens": 900,
                                        "temperature": 1, "seed": 1, "messages": ESSAY}),
    "anthropic": ("/v1/messages", {"model": "smollm2", "stream": True, "max_tokens": 900,
                                   "temperature": 1, "messages": ESSAY}),
    "ollama": ("/api/chat", {"model": "smollm2", "messages": ESSAY,
                             "options": {"num_predict": 900, "seed": 1, "temperature": 1}}),
    "responses": ("/v1/responses", {"model": "smollm2", "stream": True, "input": ESSAY,
                                    "max_output_tokens": 900, "temperature": 1}),
}


def read_streams(live: LiveServer, names: list[str], stop: signal.Signals) -> dict[str, list]:
    """Start the streams, send `stop` once each has sent something, read them to the end."""
    lines: dict[str, list[str]] = {name: [] for name in names}
    started = {name: threading.Event() for name in names}

    def read(name: str) -> None:
        path, body = STREAMS[name]
        with httpx.stream("POST", live.base_url + path, json=body, timeout=120) as response:
            for line in response.iter_lines():
                if line:
                    lines[name].append(line)
                    started[name].set()
        started[name].set()

    readers = [threading.Thread(target=read, args=(name,)) for name in names]
    for reader in readers:
        reader.start()
    for event in started.values():
        assert event.wait(120)
    live.process.send_signal(stop)
    for reader in readers:
        reader.join(60)
    assert live.process.wait(60) == 0, live.log()
    return lines


def sse_data(lines: list[str]) -> list[dict]:
    return [json.loads(line[6:]) for line in lines
            if line.startswith("data: ") and line != "data: [DONE]"]


def test_streams_cut_by_shutdown_end_with_their_last_frames(tmp_path: Path) -> None:
    live = start_server(["smollm2", "--ctx", "1024", "--parallel", "4"], tmp_path,
                        env={"LLAMASERVE_SHUTDOWN_GRACE": "0"})
    lines = read_streams(live, list(STREAMS), signal.SIGTERM)
    openai = lines["openai"]
    assert openai[-1] == "data: [DONE]"
    assert sse_data(openai)[-1]["choices"][0]["finish_reason"] == "length"
    anthropic = [event["type"] for event in sse_data(lines["anthropic"])]
    assert anthropic[-2:] == ["message_delta", "message_stop"], anthropic[-3:]
    # a "length" short of max_tokens: Anthropic's reason for that is the context's end
    assert sse_data(lines["anthropic"])[-2]["delta"]["stop_reason"] in (
        "max_tokens", "model_context_window_exceeded")
    ollama = json.loads(lines["ollama"][-1])
    assert ollama["done"] is True and ollama["done_reason"] == "length"
    assert sse_data(lines["responses"])[-1]["type"] == "response.incomplete"
    log = live.log()
    assert "stopped by the shutdown" in log
    assert "Traceback" not in log and "Exception in ASGI application" not in log


def test_sighup_shuts_down_gracefully(tmp_path: Path) -> None:
    """It used to kill the server at once (exit 129)."""
    live = start_server(["smollm2", "--ctx", "1024"], tmp_path,
                        env={"LLAMASERVE_SHUTDOWN_GRACE": "0"})
    openai = read_streams(live, ["openai"], signal.SIGHUP)["openai"]
    assert openai[-1] == "data: [DONE]"
    assert sse_data(openai)[-1]["choices"][0]["finish_reason"] == "length"
    assert "Traceback" not in live.log()


@pytest.fixture(scope="module")
def impatient(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    live = start_server(["smollm2", "--ctx", "256"], tmp_path_factory.mktemp("impatient"),
                        env={"LLAMASERVE_READ_TIMEOUT": "1"})
    yield live
    live.stop()


def connect(live: LiveServer) -> socket.socket:
    port = int(live.base_url.rsplit(":", 1)[1])
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    return sock


def read_until_closed(sock: socket.socket) -> bytes:
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def read_response(sock: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(head.lower().split(b"content-length: ", 1)[1].split(b"\r\n", 1)[0])
    while len(body) < length:
        body += sock.recv(65536)
    return head + b"\r\n\r\n" + body


def test_half_a_request_line_is_disconnected(impatient: LiveServer) -> None:
    with connect(impatient) as sock:
        started = time.monotonic()
        sock.sendall(b"POST /v1/chat/compl")
        assert read_until_closed(sock) == b""
        assert time.monotonic() - started < 8


def test_stalled_headers_after_a_kept_alive_request_are_disconnected(
        impatient: LiveServer) -> None:
    with connect(impatient) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert read_response(sock).startswith(b"HTTP/1.1 200")
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.")  # then nothing more
        started = time.monotonic()
        assert read_until_closed(sock) == b""
        assert time.monotonic() - started < 8


def test_a_stalled_body_is_408(impatient: LiveServer) -> None:
    with connect(impatient) as sock:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                     b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"model\"")
        answer = read_until_closed(sock)
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert b'"request_timeout"' in answer
    assert httpx.get(impatient.base_url + "/health").status_code == 200
