"""How long one chat request with an image takes, with the tiny test projector beside SmolLM2.

    python benchmarks/vision_request.py            # 9 runs per row
    python benchmarks/vision_request.py --runs 20

Starts `llamaserve run smollm2 --mmproj <tiny projector>` and prints the median and minimum
wall time of one non-streamed request (HTTP, base64, Pillow decoding, mtmd encoding, prompt
evaluation and generation) for a text-only prompt and for the same prompt with an image.
Run it on an otherwise idle machine: llama.cpp's threads slow down sharply when other
processes compete for the cores.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.builders import data_uri, image_bytes, write_llava_projector  # noqa: E402
from tests.conftest import free_port  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=9)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        projector = write_llava_projector(Path(tmp) / "mmproj-tiny.gguf")
        port = free_port()
        server = subprocess.Popen(
            [sys.executable, "-m", "llamaserve", "run", "smollm2", "--mmproj", str(projector),
             "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            base = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                try:
                    if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    time.sleep(0.2)
            table(base, args.runs)
        finally:
            server.terminate()
            server.wait()


def table(base: str, runs: int) -> None:
    question = {"type": "text", "text": "Describe the image."}
    small = data_uri(image_bytes("PNG"))
    photo = data_uri(image_bytes("JPEG", size=(640, 480)), "image/jpeg")
    rows = [
        ("text only", [question, {"type": "text", "text": ""}]),
        ("40x24 PNG", [question, {"type": "image_url", "image_url": small}]),
        ("640x480 JPEG", [question, {"type": "image_url", "image_url": photo}]),
    ]
    print(f"{'prompt':<14}{'max_tokens':>11}{'prompt tok':>11}{'median ms':>11}{'min ms':>9}")
    with httpx.Client(base_url=base, timeout=120) as client:
        for name, content in rows:
            for max_tokens in (1, 16):
                body = {"model": "smollm2", "max_tokens": max_tokens, "temperature": 0,
                        "messages": [{"role": "user", "content": content}]}
                times = []
                for _ in range(runs):
                    started = time.perf_counter()
                    answer = client.post("/v1/chat/completions", json=body).json()
                    times.append(time.perf_counter() - started)
                print(f"{name:<14}{max_tokens:>11}{answer['usage']['prompt_tokens']:>11}"
                      f"{statistics.median(times) * 1000:>11.0f}{min(times) * 1000:>9.0f}")


if __name__ == "__main__":
    main()
