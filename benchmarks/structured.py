"""Structured outputs: how often sampled JSON breaks its schema, and what a schema costs in
tokens/s, for llamaserve and (given a binary) llama.cpp's llama-server on the same GGUF.

    # llamaserve from this checkout, SmolLM2, 2 threads:
    python benchmarks/structured.py --threads 2
    # and llama-server on the same schemas and model:
    python benchmarks/structured.py --llama-server /tmp/llama-build/bin/llama-server
    # a server you started yourself (e.g. another branch of llamaserve):
    python benchmarks/structured.py --start none --target main=http://127.0.0.1:8000/v1 \\
        --model-name smollm2

Validity: every schema family of tests/schema_families.py is sampled --samples times at
temperature 1.2 (seeds 0, 1, ...; one request per sample, --parallel at a time). A sample is
invalid when its content does not parse as JSON or does not validate against the schema
(formats included where the family says so); samples cut by max_tokens (finish_reason
"length") are counted apart, and a 4xx answer is reported with its message.

Speed: one streamed chat completion of --tokens tokens at temperature 0, the same prompt with
no constraint (end-of-generation tokens banned, so it runs the full length) and with two JSON
schemas (a long free-text string; an array of many small records, where the grammar has more
to do per token), and --parallel such streams together (aggregate tokens/s); medians over
--rounds rounds, each running every schema in turn so that load changes hit them alike.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import jsonschema

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # for tests/schema_families
from load import (  # noqa: E402
    chat_chunks,
    delta_content,
    end_of_generation_tokens,
    resolve_model,
    start,
)

from tests.schema_families import FAMILIES, Family  # noqa: E402

TEMPERATURE = 1.2
SPEED_PROMPT = "Write a long story about a lighthouse keeper and the sea."
SPEED_SCHEMAS: dict[str, dict[str, Any] | None] = {
    "none": None,
    "free string": {"type": "object", "properties": {"story": {"type": "string"}},
                    "required": ["story"]},
    "many records": {"type": "array", "minItems": 40, "items": {
        "type": "object", "properties": {
            "name": {"type": "string", "maxLength": 12},
            "age": {"type": "integer", "minimum": 0, "maximum": 150},
            "city": {"type": "string", "maxLength": 12}},
        "required": ["name", "age", "city"], "additionalProperties": False}},
}
FRESH = httpx.Limits(max_keepalive_connections=0)  # llama-server closes kept-alive connections


def response_format(schema: dict[str, Any]) -> dict[str, Any]:
    return {"type": "json_schema", "json_schema": {"name": "answer", "schema": schema,
                                                   "strict": True}}


def judge(family: Family, content: str) -> str | None:
    """None when `content` is valid, else why not."""
    try:
        value = json.loads(content)
    except json.JSONDecodeError as exc:
        return f"not JSON ({exc.msg})"
    checker = jsonschema.Draft202012Validator.FORMAT_CHECKER if family.formats else None
    validator = jsonschema.Draft202012Validator(family.schema, format_checker=checker)
    error = jsonschema.exceptions.best_match(validator.iter_errors(value))
    return None if error is None else f"schema: {error.message[:80]}"


async def sample(client: httpx.AsyncClient, url: str, model: str, family: Family,
                 seed: int) -> tuple[str, str]:
    """(outcome, detail): outcome is valid, invalid, length or error."""
    body = {"model": model, "messages": [{"role": "user", "content": family.prompt}],
            "temperature": TEMPERATURE, "seed": seed, "max_tokens": family.max_tokens,
            "response_format": response_format(family.schema)}
    reply = await client.post(f"{url}/chat/completions", json=body)
    if reply.status_code != 200:
        try:
            message = reply.json()["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = reply.text
        return "error", f"{reply.status_code}: {message[:100]}"
    choice = reply.json()["choices"][0]
    content = choice["message"].get("content") or ""
    if choice.get("finish_reason") == "length":
        return "length", content
    problem = judge(family, content)
    return ("valid", content) if problem is None else ("invalid", f"{problem}: {content!r}")


async def validity(url: str, model: str, samples: int, parallel: int, families: list[Family],
                   verbose: bool) -> dict[str, dict[str, Any]]:
    results: dict[str, dict[str, Any]] = {}
    gate = asyncio.Semaphore(parallel)
    async with httpx.AsyncClient(timeout=600, limits=FRESH) as client:
        for family in families:
            async def one(seed: int, family: Family = family) -> tuple[str, str]:
                async with gate:
                    return await sample(client, url, model, family, seed)

            outcomes = await asyncio.gather(*(one(seed) for seed in range(samples)))
            counts = {kind: sum(o == kind for o, _ in outcomes)
                      for kind in ("valid", "invalid", "length", "error")}
            examples = [detail for o, detail in outcomes if o in ("invalid", "error")]
            results[family.name] = {**counts, "example": examples[0] if examples else ""}
            if verbose:
                for detail in examples:
                    print(f"  {family.name}: {detail[:300]}", file=sys.stderr)
    return results


async def stream_rate(client: httpx.AsyncClient, url: str, model: str, tokens: int,
                      schema: dict[str, Any] | None, no_eog: dict[str, float]) -> tuple[int, float]:
    """(tokens, decode seconds after the first token) of one streamed completion."""
    body: dict[str, Any] = {"model": model, "max_tokens": tokens, "temperature": 0,
                            "stream": True,
                            "messages": [{"role": "user", "content": SPEED_PROMPT}]}
    if schema is None:
        body["logit_bias"] = no_eog
    else:
        body["response_format"] = response_format(schema)
    start_time, first, count = time.perf_counter(), None, 0
    async for chunk in chat_chunks(client, url, body):
        if delta_content(chunk):
            count += 1
            if first is None:
                first = time.perf_counter()
    end = time.perf_counter()
    return count, end - (first if first is not None else start_time)


async def speed(url: str, model: str, tokens: int, rounds: int, parallel: int,
                no_eog: dict[str, float]) -> dict[str, dict[str, float]]:
    """Rounds interleave the schemas (none, free string, many records, none, ...), so that a
    change in the machine's load hits all of them alike."""
    rates: dict[str, list[float]] = {name: [] for name in SPEED_SCHEMAS}
    lengths: dict[str, list[int]] = {name: [] for name in SPEED_SCHEMAS}
    aggregate: dict[str, list[float]] = {name: [] for name in SPEED_SCHEMAS}
    async with httpx.AsyncClient(timeout=600, limits=FRESH) as client:
        for schema in SPEED_SCHEMAS.values():  # warm-up: tokenizer, compile, caches
            await stream_rate(client, url, model, 8, schema, no_eog)
        for _ in range(rounds):
            for name, schema in SPEED_SCHEMAS.items():
                count, seconds = await stream_rate(client, url, model, tokens, schema, no_eog)
                rates[name].append((count - 1) / seconds if count > 1 and seconds > 0 else 0.0)
                lengths[name].append(count)
            for name, schema in SPEED_SCHEMAS.items():
                started = time.perf_counter()
                together = await asyncio.gather(*(stream_rate(client, url, model, tokens,
                                                              schema, no_eog)
                                                  for _ in range(parallel)))
                wall = time.perf_counter() - started
                aggregate[name].append(sum(count for count, _ in together) / wall)
    return {name: {"stream_tps": statistics.median(rates[name]),
                   "tokens": statistics.median(lengths[name]),
                   "aggregate_tps": statistics.median(aggregate[name])}
            for name in SPEED_SCHEMAS}


def mask_cost(gguf: Path) -> dict[str, float]:
    """Microseconds per token the constraint adds to one sequence (mask + accept), in
    process, replaying a valid answer to each speed schema: the figure the load on the
    machine disturbs least."""
    import numpy as np
    from llama_cpp import Llama

    from llamaserve.engine.constraint import SchemaCompiler
    from llamaserve.engine.types import JsonSchema

    vocab_only = Llama(str(gguf), vocab_only=True, verbose=False)
    compiler = SchemaCompiler(vocab_only._model.vocab, vocab_only.n_vocab())
    compiler.tokenizer()
    answers = {
        "free string": json.dumps({"story": "The keeper climbed the stairs again. " * 40}),
        "many records": json.dumps([{"name": f"Ann{i}", "age": 20 + i, "city": "Oslo"}
                                    for i in range(40)]),
    }
    row = np.random.default_rng(0).standard_normal(vocab_only.n_vocab()).astype(np.float32)
    costs = {}
    for name, answer in answers.items():
        schema = SPEED_SCHEMAS[name]
        assert schema is not None
        tokens = vocab_only.tokenize(answer.encode(), add_bos=False, special=False)
        best = float("inf")
        for _ in range(3):
            constraint = compiler.compile(JsonSchema(schema, "bench"))
            assert constraint is not None
            started = time.perf_counter()
            for token in tokens:
                constraint.mask(row.copy())
                constraint.accept(token)
            best = min(best, (time.perf_counter() - started) / len(tokens))
        costs[name] = best * 1e6
    vocab_only.close()
    return costs


def report(name: str, valid: dict[str, dict[str, Any]] | None,
           rates: dict[str, dict[str, float]] | None, args: argparse.Namespace) -> None:
    print(f"\n## {name}")
    if valid is not None:
        print(f"\nvalidity, {args.samples} samples per family at temperature {TEMPERATURE}:\n")
        print("| family | invalid | cut by max_tokens | valid | rejected (4xx) | example |")
        print("|---|---|---|---|---|---|")
        for family, r in valid.items():
            example = r["example"].replace("|", "\\|").replace("\n", "\\n")[:90]
            print(f"| {family} | {r['invalid']}/{args.samples} | {r['length']} | {r['valid']} "
                  f"| {r['error']} | {example} |")
        broken = sum(1 for r in valid.values() if r["invalid"])
        print(f"\nfamilies with invalid output: {broken} of {len(valid)}")
    if rates is not None:
        print(f"\nspeed, {args.tokens} tokens at temperature 0, one stream and {args.parallel} "
              f"streams together (medians of {args.rounds} interleaved rounds):\n")
        print("| schema | tokens | stream t/s | vs none | aggregate t/s | vs none |")
        print("|---|---|---|---|---|---|")
        base = rates.get("none")
        for schema, r in rates.items():
            one = f"{r['stream_tps'] / base['stream_tps']:.2f}x" if base else ""
            many = f"{r['aggregate_tps'] / base['aggregate_tps']:.2f}x" if base else ""
            print(f"| {schema} | {r['tokens']:.0f} | {r['stream_tps']:.1f} | {one} "
                  f"| {r['aggregate_tps']:.1f} | {many} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2",
                        help="smollm2 | gemma3-270m | PATH.gguf  [default: smollm2]")
    parser.add_argument("--model-name", default="bench", help="the model id servers answer to")
    parser.add_argument("--start", nargs="+", default=["llamaserve", "llama-server"],
                        help="servers to start, one at a time (none: only --target)")
    parser.add_argument("--target", action="append", default=[], help="NAME=BASE_URL")
    parser.add_argument("--llama-server", type=Path, default=os.environ.get("LLAMA_SERVER"),
                        help="llama.cpp's llama-server binary (or $LLAMA_SERVER)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--ctx", type=int, default=2048, help="context per sequence")
    parser.add_argument("--parallel", type=int, default=4)
    parser.add_argument("--samples", type=int, default=24, help="per schema family")
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--families", nargs="+", choices=[f.name for f in FAMILIES],
                        default=[f.name for f in FAMILIES])
    parser.add_argument("--skip", choices=["validity", "speed"], action="append", default=[])
    parser.add_argument("--verbose", action="store_true", help="print every invalid sample")
    args = parser.parse_args()
    gguf = resolve_model(args.model)
    no_eog = {str(token): -100.0 for token in end_of_generation_tokens(gguf)}
    kinds = [k for k in args.start if k != "none"]
    if "llama-server" in kinds and args.llama_server is None:
        print("no --llama-server binary given: skipping llama-server", file=sys.stderr)
        kinds.remove("llama-server")

    def measure(name: str, url: str) -> None:
        valid = None if "validity" in args.skip else asyncio.run(
            validity(url, args.model_name, args.samples, args.parallel,
                     [f for f in FAMILIES if f.name in args.families], args.verbose))
        rates = None if "speed" in args.skip else asyncio.run(
            speed(url, args.model_name, args.tokens, args.rounds, args.parallel, no_eog))
        report(name, valid, rates, args)

    print(f"{gguf.name}, {args.threads} threads, {args.parallel} parallel")
    if "speed" not in args.skip:
        costs = mask_cost(gguf)
        print("\nllamaserve's constraint per token and sequence, in process (mask + accept, "
              "best of 3): " + ", ".join(f"{name} {us:.0f} µs" for name, us in costs.items()))
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


if __name__ == "__main__":
    main()
