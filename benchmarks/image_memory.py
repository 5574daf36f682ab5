"""Server memory for large images: peak and held RSS of the server process for one chat
request with N data-URI PNGs of SIDExSIDE (one colour, so ~105 KB each), and for one alone.

SmolLM2 with the tiny LLaVA projector of tests/builders.py. Run from a checkout:
    python benchmarks/image_memory.py            # 16 images of 6000x6000, then 1
The per-request pixel cap is raised so the images are decoded, not refused (--default-cap
keeps it: the 16 images are then a 400 from their headers). To measure another checkout, run
from outside any checkout with PYTHONPATH=/path/to/checkout: `python -m llamaserve` puts the
current directory first on sys.path.
"""

from __future__ import annotations

import argparse
import io
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.builders import data_uri, write_llava_projector  # noqa: E402
from tests.conftest import start_server  # noqa: E402


def status(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM of a process, in MB."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            fields[name] = int(value.split()[0]) // 1024
    return fields


def png(side: int) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (side, side), (200, 30, 30)).save(buffer, "PNG")
    return buffer.getvalue()


def measure(count: int, side: int, tmp: Path, default_cap: bool) -> None:
    projector = write_llava_projector(tmp / "mmproj-tiny.gguf")
    server = start_server(
        ["smollm2", "--ctx", "1024", "--mmproj", str(projector)], tmp,
        env={} if default_cap else {"LLAMASERVE_MAX_REQUEST_IMAGE_PIXELS": str(10**12)})
    try:
        uri = data_uri(png(side))
        pid = server.process.pid
        warm = {"model": "smollm2", "max_tokens": 1,
                "messages": [{"role": "user", "content": "Hi"}]}
        httpx.post(f"{server.v1}chat/completions", json=warm, timeout=600)
        before = status(pid)
        content = [{"type": "text", "text": "Describe."}]
        content += [{"type": "image_url", "image_url": {"url": uri}}] * count
        body = {"model": "smollm2", "max_tokens": 1,
                "messages": [{"role": "user", "content": content}]}
        started = time.monotonic()
        response = httpx.post(f"{server.v1}chat/completions", json=body, timeout=600)
        elapsed = time.monotonic() - started
        time.sleep(1)
        after = status(pid)
        print(f"| {count} x {side}x{side} PNG ({len(uri) // 1024} KB URI each) | "
              f"{response.status_code} | {elapsed:.1f} s | {before['VmRSS']} MB | "
              f"{after['VmHWM']} MB (+{after['VmHWM'] - before['VmHWM']}) | "
              f"{after['VmRSS']} MB (+{after['VmRSS'] - before['VmRSS']}) |", flush=True)
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--side", type=int, default=6000)
    parser.add_argument("--default-cap", action="store_true",
                        help="keep the default per-request pixel cap")
    args = parser.parse_args()
    print("| request | status | time | RSS before | peak RSS | RSS after |")
    print("|---|---|---|---|---|---|")
    for count in (args.images, 1):
        with tempfile.TemporaryDirectory() as tmp:
            measure(count, args.side, Path(tmp), args.default_cap)


if __name__ == "__main__":
    main()
