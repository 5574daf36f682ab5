"""The command line: help, version, bad arguments, serving under an alias, clean Ctrl-C."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import openai
import pytest

from llamaserve import __version__

from .conftest import start_server


def llamaserve(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "llamaserve", *args], capture_output=True, text=True, timeout=120
    )


@pytest.mark.parametrize("args", [["--help"], ["run", "--help"]])
def test_help_shows_examples(args: list[str]) -> None:
    result = llamaserve(*args)
    assert result.returncode == 0
    assert "Examples:" in result.stdout
    assert "llamaserve run smollm2" in result.stdout


def test_run_help_lists_every_option() -> None:
    out = llamaserve("run", "--help").stdout
    for option in (
        "--host",
        "--port",
        "--alias",
        "--ctx",
        "--threads",
        "--gpu-layers",
        "--verbose",
    ):
        assert option in out


def test_version() -> None:
    result = llamaserve("--version")
    assert result.returncode == 0
    assert __version__ in result.stdout


def test_unknown_model_name_exits_with_a_clear_message() -> None:
    result = llamaserve("run", "no-such-model")
    assert result.returncode != 0
    assert "unknown model 'no-such-model'" in result.stderr
    assert "smollm2" in result.stderr  # lists what is known
    assert "Traceback" not in result.stderr


def test_missing_gguf_file_exits_with_a_clear_message(tmp_path: Path) -> None:
    result = llamaserve("run", str(tmp_path / "nothing.gguf"))
    assert result.returncode != 0
    assert "model file not found" in result.stderr
    assert "Traceback" not in result.stderr


def test_not_a_gguf_file_exits_naming_the_file(tmp_path: Path) -> None:
    fake = tmp_path / "fake.gguf"
    fake.write_bytes(b"this is not a gguf file" * 100)
    result = llamaserve("run", str(fake))
    assert result.returncode != 0
    assert str(fake) in result.stderr
    assert "Traceback" not in result.stderr


def test_seed_client_code_against_an_alias(smollm2_path: Path, tmp_path: Path) -> None:
    """The seed's text calls, unchanged, against `llamaserve run smollm2 --alias ...`."""
    live = start_server(["smollm2", "--alias", "Qwen-VL-Chat-7B", "--ctx", "512"], tmp_path)
    try:
        client = openai.OpenAI(base_url=live.v1, api_key="IGNORED")
        models = client.models.list()
        assert [m.id for m in models.data] == ["Qwen-VL-Chat-7B"]
        chat = client.chat.completions.create(
            model="Qwen-VL-Chat-7B",
            messages=[{"role": "user", "content": "Say this is a test"}],
            max_tokens=8,
        )
        assert chat.choices[0].message.content is not None
        completion = client.completions.create(
            model="Qwen-VL-Chat-7B", prompt="Say this is a", max_tokens=4
        )
        assert completion.choices[0].text is not None
    finally:
        code = live.stop(signal.SIGINT)
    assert code == 0, live.log()
    assert "Traceback" not in live.log()


def test_local_gguf_path_is_served_under_its_file_stem(smollm2_path: Path, tmp_path: Path) -> None:
    # no --ctx: the context comes from the GGUF header (capped at 4096)
    live = start_server([str(smollm2_path), "--threads", "1"], tmp_path)
    try:
        client = openai.OpenAI(base_url=live.v1, api_key="IGNORED")
        assert [m.id for m in client.models.list().data] == [smollm2_path.stem]
    finally:
        live.stop()
