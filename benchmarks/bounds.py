"""Time per request under abuse: how long a small chat waits behind huge prompts, and how
quick /health stays during a fan-out request.

    python benchmarks/bounds.py                  # starts `llamaserve run smollm2` itself

1. A 31 MB chat body (far beyond the context): its answer's status and time, and a small chat's
   time, sent once the huge body is on the wire.
2. Three such bodies whose clients reset the connection after 3 s, then a small chat.
3. `/v1/completions` with 2,048 prompts × `best_of: 20`, and then a valid fan-out (256 prompts,
   `max_tokens: 1`): status and time of each, and /health's slowest answer meanwhile.
"""

from __future__ import annotations

import argparse
import json
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import httpx

SMALL = {"model": "smollm2", "max_tokens": 2, "messages": [{"role": "user", "content": "Hi"}]}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def huge_body(megabytes: int) -> bytes:
    text = "All work and no play makes Jack a dull boy. " * (megabytes * 2**20 // 44)
    return json.dumps({"model": "smollm2", "max_tokens": 2,
                       "messages": [{"role": "user", "content": text}]}).encode()


def timed_small(base: str) -> str:
    started = time.perf_counter()
    reply = httpx.post(f"{base}/v1/chat/completions", json=SMALL, timeout=600)
    return f"{reply.status_code} in {time.perf_counter() - started:.2f} s"


def huge_then_small(base: str, body: bytes) -> None:
    sent = threading.Event()
    result: list[str] = []

    def chunks() -> Iterator[bytes]:
        for start in range(0, len(body), 2**20):
            yield body[start:start + 2**20]
        sent.set()

    def huge() -> None:
        started = time.perf_counter()
        reply = httpx.post(f"{base}/v1/chat/completions", content=chunks(), timeout=600,
                           headers={"Content-Type": "application/json"})
        result.append(f"{reply.status_code} in {time.perf_counter() - started:.2f} s")

    thread = threading.Thread(target=huge)
    thread.start()
    sent.wait()
    small = timed_small(base)
    thread.join()
    print(f"1. {len(body) / 2**20:.0f} MB chat: {result[0]}; small chat behind it: {small}")


def abandoned_then_small(base: str, body: bytes) -> None:
    host, port = base.removeprefix("http://").split(":")
    socks = []
    for _ in range(3):
        sock = socket.create_connection((host, int(port)))
        sock.sendall(f"POST /v1/chat/completions HTTP/1.1\r\nHost: {host}\r\nContent-Type: "
                     f"application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body)
        socks.append(sock)
    started = time.perf_counter()
    result: list[str] = []
    thread = threading.Thread(target=lambda: result.append(timed_small(base)))
    thread.start()
    time.sleep(max(0.0, 3 - (time.perf_counter() - started)))
    for sock in socks:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()
    thread.join()
    print(f"2. three abandoned {len(body) / 2**20:.0f} MB chats: small chat {result[0]}")


def fan_out(base: str, label: str, body: dict) -> None:
    result: list[str] = []

    def post() -> None:
        started = time.perf_counter()
        reply = httpx.post(f"{base}/v1/completions", json=body, timeout=900)
        result.append(f"{reply.status_code} in {time.perf_counter() - started:.2f} s")

    thread = threading.Thread(target=post)
    thread.start()
    slowest = 0.0
    while thread.is_alive():
        started = time.perf_counter()
        httpx.get(f"{base}/health", timeout=600)
        slowest = max(slowest, time.perf_counter() - started)
        time.sleep(0.1)
    thread.join()
    print(f"3. {label}: {result[0]}; slowest /health meanwhile {slowest * 1000:.0f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--megabytes", type=int, default=31)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "llamaserve", "run", "smollm2", "--port", str(port),
         "--threads", str(args.threads)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            try:
                if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        print("idle small chat:", timed_small(base))
        body = huge_body(args.megabytes)
        huge_then_small(base, body)
        abandoned_then_small(base, body)
        fan_out(base, "2,048 prompts x best_of 20",
                {"model": "smollm2", "prompt": ["Hi"] * 2048, "best_of": 20, "max_tokens": 1})
        fan_out(base, "256 prompts, max_tokens 1",
                {"model": "smollm2", "prompt": [f"Hi {i}" for i in range(256)],
                 "max_tokens": 1})
    finally:
        server.terminate()
        server.wait()


if __name__ == "__main__":
    main()
