"""Speed side by side with llama.cpp's llama-server, one run, same GGUF and threads: prefill of
fresh long prompts, decode at concurrency 1 and 4, and input-grounded generation (copying or
editing a passage of the prompt), where speculative decoding pays.

    python benchmarks/speed.py --llama-server /tmp/llama-build/bin/llama-server --threads 2
    python benchmarks/speed.py --quick                      # a short run, to check it works
    python benchmarks/speed.py --deterministic              # also llamaserve --deterministic
    python benchmarks/speed.py --llamaserve-rows "--speculative off"   # more llamaserve rows
    python benchmarks/speed.py --spec-types ngram-simple ngram-mod ngram-map-k ngram-cache \
        --workloads copy edit                               # which n-gram mode pays most

Servers, each with --parallel 4 sequences of --ctx (4096) tokens: llamaserve with its
defaults (and --llamaserve-args), optionally llamaserve --deterministic and a row per
--llamaserve-rows, llama-server without speculation and llama-server with each --spec-type
given. They are all started first and stay up, idle but for the one being measured; each
request (or decode round) goes to every server in turn, the first of each turn rotating. A
shared 2-core machine's speed drifts by 20 % over minutes: measured one server after another,
that drift lands on whichever server ran then; interleaved, it falls on all of them alike.
Workloads, at temperature 0:

- prefill N (1,000 and 3,000 tokens): a chat whose system prompt is N tokens of fresh text (a
  nonce first, so no prefix cache helps), max_tokens 1; prompt tokens/s = the prompt's tokens
  (usage) over the time to the answer (TTFT), median of --repeats;
- decode c=1 and c=4: --rounds rounds of 1 or 4 concurrent 128-token streams,
  end-of-generation tokens banned by logit_bias (load.py's streams): the median stream's
  tokens/s at c=1, all streams' tokens over the rounds' time at c=4;
- copy / edit: "Repeat the following passage exactly" / "... replacing X with Y" on a ~100-word
  passage (a nonce first): completion tokens (usage) over the time after the first token,
  median of --repeats.

The table gives each figure and its ratio to llama-server without speculation.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
from load import (
    FRESH,
    NO_EOG,
    Stream,
    _probe,
    chat_chunks,
    delta_content,
    end_of_generation_tokens,
    free_port,
    one_stream,
    resolve_model,
)

MODEL = "bench"
WORDS = ("river stone lantern harbour winter garden silver market window letter bridge forest "
         "engine candle meadow thunder pocket ribbon castle feather copper mirror orchard "
         "whistle island saddle compass blanket quarry signal tunnel anchor velvet ladder "
         "kettle marble pepper canyon glacier falcon violin timber crystal spiral beacon").split()
PASSAGES = [
    "The old lighthouse keeper climbed the spiral stairs every evening at dusk. He trimmed the "
    "wick, polished the brass, and wound the clockwork that turned the great lens. Ships far "
    "out at sea saw the beam sweep across the water every ten seconds, and they knew the rocks "
    "were near. In winter the storms came hard from the north, and spray froze on the windows. "
    "Still he climbed, night after night, because a single dark night could cost a ship and "
    "every soul aboard. When he retired, the town gave him a brass telescope and a small "
    "cottage by the harbour.",
    "Bread has been baked for thousands of years. The simplest loaf needs only flour, water, "
    "salt and yeast. The baker mixes the dough, kneads it until it is smooth and elastic, and "
    "leaves it to rise in a warm place. The yeast eats the sugars in the flour and releases "
    "gas, which fills the dough with tiny bubbles. After shaping, the loaf rises again and then "
    "goes into a hot oven. The crust browns, the kitchen fills with a wonderful smell, and the "
    "baker waits, because bread should cool before it is cut.",
    "The train left the city before sunrise. Commuters dozed against the windows while the "
    "suburbs slid past, grey and quiet. After an hour the houses thinned out and gave way to "
    "fields of wheat and small farms with red barns. A river appeared beside the track and "
    "followed it for many miles, wide and slow and shining in the morning light. Children "
    "waved from a level crossing. By noon the mountains were in sight, their peaks still white "
    "with snow, and the train began the long climb toward the pass.",
]
EDITS = [("lighthouse", "windmill"), ("bread", "cake"), ("train", "bus")]
WORKLOADS = ("prefill", "decode", "copy", "edit")


@dataclass
class Server:
    name: str
    command: list[str]


def servers(args: argparse.Namespace, gguf: Path) -> list[Server]:
    threads, ctx, parallel = str(args.threads), str(args.ctx), str(args.parallel)
    ours = [sys.executable, "-m", "llamaserve", "run", str(gguf), "--alias", MODEL, "--threads",
            threads, "--ctx", ctx, "--parallel", parallel, *shlex.split(args.llamaserve_args)]
    label = "llamaserve" + (f" {args.llamaserve_args}" if args.llamaserve_args else "")
    found = [Server(label, ours)]
    if args.deterministic:
        found.append(Server("llamaserve --deterministic", [*ours, "--deterministic"]))
    for extra in args.llamaserve_rows:
        found.append(Server(f"llamaserve {extra}", [*ours, *shlex.split(extra)]))
    if args.llama_server is None or not Path(args.llama_server).is_file():
        print(f"no llama-server at {args.llama_server}: llamaserve only", file=sys.stderr)
        return found
    peer = [str(args.llama_server), "-m", str(gguf), "--alias", MODEL, "-t", threads, "-tb",
            threads, "-c", str(args.ctx * args.parallel), "--parallel", parallel,
            "--host", "127.0.0.1", *shlex.split(args.llama_server_args)]
    found.append(Server("llama-server", peer))
    for spec in args.spec_types:
        found.append(Server(f"llama-server {spec}", [*peer, "--spec-type", spec]))
    return found


def launch(server: Server) -> tuple[str, subprocess.Popen]:
    port = free_port()
    command = [*server.command, "--port", str(port)]
    log = Path(tempfile.gettempdir()) / f"speed-{port}.log"
    print(f"{server.name}: {shlex.join(command)} (log: {log})", file=sys.stderr)
    process = subprocess.Popen(command, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if process.poll() is not None:
            sys.exit(f"{server.name} exited with {process.returncode}; see {log}")
        try:
            if httpx.get(f"{url}/models", timeout=1).status_code == 200:
                asyncio.run(_probe(url, MODEL))  # llama-server lists models while loading
                return url, process
        except (httpx.HTTPError, RuntimeError):
            pass
        time.sleep(0.2)
    process.kill()
    sys.exit(f"{server.name} did not start in 300 s; see {log}")


def fresh_text(tokenizer: object, n_tokens: int, rng: random.Random) -> str:
    """About `n_tokens` tokens of sentences from WORDS, cut at a token boundary."""
    words = []
    while len(words) < n_tokens:
        words += [*rng.sample(WORDS, 8), "and", *rng.sample(WORDS, 3) + ["."]]
    text = " ".join(words)
    tokens = tokenizer.tokenize(text.encode(), add_bos=False, special=False)  # type: ignore[attr-defined]
    return tokenizer.detokenize(tokens[:n_tokens]).decode(errors="ignore")  # type: ignore[attr-defined]


async def stream_usage(
    client: httpx.AsyncClient, url: str, body: dict
) -> tuple[float, float, dict]:
    """(TTFT, total seconds, usage) of one streamed chat completion."""
    body = {**body, "model": MODEL, "stream": True, "stream_options": {"include_usage": True}}
    start, first, usage = time.perf_counter(), None, {}
    async for chunk in chat_chunks(client, url, body):
        usage = chunk.get("usage") or usage
        if first is None and delta_content(chunk):
            first = time.perf_counter() - start
    total = time.perf_counter() - start
    return (first if first is not None else total), total, usage


async def prefill_once(client: httpx.AsyncClient, url: str, text: str) -> dict:
    system = f"Document {uuid.uuid4().hex}. {text}"
    messages = [{"role": "system", "content": system},
                {"role": "user", "content": "Summarise the document."}]
    ttft, _, usage = await stream_usage(
        client, url, {"messages": messages, "max_tokens": 1, "temperature": 0})
    return {"rate": usage.get("prompt_tokens", 0) / ttft, "ttft": ttft}


def grounded_prompt(kind: str, index: int) -> str:
    passage = PASSAGES[index % len(PASSAGES)]
    head = f"(Request {uuid.uuid4().hex}.) "
    if kind == "copy":
        return f"{head}Repeat the following passage exactly, word for word:\n\n{passage}"
    old, new = EDITS[index % len(EDITS)]
    return (f"{head}Rewrite the following passage, replacing the word '{old}' with '{new}' "
            f"and changing nothing else:\n\n{passage}")


async def grounded_once(client: httpx.AsyncClient, url: str, kind: str, index: int) -> dict:
    messages = [{"role": "user", "content": grounded_prompt(kind, index)}]
    ttft, total, usage = await stream_usage(
        client, url, {"messages": messages, "max_tokens": 200, "temperature": 0})
    generated = usage.get("completion_tokens", 0)
    return {"rate": (generated - 1) / (total - ttft) if generated > 1 else 0.0,
            "total": total, "tokens": generated}


async def decode_round(client: httpx.AsyncClient, url: str, concurrency: int,
                       tokens: int) -> dict:
    """`concurrency` 128-token streams at once (load.py's streams, end of generation banned)."""
    async def attempt() -> Stream | None:
        try:
            return (await one_stream(client, url, MODEL, tokens))[0]
        except (httpx.HTTPError, RuntimeError) as exc:
            print(f"{url}: {type(exc).__name__}: {exc}", file=sys.stderr)
            return None

    started = time.perf_counter()
    done = await asyncio.gather(*(attempt() for _ in range(concurrency)))
    wall = time.perf_counter() - started
    streams = [stream for stream in done if stream is not None]
    return {"rates": [s.decode_rate for s in streams], "ttfts": [s.ttft for s in streams],
            "tokens": sum(s.tokens for s in streams), "wall": wall,
            "errors": len(done) - len(streams)}


Unit = tuple[str, Callable[[httpx.AsyncClient, str], Awaitable[dict]]]


def plan(args: argparse.Namespace, prompts: dict[int, list[str]]) -> list[list[Unit]]:
    """The measurements, in rounds: each round's units run on every server in turn."""
    rounds: list[list[Unit]] = []
    for index in range(max(args.repeats, args.rounds)):
        units: list[Unit] = []
        if "prefill" in args.workloads and index < args.repeats:
            for n, texts in prompts.items():
                units.append((f"prefill {n}",
                              lambda c, u, text=texts[index]: prefill_once(c, u, text)))
        if "decode" in args.workloads and index < args.rounds:
            for concurrency in (1, 4):
                units.append((f"decode c={concurrency}",
                              lambda c, u, k=concurrency: decode_round(c, u, k, args.tokens)))
        for kind in ("copy", "edit"):
            if kind in args.workloads and index < args.repeats:
                units.append((kind, lambda c, u, k=kind, i=index: grounded_once(c, u, k, i)))
        rounds.append(units)
    return rounds


async def measure(urls: dict[str, str], rounds: list[list[Unit]]) -> dict[str, dict]:
    """Every unit on every server, one request (or one decode round) at a time, the servers
    taking turns and the first of each turn rotating, so that a slow minute of a shared
    machine falls on all of them alike. Returns each server's samples by workload."""
    samples: dict[str, dict[str, list[dict]]] = {name: {} for name in urls}
    names = list(urls)
    turn = 0
    async with httpx.AsyncClient(timeout=900, limits=FRESH) as client:
        for name in names:
            await one_stream(client, urls[name], MODEL, 8)  # warm-up
        for units in rounds:
            for workload, run in units:
                order = names[turn % len(names):] + names[: turn % len(names)]
                turn += 1
                for name in order:
                    sample = await run(client, urls[name])
                    samples[name].setdefault(workload, []).append(sample)
    return samples


def summarise(samples: dict[str, list[dict]]) -> dict[str, dict]:
    found: dict[str, dict] = {}
    for workload, runs in samples.items():
        if workload.startswith("prefill"):
            found[workload] = {"tps": statistics.median(r["rate"] for r in runs),
                               "ttft_ms": statistics.median(r["ttft"] for r in runs) * 1000}
        elif workload.startswith("decode"):
            rates = [rate for r in runs for rate in r["rates"]]
            errors = sum(r["errors"] for r in runs)
            if workload == "decode c=1":
                tps = statistics.median(rates) if rates else 0.0
            else:
                tps = sum(r["tokens"] for r in runs) / sum(r["wall"] for r in runs)
            found[workload] = {"tps": tps, "errors": errors}
        else:
            found[workload] = {"tps": statistics.median(r["rate"] for r in runs),
                               "total_ms": statistics.median(r["total"] for r in runs) * 1000,
                               "tokens": statistics.median(r["tokens"] for r in runs)}
    return found


METRICS = {
    "prefill": "prompt tokens/s (TTFT)",
    "decode c=1": "tokens/s, median stream",
    "decode c=4": "tokens/s, all streams",
    "copy": "tokens/s after the first (tokens)",
    "edit": "tokens/s after the first (tokens)",
}


def cell(result: dict, reference: dict | None) -> str:
    text = f"{result['tps']:.1f}"
    if "total_ms" not in result and "errors" not in result:
        text += f" ({result['ttft_ms']:.0f} ms)"
    elif "tokens" in result:
        text += f" ({result['tokens']:.0f})"
    if reference and reference["tps"]:
        text += f" **{result['tps'] / reference['tps']:.2f}x**"
    return text


def report(args: argparse.Namespace, gguf: Path, results: dict[str, dict]) -> None:
    names = list(results)
    reference = results.get("llama-server")
    print(f"\n{gguf.name}, {args.threads} threads, --parallel {args.parallel} x --ctx {args.ctx}, "
          f"temperature 0; ratios vs llama-server without speculation"
          f"{' (quick run)' if args.quick else ''}\n")
    print("| workload | metric | " + " | ".join(names) + " |")
    print("|---|---|" + "---|" * len(names))
    for workload in next(iter(results.values())):
        metric = next(v for k, v in METRICS.items() if workload.startswith(k))
        cells = [cell(results[name][workload], reference[workload] if reference else None)
                 for name in names]
        print(f"| {workload} | {metric} | " + " | ".join(cells) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2",
                        help="smollm2 | gemma3-270m | PATH.gguf  [default: smollm2]")
    parser.add_argument("--llama-server", type=Path,
                        default=os.environ.get("LLAMA_SERVER",
                                               "/tmp/llama-build/bin/llama-server"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--ctx", type=int, default=4096, help="context per sequence")
    parser.add_argument("--parallel", type=int, default=4)
    parser.add_argument("--tokens", type=int, default=128, help="decode: tokens per stream")
    parser.add_argument("--rounds", type=int, default=3, help="decode: rounds per level")
    parser.add_argument("--repeats", type=int, default=3, help="prefill, copy, edit: requests")
    parser.add_argument("--prompt-tokens", type=int, nargs="+", default=[1000, 3000])
    parser.add_argument("--spec-types", nargs="*", default=["ngram-simple", "ngram-mod"],
                        help="llama-server --spec-type values to run (none: no such rows)")
    parser.add_argument("--workloads", nargs="+", default=list(WORKLOADS), choices=WORKLOADS,
                        help="what to measure [default: all]")
    parser.add_argument("--llamaserve-args", default="", help="more flags for llamaserve run")
    parser.add_argument("--llama-server-args", default="", help="more flags for llama-server")
    parser.add_argument("--llamaserve-rows", nargs="*", default=[], metavar="ARGS",
                        help="more llamaserve rows, one per string of flags "
                             "(e.g. \"--speculative off\")")
    parser.add_argument("--deterministic", action="store_true",
                        help="also run llamaserve --deterministic")
    parser.add_argument("--quick", action="store_true",
                        help="one request per figure, one round, one --spec-type")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.repeats, args.spec_types = 1, 1, args.spec_types[:1]
    gguf = resolve_model(args.model)
    NO_EOG.update({str(token): -100 for token in end_of_generation_tokens(gguf)})
    from llama_cpp import Llama

    tokenizer = Llama(str(gguf), vocab_only=True, verbose=False)
    rng = random.Random(7)
    prompts = {n: [fresh_text(tokenizer, n, rng) for _ in range(args.repeats)]
               for n in args.prompt_tokens}
    tokenizer.close()
    # a SIGTERM (timeout, kill) still stops the servers, through `finally`
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    urls: dict[str, str] = {}
    processes: list[subprocess.Popen] = []
    try:
        for server in servers(args, gguf):
            urls[server.name], process = launch(server)
            processes.append(process)
        samples = asyncio.run(measure(urls, plan(args, prompts)))
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait()
    report(args, gguf, {name: summarise(found) for name, found in samples.items()})


if __name__ == "__main__":
    main()
