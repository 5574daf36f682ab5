"""Embeddings per second over HTTP: one request with a batch of N short strings versus N
requests of one string each, on the tiny BERT embedder the tests build and on SmolLM2.

    python benchmarks/embeddings.py                   # N=64, 5 runs each, physical cores
    python benchmarks/embeddings.py --inputs 256 --runs 10 --threads 1

Each model is served by a `llamaserve run` subprocess (run it from the repository root, with
PYTHONPATH=. to measure this checkout). Prints one row per model: embeddings/s (N / wall time
of the N embeddings, median over runs) for the batch and for the single requests, and the ratio.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
WORDS = ["cat", "dog", "tree", "river", "house", "music", "coffee", "train"]


def texts(n: int) -> list[str]:
    return [f"the {WORDS[i % len(WORDS)]} number {i} is here" for i in range(n)]


def tiny_bert(directory: Path) -> Path:
    # The tests' builder, loaded by path: benchmarks/ is not a package beside tests/.
    spec = importlib.util.spec_from_file_location("builders", ROOT / "tests" / "builders.py")
    assert spec is not None and spec.loader is not None
    builders = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(builders)
    return builders.write_tiny_bert(directory / "tiny-bert.gguf")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    def __init__(self, model: str, threads: int | None) -> None:
        self.port = free_port()
        command = [sys.executable, "-m", "llamaserve", "run", model, "--alias", "bench",
                   "--port", str(self.port)]
        if threads:
            command += ["--threads", str(threads)]
        self.process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ}
        )
        self.base = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                sys.exit(f"llamaserve run {model} exited with {self.process.returncode}")
            try:
                if httpx.get(f"{self.base}/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.1)
        self.stop()
        sys.exit(f"llamaserve run {model} did not become ready")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(30)


def timed(runs: int, work: Callable[[], None]) -> float:
    """Median seconds of `work` over `runs` runs, after one warm-up run."""
    work()
    durations = []
    for _ in range(runs):
        start = time.perf_counter()
        work()
        durations.append(time.perf_counter() - start)
    return statistics.median(durations)


def measure(model: str, args: argparse.Namespace) -> tuple[float, float]:
    inputs = texts(args.inputs)
    server = Server(model, args.threads)
    try:
        with httpx.Client(base_url=server.base, timeout=600) as client:

            def post(payload: str | list[str]) -> None:
                response = client.post(
                    "/v1/embeddings",
                    json={"model": "bench", "input": payload, "encoding_format": "float"},
                )
                response.raise_for_status()

            batch = timed(args.runs, lambda: post(inputs))
            single = timed(args.runs, lambda: [post(text) for text in inputs] and None)
    finally:
        server.stop()
    return args.inputs / batch, args.inputs / single


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--inputs", type=int, default=64, help="strings per batch")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="llama.cpp threads")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as directory:
        # SmolLM2 by its catalog name: served as `llamaserve run smollm2` would serve it.
        models = {"tiny BERT (64 dims)": str(tiny_bert(Path(directory))), "SmolLM2 135M": "smollm2"}
        rows = [(name, *measure(path, args)) for name, path in models.items()]

    n = args.inputs
    print(f"\nEmbeddings per second, {n} short strings, median of {args.runs} runs")
    header = f"{'model':<22}{f'1 request of {n}':>18}{f'{n} requests of 1':>20}{'ratio':>9}"
    print(header)
    print("-" * len(header))
    for name, batched, single in rows:
        print(f"{name:<22}{batched:>18.1f}{single:>20.1f}{batched / single:>8.1f}x")


if __name__ == "__main__":
    main()
