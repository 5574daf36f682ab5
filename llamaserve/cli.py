"""The `llamaserve` command line."""

from __future__ import annotations

import dataclasses
import signal
import sys
from pathlib import Path

import click

from . import __version__
from .catalog import CatalogError, load_catalog, resolve
from .engine import LoadOptions
from .hub import ModelFilesError, locate
from .manager import ModelLoadError, ModelManager
from .observability import configure_logging
from .settings import Settings

LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1"}

RUN_EXAMPLES = """
\b
Examples:
  llamaserve run smollm2                      # the bundled tiny model
  llamaserve run smollm2 --alias gpt-4o-mini  # answer to another model name
  llamaserve run ./models/qwen2.5-0.5b-instruct-q4_k_m.gguf --ctx 8192 --port 9000
  llamaserve run ./llava-v1.5-7b-q4_k.gguf --mmproj ./mmproj-model-f16.gguf  # images too
\b
Then, from any OpenAI client:
  curl http://127.0.0.1:8000/v1/chat/completions -H 'Content-Type: application/json' \\
    -d '{"model":"smollm2","messages":[{"role":"user","content":"Say this is a test"}]}'
"""


@click.group(
    epilog="""
\b
Examples:
  llamaserve run smollm2       # serve the bundled tiny model on http://127.0.0.1:8000/v1/
  llamaserve run --help        # every option of `run`
"""
)
@click.version_option(__version__, prog_name="llamaserve")
def main() -> None:
    """Serve GGUF models through llama.cpp behind the OpenAI HTTP API."""


@main.command(epilog=RUN_EXAMPLES)
@click.argument("model")
@click.option("--host", default=None, help="Address to bind.  [default: 127.0.0.1]")
@click.option("--port", type=int, default=None, help="Port to listen on.  [default: 8000]")
@click.option(
    "--alias",
    default=None,
    help="Model id in the API.  [default: the catalog name, else the file stem]",
)
@click.option(
    "--ctx",
    type=click.IntRange(min=16),
    default=None,
    help="Context size in tokens (default: the catalog's, else the model's, max 4096).",
)
@click.option(
    "--threads",
    type=click.IntRange(min=1),
    default=None,
    help="CPU threads for llama.cpp.  [default: physical cores]",
)
@click.option(
    "--gpu-layers",
    type=click.IntRange(min=-1),
    default=None,
    help="Layers to offload to the GPU; -1 = all.  [default: 0]",
)
@click.option(
    "--catalog",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="A models.yaml to use instead of the bundled catalog.",
)
@click.option(
    "--mmproj",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Vision projector GGUF for MODEL: chat messages may then carry images.",
)
@click.option(
    "--block-private-urls",
    is_flag=True,
    default=None,
    help="Refuse image URLs that resolve to private or loopback addresses "
    "(for servers reachable beyond localhost).",
)
@click.option("--api-key", "api_keys", multiple=True,
              help="Require 'Authorization: Bearer KEY' (repeatable; or LLAMASERVE_API_KEY).")
@click.option("--api-key-file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=None, help="A file of accepted API keys, one per line.")
@click.option("--cors-origin", "cors_origins", multiple=True,
              help="Allow browser clients from this origin (repeatable; '*' for any).")
@click.option("--log-format", type=click.Choice(["text", "json"]), default=None,
              help="Log lines as text or one JSON object per line.  [default: text]")
@click.option("--request-timeout", type=click.FloatRange(min=0), default=None,
              help="Seconds a request may generate for; 0 = no limit.  [default: 600]")
@click.option("--verbose", is_flag=True, default=False,
              help="Debug logs, with llama.cpp's and uvicorn's own.")
def run(
    model: str,
    host: str | None,
    port: int | None,
    alias: str | None,
    ctx: int | None,
    threads: int | None,
    gpu_layers: int | None,
    catalog: Path | None,
    api_keys: tuple[str, ...],
    api_key_file: Path | None,
    cors_origins: tuple[str, ...],
    log_format: str | None,
    request_timeout: float | None,
    mmproj: Path | None,
    block_private_urls: bool | None,
    verbose: bool,
) -> None:
    """Load MODEL, keep it resident and serve it over the OpenAI API.

    MODEL is a path to a .gguf file or a name from the catalog (models.yaml), such as smollm2.
    """
    flags = {
        "host": host,
        "port": port,
        "ctx": ctx,
        "threads": threads,
        "gpu_layers": gpu_layers,
        "catalog": catalog,
        "api_keys": list(api_keys) or None,
        "api_key_file": api_key_file,
        "cors_origins": list(cors_origins) or None,
        "log_format": log_format,
        "request_timeout": request_timeout,
        "block_private_urls": block_private_urls or None,
        "verbose": verbose or None,
    }
    # Flags given on the command line win over LLAMASERVE_* variables, which win over defaults.
    settings = Settings(**{k: v for k, v in flags.items() if v is not None})
    configure_logging(settings.verbose, settings.log_format)
    if not settings.keys() and settings.host not in LOOPBACK_HOSTS:
        click.echo(f"warning: serving on {settings.host} without an API key: anyone who can "
                   "reach this address can use the model. Pass --api-key KEY.", err=True)
    try:
        spec = resolve(model, load_catalog(settings.catalog)).with_alias(alias)
        files = locate(spec, projector_override=mmproj)
    except (CatalogError, ModelFilesError) as exc:
        raise click.ClickException(str(exc)) from exc

    if files.projector is not None:
        spec = dataclasses.replace(spec, kind="vision")
    manager = ModelManager()
    manager.add(
        spec,
        files,
        LoadOptions(
            n_ctx=settings.ctx or spec.context,
            n_threads=settings.threads,
            n_gpu_layers=settings.gpu_layers,
            chat_format=spec.chat_format,
            chat_handler=spec.chat_handler,
            verbose=settings.verbose,
        ),
    )
    try:
        manager.load_all()
    except ModelLoadError as exc:
        raise click.ClickException(str(exc)) from exc

    import uvicorn

    from .server import create_app

    app = create_app(manager, settings)
    click.echo(f"serving {spec.id} at http://{settings.host}:{settings.port}/v1/", err=True)
    # uvicorn stops accepting on SIGINT/SIGTERM, lets running requests finish (up to the
    # grace period), then raises the signal again for the previous handler: make that handler
    # a no-op so we get here, free the models and exit 0 instead of dying by the signal.
    for stop_signal in (signal.SIGINT, signal.SIGTERM):
        signal.signal(stop_signal, lambda *_: None)
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_level="info" if settings.verbose else "warning",
        access_log=False,  # ours (llamaserve.access) carries the model and token counts
        timeout_graceful_shutdown=settings.shutdown_grace,
    )
    manager.close()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
