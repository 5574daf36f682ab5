"""What a new user meets first on the command line: clear messages, quiet logs, names that
are found, values that mean what they say."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from llamaserve.cli.models import from_now
from llamaserve.models.catalog import hub_spelling

from .conftest import LiveServer, free_port, start_server


def llamaserve(*args: str, env: dict[str, str] | None = None, timeout: float = 120
               ) -> subprocess.CompletedProcess[str]:
    import os

    return subprocess.run([sys.executable, "-m", "llamaserve", *args], capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, **(env or {})})


def test_a_port_in_use_is_reported_before_any_model_loads() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        started = time.monotonic()
        result = llamaserve("run", "smollm2", "--port", str(port))
    assert result.returncode != 0
    assert f"port {port} is in use (another llamaserve or Ollama?): pass --port N" in \
        result.stderr
    assert "loading smollm2" not in result.stderr and "serving" not in result.stderr
    assert "Traceback" not in result.stderr
    assert time.monotonic() - started < 30


def test_a_misspelt_model_name_gets_a_suggestion() -> None:
    result = llamaserve("run", "smolm2", "--port", str(free_port()))
    assert result.returncode != 0
    assert "Did you mean smollm2?" in result.stderr


@pytest.mark.parametrize(("typed", "reference"), [
    ("hf.co/bartowski/Qwen2.5-0.5B-Instruct-GGUF:Q4_K_M",
     "hf:bartowski/Qwen2.5-0.5B-Instruct-GGUF:Q4_K_M"),
    ("https://huggingface.co/ggml-org/Qwen2.5-VL-3B-Instruct-GGUF",
     "hf:ggml-org/Qwen2.5-VL-3B-Instruct-GGUF"),
    ("bartowski/Qwen2.5-0.5B-Instruct-GGUF:Q4_K_M",
     "hf:bartowski/Qwen2.5-0.5B-Instruct-GGUF:Q4_K_M"),
    ("hf:owner/repo", "hf:owner/repo"),
    ("smollm2", "smollm2"),
    ("models/tiny.gguf", "models/tiny.gguf"),  # a path, not a repo
])
def test_ollama_style_and_bare_hub_references_are_accepted(typed: str, reference: str) -> None:
    assert hub_spelling(typed) == reference


def test_an_existing_directory_pair_stays_a_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                                 ) -> None:
    (tmp_path / "owner" / "repo").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    assert hub_spelling("owner/repo") == "owner/repo"


def test_a_size_without_a_unit_is_refused() -> None:
    result = llamaserve("run", "smollm2", "--max-memory", "8", "--port", str(free_port()))
    assert result.returncode == 2
    assert "--max-memory: '8' needs a unit: write e.g. 8GB or 8MB" in result.stderr


def test_a_bad_gpu_layers_value_is_a_plain_usage_error() -> None:
    result = llamaserve("run", "smollm2", "--gpu-layers", "lots", "--port", str(free_port()))
    assert result.returncode == 2
    assert "--gpu-layers: 'lots' is not a number of layers" in result.stderr
    assert "Value error" not in result.stderr and "pydantic" not in result.stderr


@pytest.mark.parametrize("command", ["run", "serve", "pull", "list", "show", "rm", "ps", "info",
                                     "chat"])
def test_every_command_help_has_examples(command: str) -> None:
    result = llamaserve(command, "--help")
    assert result.returncode == 0
    assert "Examples:" in result.stdout


def test_ps_without_a_server_says_how_to_start_one() -> None:
    port = free_port()
    result = llamaserve("ps", "--port", str(port))
    assert result.returncode != 0
    assert f"http://127.0.0.1:{port}/api/ps" in result.stderr
    assert "llamaserve run MODEL" in result.stderr


def test_rm_of_a_model_that_is_not_downloaded_says_so(tmp_path: Path) -> None:
    result = llamaserve("rm", "qwen-vl", "--yes", env={"HF_HOME": str(tmp_path),
                                                       "HF_HUB_OFFLINE": "1"})
    assert result.returncode != 0
    assert "is not downloaded here; nothing to remove" in result.stderr
    assert "pull" not in result.stderr


def test_ps_until_reads_as_ollama_shows_it() -> None:
    now = float(int(time.time()))  # whole seconds, as the ISO stamps are
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now + 4 * 60 + 30))
    assert from_now(stamp, now) == "4 minutes from now"
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now + 1))
    assert from_now(stamp, now) == "1 second from now"


@pytest.mark.parametrize("path", ["/chat/completions", "/completions", "/embeddings"])
def test_a_client_without_v1_is_pointed_at_it(http: httpx.Client, path: str) -> None:
    response = http.post(path, json={"model": "smollm2"})
    assert response.status_code == 404
    assert f"Did you mean /v1{path}?" in response.json()["error"]["message"]


@pytest.fixture(scope="module")
def json_log_server(tmp_path_factory: pytest.TempPathFactory) -> LiveServer:
    live = start_server(["smollm2", "--ctx", "256", "--log-format", "json"],
                        tmp_path_factory.mktemp("jsonlog"))
    yield live
    live.stop()


def test_logs_are_quiet_and_every_line_is_json(json_log_server: LiveServer) -> None:
    base = json_log_server.base_url
    assert httpx.post(f"{base}/v1/embeddings", timeout=60,
                      json={"model": "smollm2", "input": "hello"}).status_code == 200
    assert httpx.post(f"{base}/v1/chat/completions", timeout=60, json={
        "model": "smollm2", "max_tokens": 2,
        "messages": [{"role": "user", "content": "Hi"}]}).status_code == 200
    json_log_server.stop()
    lines = [line for line in json_log_server.log().splitlines() if line.strip()]
    records = [json.loads(line) for line in lines]  # every line is one JSON object
    messages = " ".join(record["message"] for record in records)
    assert "llama_context" not in messages and "pooling_type" not in messages
    assert not any(record["logger"].startswith(("llama.cpp", "httpx")) for record in records)
    assert f"{base}/v1/" in messages  # the banner: API URL, playground and terminal chat
    assert f"playground: {base}/" in messages
    assert "llamaserve chat smollm2" in messages


def test_serve_counts_the_catalog_models_that_are_here(tmp_path: Path) -> None:
    import os
    import signal

    port = free_port()
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "llamaserve", "serve", "--port", str(port)], stdout=out,
            stderr=subprocess.STDOUT, env={**os.environ, "HF_HOME": str(tmp_path / "hf"),
                                           "HF_HUB_OFFLINE": "1"})
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and "serving" not in log.read_text():
                time.sleep(0.2)
        finally:
            process.send_signal(signal.SIGINT)
            process.wait(30)
    text = log.read_text()
    # smollm2 and gemma3-270m come from installed packages; the Hub models are not pulled
    from llamaserve.models.catalog import load_catalog

    total = len(load_catalog().models)
    assert f"serving 2 of the catalog's {total} models on demand" in text, text
    assert "gemma3-270m, smollm2" in text or "smollm2, gemma3-270m" in text
