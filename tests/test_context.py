"""The served context: one decision (`effective_context`) used by the engine, the memory
estimate, `show` and `ps`."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from llamaserve.engine.options import DEFAULT_CONTEXT_CAP, micro_batch
from llamaserve.models.gguf_info import effective_context, read_model_info

from .conftest import start_server


@pytest.mark.parametrize(
    ("requested", "catalog", "trained", "expected"),
    [
        (None, None, 131072, DEFAULT_CONTEXT_CAP),  # a long-context GGUF is capped
        (None, None, 2048, 2048),  # a short one keeps its own
        (None, None, None, DEFAULT_CONTEXT_CAP),  # a header without context_length
        (None, 8192, 131072, 8192),  # the catalog's choice beats the cap
        (1024, 8192, 131072, 1024),  # --ctx beats everything
        (16384, None, 8192, 16384),  # --ctx may exceed the training context (llama.cpp warns)
    ],
)
def test_effective_context(
    requested: int | None, catalog: int | None, trained: int | None, expected: int
) -> None:
    assert effective_context(requested, catalog, trained) == expected


def write_long_context_copy(source: Path, target: Path, context_length: int) -> Path:
    """A copy of `source` whose header claims another training context, patched in place
    with the gguf package (as its gguf-set-metadata tool does)."""
    import gguf

    shutil.copyfile(source, target)
    reader = gguf.GGUFReader(target, "r+")
    arch = bytes(reader.fields["general.architecture"].parts[-1]).decode()
    field = reader.fields[f"{arch}.context_length"]
    field.parts[field.data[0]][0] = context_length
    del reader  # flush the memory map
    return target


@pytest.fixture(scope="module")
def long_context_model(smollm2_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("long") / "smollm2-128k.gguf"
    return write_long_context_copy(smollm2_path, path, 131072)


def test_long_context_copy_claims_131072(long_context_model: Path) -> None:
    assert read_model_info(long_context_model).context_length == 131072


def test_long_context_gguf_is_served_capped_and_everyone_agrees(
    long_context_model: Path, tmp_path: Path
) -> None:
    show = subprocess.run(
        [sys.executable, "-m", "llamaserve", "show", str(long_context_model)],
        capture_output=True, text=True, timeout=120,
    )
    assert show.returncode == 0, show.stderr
    assert "context length  131072" in show.stdout
    assert f"served context  {DEFAULT_CONTEXT_CAP} tokens" in show.stdout
    assert f"at context {DEFAULT_CONTEXT_CAP} x 4 sequences" in show.stdout

    # Estimated for 4 x 131072 tokens this would be ~6 GB and refused under a 1 GB budget.
    live = start_server([str(long_context_model), "--max-memory", "1GB"], tmp_path)
    try:
        models = httpx.get(f"{live.base_url}/api/ps", timeout=30).json()["models"]
        assert [m["context_length"] for m in models] == [DEFAULT_CONTEXT_CAP]
        estimate = read_model_info(long_context_model).estimate(
            DEFAULT_CONTEXT_CAP, micro_batch(0), 4)
        assert models[0]["size"] == estimate.total < 1_000_000_000

        # The engine runs with the same context: asking for more is refused naming it.
        answer = httpx.post(f"{live.base_url}/v1/chat/completions", timeout=60, json={
            "model": "smollm2-128k", "max_tokens": DEFAULT_CONTEXT_CAP,
            "messages": [{"role": "user", "content": "Hi"}],
        })
        assert answer.status_code == 400, answer.text
        assert f"maximum context length is {DEFAULT_CONTEXT_CAP} tokens" in \
            answer.json()["error"]["message"]
        ok = httpx.post(f"{live.base_url}/v1/chat/completions", timeout=60, json={
            "model": "smollm2-128k", "max_tokens": 4,
            "messages": [{"role": "user", "content": "Hi"}],
        })
        assert ok.status_code == 200, ok.text

        ps = subprocess.run(
            [sys.executable, "-m", "llamaserve", "ps", "--port", live.base_url.rsplit(":", 1)[1]],
            capture_output=True, text=True, timeout=60,
        )
        assert ps.returncode == 0, ps.stderr
        row = next(line for line in ps.stdout.splitlines() if line.startswith("smollm2-128k"))
        assert f" {DEFAULT_CONTEXT_CAP} " in row
    finally:
        live.stop()
