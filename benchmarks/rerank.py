"""Reranked documents per second over HTTP: one /v1/rerank request with N short documents,
on the tiny BERT reranker the tests build (and on any reranker GGUF given with --model).

    PYTHONPATH=. python benchmarks/rerank.py                    # N=64, 5 runs, physical cores
    PYTHONPATH=. python benchmarks/rerank.py --threads 1 --model bge-reranker-v2-m3

Each model is served by a `llamaserve run` subprocess. Prints one row per model: documents/s
(N / wall time of the request, median over runs), for one request of N documents and for N
requests of one document each.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import tempfile
from pathlib import Path

import gguf
import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from embeddings import ROOT, Server, texts, timed  # noqa: E402 - the sibling benchmark's helpers


def tiny_reranker(directory: Path) -> Path:
    spec = importlib.util.spec_from_file_location("builders", ROOT / "tests" / "builders.py")
    assert spec is not None and spec.loader is not None
    builders = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(builders)
    return builders.write_tiny_bert(directory / "tiny-reranker.gguf",
                                    pooling=gguf.PoolingType.RANK)


def measure(model: str, args: argparse.Namespace) -> tuple[float, float]:
    documents = texts(args.documents)
    server = Server(model, args.threads)
    try:
        with httpx.Client(base_url=server.base, timeout=600) as client:

            def post(batch: list[str]) -> None:
                response = client.post("/v1/rerank", json={
                    "model": "bench", "query": "the cat and the dog", "documents": batch,
                    "return_documents": False})
                response.raise_for_status()

            batched = timed(args.runs, lambda: post(documents))
            single = timed(args.runs, lambda: [post([d]) for d in documents] and None)
    finally:
        server.stop()
    return args.documents / batched, args.documents / single


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--documents", type=int, default=64, help="documents per request")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="llama.cpp threads")
    parser.add_argument("--model", action="append", default=[],
                        help="another reranker to measure (catalog name or path)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as directory:
        models = {"tiny BERT reranker": str(tiny_reranker(Path(directory)))}
        models.update({name: name for name in args.model})
        rows = [(name, *measure(path, args)) for name, path in models.items()]

    n = args.documents
    print(f"\nReranked documents per second, {n} short documents, median of {args.runs} runs")
    header = f"{'model':<22}{f'1 request of {n}':>18}{f'{n} requests of 1':>20}{'ratio':>9}"
    print(header)
    print("-" * len(header))
    for name, batched, single in rows:
        print(f"{name:<22}{batched:>18.1f}{single:>20.1f}{batched / single:>8.1f}x")


if __name__ == "__main__":
    main()
