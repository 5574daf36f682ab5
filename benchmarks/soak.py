"""Soak test: many mixed requests at a fixed concurrency against a live llamaserve, counting
unexpected errors and watching the server's resident memory.

    python benchmarks/soak.py                       # starts `llamaserve run smollm2` itself
    python benchmarks/soak.py --requests 1000 --concurrency 8

The mix: chat, streamed chat (one in five abandoned after a few chunks, as a client that goes
away), completions, streamed completions, and embeddings when the server offers them. Every
answer must be a 200 (or, for abandoned streams, nothing); anything else counts as an
unexpected error. Resident memory (VmRSS of the server process, Linux) is read at request 200
and at the end; the growth between them should stay under 5 %.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

PROMPTS = ["Tell me about rivers.", "Write a haiku about snow.", "What is 2 + 2?",
           "Name three colours.", "Describe a cat in one sentence."]


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def one(client: httpx.AsyncClient, kind: str, rng: random.Random, model: str) -> str:
    """Runs one request; returns "ok", "cancelled" or a description of what went wrong."""
    prompt = rng.choice(PROMPTS)
    messages = [{"role": "user", "content": prompt}]
    tokens = rng.randint(1, 12)
    if kind == "chat":
        reply = await client.post("/v1/chat/completions", json={
            "model": model, "messages": messages, "max_tokens": tokens})
    elif kind == "completion":
        reply = await client.post("/v1/completions", json={
            "model": model, "prompt": prompt, "max_tokens": tokens})
    elif kind == "embedding":
        reply = await client.post("/v1/embeddings", json={"model": model, "input": [prompt]})
    else:
        path = "/v1/chat/completions" if kind.endswith("chat") else "/v1/completions"
        body = {"model": model, "max_tokens": 64 if kind.startswith("cancel") else tokens,
                "stream": True, **({"messages": messages} if path.endswith("chat/completions")
                                   else {"prompt": prompt})}
        async with client.stream("POST", path, json=body) as reply:
            if reply.status_code != 200:
                await reply.aread()
                return f"{kind}: {reply.status_code} {reply.text[:200]}"
            seen = 0
            async for line in reply.aiter_lines():
                if line.startswith("data: "):
                    seen += 1
                    if kind.startswith("cancel") and seen == 3:
                        return "cancelled"  # leaving the block closes the connection
                    if line == "data: [DONE]":
                        return "ok"
            return f"{kind}: stream ended without [DONE]"
    if reply.status_code != 200:
        return f"{kind}: {reply.status_code} {reply.text[:200]}"
    return "ok"


async def soak(base_url: str, pid: int, args: argparse.Namespace) -> int:
    rng = random.Random(args.seed)
    async with httpx.AsyncClient(base_url=base_url, timeout=300) as client:
        probe = await client.post("/v1/embeddings", json={"model": args.model, "input": "x"})
        kinds = ["chat", "chat", "stream-chat", "cancel-stream-chat", "completion",
                 "stream-completion"]
        if probe.status_code == 200:
            kinds.append("embedding")
        plan = [rng.choice(kinds) for _ in range(args.requests)]
        queue: asyncio.Queue[int] = asyncio.Queue()
        for index in range(len(plan)):
            queue.put_nowait(index)
        outcomes: dict[str, int] = {}
        errors: list[str] = []
        done = 0
        rss_at: dict[str, int] = {}
        started = time.perf_counter()

        async def worker() -> None:
            nonlocal done
            while not queue.empty():
                index = queue.get_nowait()
                try:
                    result = await one(client, plan[index], random.Random(index), args.model)
                except httpx.HTTPError as exc:
                    result = f"{plan[index]}: {type(exc).__name__} {exc}"
                key = result if result in ("ok", "cancelled") else "error"
                outcomes[key] = outcomes.get(key, 0) + 1
                if key == "error":
                    errors.append(result)
                done += 1
                if done == args.baseline:
                    rss_at["baseline"] = rss_bytes(pid)

        await asyncio.gather(*(worker() for _ in range(args.concurrency)))
        elapsed = time.perf_counter() - started
        rss_at["end"] = rss_bytes(pid)
    growth = (rss_at["end"] - rss_at["baseline"]) / rss_at["baseline"] * 100
    print(f"{args.requests} requests at concurrency {args.concurrency} in {elapsed:.1f}s "
          f"({args.requests / elapsed:.1f} req/s); mix: {', '.join(sorted(set(plan)))}")
    print(f"outcomes: {outcomes}")
    print(f"resident memory at request {args.baseline}: {rss_at['baseline'] / 2**20:.1f} MiB; "
          f"at the end: {rss_at['end'] / 2**20:.1f} MiB; growth {growth:+.2f} %")
    for error in errors[:10]:
        print("  error:", error)
    ok = not errors and growth < 5
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--baseline", type=int, default=200)
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "llamaserve", "run", args.model, "--port", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base_url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            try:
                if httpx.get(f"{base_url}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        code = asyncio.run(soak(base_url, server.pid, args))
    finally:
        server.terminate()
        server.wait()
    sys.exit(code)


if __name__ == "__main__":
    main()
