"""Soak test: many mixed requests at a fixed concurrency against a live llamaserve, counting
unexpected errors and watching the server's resident memory.

    python benchmarks/soak.py                       # starts `llamaserve run smollm2` itself
    python benchmarks/soak.py --requests 1000 --concurrency 8

The mix: chat, streamed chat (one in five abandoned after a few chunks, as a client that goes
away), completions, streamed completions, and embeddings when the server offers them. Every
answer must be a 200 (or, for abandoned streams, nothing); anything else counts as an
unexpected error. Resident memory (VmRSS of the server process, Linux) is read at request 200
and at the end; the growth between them should stay under 5 %.

Then the abuse phase (`--abuse-rounds`, 0 to skip), on a server started with a vision
projector (`--mmproj FILE`, else the tiny LLaVA projector tests/builders.py writes): each round
sends four (= --parallel) long non-streamed chats and a large embeddings batch whose clients
reset the connection after two seconds, and a chat with oversized images (data-URI PNGs of
6000×6000); then a small chat must be answered promptly. Resident memory is sampled through the
phase: at its start, its peak, and its end, which should be back within 10 % of the start.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import socket
import struct
import subprocess
import sys
import tempfile
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


async def abandon(base_url: str, path: str, body: dict, after: float) -> None:
    """A POST whose client resets the connection after `after` seconds, unanswered."""
    host, port = base_url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    data = json.dumps(body).encode()
    writer.write(f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
                 f"Content-Length: {len(data)}\r\n\r\n".encode() + data)
    await writer.drain()
    await asyncio.sleep(after)
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.close()


def big_image_uri(side: int) -> str:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.builders import data_uri, image_bytes

    return data_uri(image_bytes("PNG", (side, side)))


async def abuse(base_url: str, pid: int, args: argparse.Namespace) -> bool:
    """Abandoned non-streamed requests and oversized images; True when memory came back."""
    model, errors, waits = args.model, [], []
    image_times: list[str] = []
    image = big_image_uri(args.image_side) if args.images else None
    no_end = {"0": -100, "1": -100, "2": -100}  # SmolLM2's end tokens: run to max_tokens
    long_chat = {"model": model, "max_tokens": 1500, "logit_bias": no_end,
                 "messages": [{"role": "user", "content": "Tell me a long story."}]}
    inputs = ["the quick brown fox jumps over the lazy dog " * 40] * 500
    async with httpx.AsyncClient(base_url=base_url, timeout=600) as client:
        # Warm-up, not measured: the first use of each path allocates buffers that stay for
        # the life of the model (the projector's on its first image, llama.cpp's compute
        # buffers on the first full micro-batch, the embedding context's on its first batch).
        # That is the working set, not growth; the check is that later rounds come back to it.
        await client.post("/v1/chat/completions", json={
            "model": model, "max_tokens": 4,
            "messages": [{"role": "user", "content": "the quick brown fox " * 400}]})
        if image is not None:
            await client.post("/v1/chat/completions", json={
                "model": model, "max_tokens": 4, "messages": [{"role": "user", "content": [
                    {"type": "text", "text": "Describe this."},
                    {"type": "image_url", "image_url": {"url": big_image_uri(64)}}]}]})
        await client.post("/v1/embeddings", json={"model": model, "input": inputs[:16]})
    peak = start = rss_bytes(pid)
    after_round: list[int] = []
    sampling = True

    async def sample() -> None:
        nonlocal peak
        while sampling:
            peak = max(peak, rss_bytes(pid))
            await asyncio.sleep(0.1)

    sampler = asyncio.create_task(sample())
    async with httpx.AsyncClient(base_url=base_url, timeout=600) as client:
        for _ in range(args.abuse_rounds):
            jobs = [abandon(base_url, "/v1/chat/completions", long_chat, 2) for _ in range(4)]
            jobs.append(abandon(base_url, "/v1/embeddings", {"model": model, "input": inputs}, 2))
            await asyncio.gather(*jobs)
            started = time.perf_counter()
            reply = await client.post("/v1/chat/completions", json={
                "model": model, "max_tokens": 4,
                "messages": [{"role": "user", "content": "Hi"}]})
            waits.append(time.perf_counter() - started)
            if reply.status_code != 200:
                errors.append(f"small chat: {reply.status_code} {reply.text[:200]}")
            if image is not None:
                parts = [{"type": "text", "text": "Describe these."}] + [
                    {"type": "image_url", "image_url": {"url": image}}] * args.images
                started = time.perf_counter()
                reply = await client.post("/v1/chat/completions", json={
                    "model": model, "max_tokens": 4,
                    "messages": [{"role": "user", "content": parts}]})
                image_times.append(f"{reply.status_code} {time.perf_counter() - started:.2f}")
                if reply.status_code >= 500:
                    errors.append(f"images: {reply.status_code} {reply.text[:200]}")
            after_round.append(rss_bytes(pid))
    await asyncio.sleep(3)
    sampling = False
    await sampler
    end = rss_bytes(pid)
    back = (end - start) / start * 100
    print(f"abuse phase: {args.abuse_rounds} rounds of 4 abandoned chats (max_tokens 1500), "
          f"1 abandoned embeddings batch (500 inputs), {args.images} images of "
          f"{args.image_side}x{args.image_side}")
    print(f"small chat right after the clients left: {', '.join(f'{w:.2f}' for w in waits)} s")
    if image_times:
        print(f"image requests (status, seconds): {', '.join(image_times)}")
    print(f"resident memory: start {start / 2**20:.1f} MiB, peak {peak / 2**20:.1f} MiB, "
          f"end {end / 2**20:.1f} MiB ({back:+.1f} % of the start)")
    print("after each round: " + ", ".join(f"{r / 2**20:.1f}" for r in after_round) + " MiB")
    for error in errors[:10]:
        print("  error:", error)
    return not errors and back < 10


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--baseline", type=int, default=200)
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--abuse-rounds", type=int, default=3)
    parser.add_argument("--mmproj", type=Path, help="vision projector (default: a tiny one)")
    parser.add_argument("--images", type=int, default=2, help="oversized images per request")
    parser.add_argument("--image-side", type=int, default=6000)
    args = parser.parse_args()
    port = free_port()
    command = [sys.executable, "-m", "llamaserve", "run", args.model, "--port", str(port)]
    if args.abuse_rounds and args.images:
        if args.mmproj is None:
            sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
            from tests.builders import write_llava_projector

            args.mmproj = write_llava_projector(Path(tempfile.mkdtemp()) / "mmproj-tiny.gguf")
        command += ["--mmproj", str(args.mmproj)]
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base_url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            try:
                if httpx.get(f"{base_url}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        code = asyncio.run(soak(base_url, server.pid, args))
        if args.abuse_rounds:
            ok = asyncio.run(abuse(base_url, server.pid, args))
            print("abuse phase:", "PASS" if ok else "FAIL")
            code = code or (0 if ok else 1)
    finally:
        server.terminate()
        server.wait()
    sys.exit(code)


if __name__ == "__main__":
    main()
