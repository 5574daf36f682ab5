"""Speed side by side with llama.cpp's llama-server, one run, same GGUF and threads: prefill of
fresh long prompts, decode at concurrency 1 and 4, and input-grounded generation (copying or
editing a passage of the prompt), where speculative decoding pays.

    python benchmarks/speed.py --llama-server /tmp/llama-build/bin/llama-server --threads 2
    python benchmarks/speed.py --quick                      # a short run, to check it works
    python benchmarks/speed.py --deterministic              # also llamaserve --deterministic
    python benchmarks/speed.py --llamaserve-args "--speculative"   # flags for llamaserve
    python benchmarks/speed.py --spec-types ngram-simple ngram-mod ngram-map-k ngram-cache \
        --workloads copy edit                               # which n-gram mode pays most

Servers, one at a time, each with --parallel 4 sequences of --ctx (4096) tokens: llamaserve
with its defaults (and --llamaserve-args), optionally llamaserve --deterministic, llama-server
without speculation and llama-server with each --spec-type given. Workloads, at temperature 0:

- prefill N (1,000 and 3,000 tokens): a chat whose system prompt is N tokens of fresh text (a
  nonce first, so no prefix cache helps), max_tokens 1; prompt tokens/s = the prompt's tokens
  (usage) over the time to the answer (TTFT), median of --repeats;
- decode c=1 and c=4: 128-token streams, end-of-generation tokens banned by logit_bias
  (load.py's `level`): the median stream's tokens/s at c=1, all streams' tokens/s at c=4;
- copy / edit: "Repeat the following passage exactly" / "... replacing X with Y" on a ~100-word
  passage (a nonce first): completion tokens (usage) over the time after the first token,
  median of --repeats.

The table gives each figure and its ratio to llama-server without speculation.
"""

from __future__ import annotations

import argparse
import asyncio
import json
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
from dataclasses import dataclass
from pathlib import Path

import httpx
from load import (
    FRESH,
    NO_EOG,
    _probe,
    end_of_generation_tokens,
    free_port,
    level,
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
    async with client.stream("POST", f"{url}/chat/completions", json=body) as reply:
        if reply.status_code != 200:
            await reply.aread()
            raise RuntimeError(f"{url} answered {reply.status_code}: {reply.text[:300]}")
        async for line in reply.aiter_lines():
            if not line.startswith("data: {"):
                continue
            chunk = json.loads(line[6:])
            usage = chunk.get("usage") or usage
            choices = chunk.get("choices") or []
            if first is None and choices and choices[0].get("delta", {}).get("content"):
                first = time.perf_counter() - start
    total = time.perf_counter() - start
    return (first if first is not None else total), total, usage


async def prefill(url: str, texts: list[str]) -> dict:
    rates, ttfts = [], []
    async with httpx.AsyncClient(timeout=900, limits=FRESH) as client:
        for text in texts:
            system = f"Document {uuid.uuid4().hex}. {text}"
            messages = [{"role": "system", "content": system},
                        {"role": "user", "content": "Summarise the document."}]
            ttft, _, usage = await stream_usage(
                client, url, {"messages": messages, "max_tokens": 1, "temperature": 0})
            rates.append(usage.get("prompt_tokens", 0) / ttft)
            ttfts.append(ttft)
    return {"tps": statistics.median(rates), "ttft_ms": statistics.median(ttfts) * 1000}


def grounded_prompt(kind: str, index: int) -> str:
    passage = PASSAGES[index % len(PASSAGES)]
    head = f"(Request {uuid.uuid4().hex}.) "
    if kind == "copy":
        return f"{head}Repeat the following passage exactly, word for word:\n\n{passage}"
    old, new = EDITS[index % len(EDITS)]
    return (f"{head}Rewrite the following passage, replacing the word '{old}' with '{new}' "
            f"and changing nothing else:\n\n{passage}")


async def grounded(url: str, kind: str, repeats: int) -> dict:
    rates, totals, tokens = [], [], []
    async with httpx.AsyncClient(timeout=900, limits=FRESH) as client:
        for index in range(repeats):
            messages = [{"role": "user", "content": grounded_prompt(kind, index)}]
            ttft, total, usage = await stream_usage(
                client, url, {"messages": messages, "max_tokens": 200, "temperature": 0})
            generated = usage.get("completion_tokens", 0)
            rates.append((generated - 1) / (total - ttft) if generated > 1 else 0.0)
            totals.append(total)
            tokens.append(generated)
    return {"tps": statistics.median(rates), "total_ms": statistics.median(totals) * 1000,
            "tokens": statistics.median(tokens)}


def measure(url: str, args: argparse.Namespace, prompts: dict[int, list[str]]) -> dict:
    found: dict[str, dict] = {}
    if "prefill" in args.workloads:
        for n, texts in prompts.items():
            found[f"prefill {n}"] = asyncio.run(prefill(url, texts))
    for concurrency in (1, 4) if "decode" in args.workloads else ():
        result = asyncio.run(level(url, MODEL, concurrency, args.rounds, args.tokens))
        found[f"decode c={concurrency}"] = {
            "tps": result["stream_tps"] if concurrency == 1 else result["aggregate_tps"],
            "ttft_ms": result["ttft_p50_ms"], "errors": result["errors"]}
    for kind in ("copy", "edit"):
        if kind in args.workloads:
            found[kind] = asyncio.run(grounded(url, kind, args.repeats))
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
    results: dict[str, dict] = {}
    # a SIGTERM (timeout, kill) still stops the server under test, through `finally`
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    for server in servers(args, gguf):
        url, process = launch(server)
        try:
            results[server.name] = measure(url, args, prompts)
        finally:
            process.terminate()
            process.wait()
    report(args, gguf, results)


if __name__ == "__main__":
    main()
