"""Pulls that are killed: a SIGKILL mid-transfer resumes with `Range` in the next process and
leaves no partial file behind; a blob under its final name that was never hashed (an older
pull killed while hashing) is not listed, not served, and fixed by the next pull; two pulls of
one file at once end with one good file and one transfer."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import free_port
from .fake_hub import FakeFile, FakeHub
from .test_hub import SMOL_FILE, SMOL_REPO, cache_dir, llamaserve, sha256

BIG_REPO = "llamaserve-test/big-GGUF"
BIG_FILE = "big-Q8_0.gguf"
BIG_REF = f"hf:{BIG_REPO}:Q8_0"
BIG_SIZE = 40 << 20
RATE = 10e6  # bytes per second the fake Hub serves the big file at: about 4 s for all of it
CATALOG = f"models:\n  smol-hub:\n    source: {{hub: {SMOL_REPO}, file: {SMOL_FILE}}}\n"


@pytest.fixture(scope="module")
def hub(smollm2_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeHub]:
    files = tmp_path_factory.mktemp("hub-files")
    big = files / BIG_FILE
    big.write_bytes(os.urandom(BIG_SIZE))
    fake = FakeHub()
    fake.add(BIG_REPO, BIG_FILE, big)
    fake.add(SMOL_REPO, SMOL_FILE, smollm2_path)
    yield fake.start()
    fake.stop()


@pytest.fixture
def big(hub: FakeHub) -> Iterator[FakeFile]:
    fake = hub.repos[BIG_REPO].files[BIG_FILE]
    hub.throttle[fake.sha256] = RATE
    yield fake
    hub.throttle.pop(fake.sha256, None)


@pytest.fixture
def env(hub: FakeHub, tmp_path: Path) -> dict[str, str]:
    catalog = tmp_path / "models.yaml"
    catalog.write_text(CATALOG)
    base = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    return base | {"HF_ENDPOINT": hub.url, "HF_HOME": str(tmp_path / "hf"),
                   "HF_HUB_DISABLE_TELEMETRY": "1", "LLAMASERVE_CATALOG": str(catalog)}


def start_pull(env: dict[str, str], name: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "llamaserve", "pull", name], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def partials(env: dict[str, str], repo: str) -> list[Path]:
    return sorted((cache_dir(env, repo) / "blobs").glob("*.incomplete"))


def kill_mid_transfer(env: dict[str, str]) -> int:
    """Start a pull of the big file and SIGKILL it once some of it is on disk; the bytes
    left in its partial file."""
    pull = start_pull(env, BIG_REF)
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            found = partials(env, BIG_REPO)
            if found and found[0].stat().st_size >= 4 << 20:
                break
            assert pull.poll() is None, pull.communicate()
            time.sleep(0.05)
        else:
            pytest.fail("the pull wrote nothing in 60 s")
    finally:
        pull.send_signal(signal.SIGKILL)
        pull.communicate()
    found = partials(env, BIG_REPO)
    assert len(found) == 1
    done = found[0].stat().st_size
    assert 0 < done < BIG_SIZE
    return done


def weights_path(result: subprocess.CompletedProcess[str]) -> Path:
    return Path(result.stdout.strip().splitlines()[0].split(": ", 1)[1])


def test_a_killed_pull_resumes_in_the_next_process(
    env: dict[str, str], hub: FakeHub, big: FakeFile
) -> None:
    done = kill_mid_transfer(env)
    before = len(hub.downloads(BIG_FILE))
    hub.throttle.pop(big.sha256)
    again = llamaserve(env, "pull", BIG_REF)
    assert again.returncode == 0, again.stderr
    gets = hub.downloads(BIG_FILE)[before:]
    assert [g.range for g in gets] == [f"bytes={done}-"]
    assert sha256(weights_path(again)) == big.sha256
    assert "downloaded and verified" in again.stderr
    assert partials(env, BIG_REPO) == []


def plant_partial(env: dict[str, str], fake: FakeFile, data: bytes) -> Path:
    """A partial download as a pull killed while hashing leaves it: all the bytes, under the
    name huggingface_hub 2.x gives its per-process temporary file."""
    blobs = cache_dir(env, BIG_REPO) / "blobs"
    blobs.mkdir(parents=True)
    partial = blobs / f"{fake.sha256}.0123abcd.incomplete"
    partial.write_bytes(data)
    return partial


def test_a_pull_killed_while_hashing_finishes_without_downloading_again(
    env: dict[str, str], hub: FakeHub, big: FakeFile
) -> None:
    plant_partial(env, big, big.path.read_bytes())
    before = len(hub.downloads(BIG_FILE))
    again = llamaserve(env, "pull", BIG_REF)
    assert again.returncode == 0, again.stderr
    assert hub.downloads(BIG_FILE)[before:] == []
    assert sha256(weights_path(again)) == big.sha256
    assert partials(env, BIG_REPO) == []


def test_a_corrupt_partial_is_downloaded_again_from_the_start(
    env: dict[str, str], hub: FakeHub, big: FakeFile
) -> None:
    hub.throttle.pop(big.sha256)
    plant_partial(env, big, corrupted(big.path))
    before = len(hub.downloads(BIG_FILE))
    again = llamaserve(env, "pull", BIG_REF)
    assert again.returncode == 0, again.stderr
    assert "downloading it again" in again.stderr
    assert [g.range for g in hub.downloads(BIG_FILE)[before:]] == [None]
    assert sha256(weights_path(again)) == big.sha256
    assert partials(env, BIG_REPO) == []


def plant_unverified(env: dict[str, str], hub: FakeHub, data: bytes) -> Path:
    """SmolLM2 in the cache as an older pull killed while hashing left it: the blob under its
    final name (the SHA-256), linked from the snapshot, holding `data`."""
    fake = hub.repos[SMOL_REPO].files[SMOL_FILE]
    repo = cache_dir(env, SMOL_REPO)
    commit = hub.repos[SMOL_REPO].commit
    blob = repo / "blobs" / fake.sha256
    blob.parent.mkdir(parents=True)
    blob.write_bytes(data)
    pointer = repo / "snapshots" / commit / SMOL_FILE
    pointer.parent.mkdir(parents=True)
    pointer.symlink_to(os.path.relpath(blob, pointer.parent))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    return blob


def corrupted(path: Path) -> bytes:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # in the weights: the header still reads, the model loads
    return bytes(data)


def test_an_unverified_corrupt_blob_is_not_listed_and_the_next_pull_fixes_it(
    env: dict[str, str], hub: FakeHub, smollm2_path: Path
) -> None:
    blob = plant_unverified(env, hub, corrupted(smollm2_path))
    listed = llamaserve(env, "list")
    assert listed.returncode == 0, listed.stderr
    assert "smol-hub" not in listed.stdout
    assert f"not listed: hf:{SMOL_REPO}:{SMOL_FILE}" in listed.stderr
    before = len(hub.downloads(SMOL_FILE))
    fixed = llamaserve(env, "pull", "smol-hub")
    assert fixed.returncode == 0, fixed.stderr
    assert "already downloaded" not in fixed.stderr
    assert "corrupt" in fixed.stderr and "downloaded and verified" in fixed.stderr
    assert len(hub.downloads(SMOL_FILE)) == before + 1
    assert sha256(blob) == sha256(smollm2_path)
    assert "smol-hub" in llamaserve(env, "list").stdout
    assert "already downloaded" in llamaserve(env, "pull", "smol-hub").stderr


def test_run_refuses_an_unverified_corrupt_blob(
    env: dict[str, str], hub: FakeHub, smollm2_path: Path
) -> None:
    blob = plant_unverified(env, hub, corrupted(smollm2_path))
    offline = env | {"HF_HUB_OFFLINE": "1", "LLAMASERVE_THREADS": "1"}
    run = subprocess.Popen(
        [sys.executable, "-m", "llamaserve", "run", "smol-hub", "--port", str(free_port())],
        env=offline, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _, stderr = run.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        run.kill()
        _, stderr = run.communicate()
        pytest.fail(f"run served the corrupt file: {stderr[-2000:]}")
    assert run.returncode != 0
    assert "corrupt" in stderr and "llamaserve pull smol-hub" in stderr
    assert "Traceback" not in stderr
    assert not blob.exists()


def test_a_verified_blob_is_trusted_without_hashing_it_again(
    env: dict[str, str], hub: FakeHub, smollm2_path: Path
) -> None:
    assert llamaserve(env, "pull", "smol-hub").returncode == 0
    again = llamaserve(env, "pull", "smol-hub")
    assert again.returncode == 0 and "already downloaded" in again.stderr
    assert "smol-hub" in llamaserve(env, "list").stdout


def test_two_pulls_at_once_share_one_transfer(
    env: dict[str, str], hub: FakeHub, big: FakeFile
) -> None:
    done = kill_mid_transfer(env)
    before = len(hub.downloads(BIG_FILE))
    pulls = [start_pull(env, BIG_REF) for _ in range(2)]
    results = [p.communicate(timeout=120) for p in pulls]
    for pull, (_, stderr) in zip(pulls, results, strict=True):
        assert pull.returncode == 0, stderr
    paths = {Path(out.strip().splitlines()[0].split(": ", 1)[1]) for out, _ in results}
    assert len(paths) == 1 and sha256(paths.pop()) == big.sha256
    assert [g.range for g in hub.downloads(BIG_FILE)[before:]] == [f"bytes={done}-"]
    assert sum("already downloaded" in err for _, err in results) == 1
    assert partials(env, BIG_REPO) == []
    blobs = list((cache_dir(env, BIG_REPO) / "blobs").iterdir())
    assert [b.name for b in blobs] == [big.sha256]
