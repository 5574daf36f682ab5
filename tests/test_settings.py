"""Options declared once in Settings: the click options of run and serve, their --help, and
LLAMASERVE_* variables, without starting a server."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner
from pydantic import ValidationError

from llamaserve.cli import main
from llamaserve.cli.options import flag_decls, given, server_options, usage_error
from llamaserve.engine.options import DEFAULT_PARALLEL, DEFAULT_QUEUE_SIZE
from llamaserve.settings import Flag, Settings

SHARED = [name for name, field in Settings.model_fields.items()
          if any(isinstance(item, Flag) and item.shared for item in field.metadata)]


@click.command()
@server_options
def probe(**flags: Any) -> None:
    """Prints the Settings the command line and the environment make."""
    try:
        settings = Settings(**given(flags))
    except ValidationError as exc:  # as make_settings shows it
        raise usage_error(exc) from exc
    click.echo(settings.model_dump_json())


def settings_from(*args: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    result = CliRunner().invoke(probe, list(args), env=env)
    assert result.exit_code == 0, result.output
    return Settings.model_validate_json(result.output).model_dump()


def test_every_setting_has_a_description() -> None:
    assert [name for name, field in Settings.model_fields.items() if not field.description] == []


@pytest.mark.parametrize("command", ["run", "serve"])
def test_help_lists_every_shared_option_with_its_declared_default(command: str) -> None:
    out = CliRunner().invoke(main, [command, "--help"], terminal_width=200).output
    for name in SHARED:
        assert flag_decls(name)[0] in out, name
    assert f"[default: {DEFAULT_PARALLEL}]" in out and f"[default: {DEFAULT_QUEUE_SIZE}]" in out
    assert "[default: physical cores]" in out and "[default: auto]" in out
    assert "[default: -1 for run, 5m for serve]" in out
    assert "Do not serve the chat page at /." in out


def test_nothing_given_is_the_declared_defaults() -> None:
    settings = settings_from()
    defaults = Settings().model_dump()
    assert settings == defaults
    assert settings["port"] == 8000 and settings["playground"] is True


def test_environment_fills_what_the_command_line_leaves_out() -> None:
    env = {"LLAMASERVE_PORT": "9000", "LLAMASERVE_PARALLEL": "2", "LLAMASERVE_VERBOSE": "1"}
    settings = settings_from("--parallel", "3", env=env)
    assert (settings["port"], settings["parallel"], settings["verbose"]) == (9000, 3, True)


def test_flags_of_every_kind(tmp_path: Path) -> None:
    keys = tmp_path / "keys.txt"
    keys.write_text("k3\n")
    settings = settings_from(
        "--max-memory", "8GB", "--keep-alive", "5m", "--gpu-layers", "-1", "--api-key", "k1",
        "--api-key", "k2", "--api-key-file", str(keys), "--cors-origin", "*", "--no-playground",
        "--block-private-urls", "--log-format", "json", "--queue-timeout", "2.5",
    )
    assert settings["max_memory"] == 8_000_000_000 and settings["keep_alive"] == 300
    assert settings["gpu_layers"] == -1 and settings["api_keys"] == ["k1", "k2"]
    assert settings["api_key_file"] == keys and settings["cors_origins"] == ["*"]
    assert settings["playground"] is False and settings["block_private_urls"] is True
    assert settings["log_format"] == "json" and settings["queue_timeout"] == 2.5


@pytest.mark.parametrize(("args", "message"), [
    (["--ctx", "8"], "'--ctx'"),  # the declared range, checked by click
    (["--queue-timeout", "0"], "'--queue-timeout'"),
    (["--log-format", "xml"], "'--log-format'"),
    (["--api-key-file", "/no/such/file"], "'--api-key-file'"),
    (["--max-memory", "lots"], "--max-memory: 'lots' is not a size"),
    (["--keep-alive", "soon"], "--keep-alive: 'soon' is not a duration"),
])
def test_bad_values_are_usage_errors_naming_the_flag(args: list[str], message: str) -> None:
    result = CliRunner().invoke(probe, args)
    assert result.exit_code == 2 and message in result.output
