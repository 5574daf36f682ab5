"""The `llamaserve` command line."""

from __future__ import annotations

import dataclasses
import errno
import logging
import socket
import sys
from pathlib import Path
from typing import Any

import click
from pydantic import ValidationError

from .. import __version__
from ..host import default_max_memory
from ..models.catalog import Catalog, CatalogError, ModelSpec, load_catalog, resolve, resolve_draft
from ..models.errors import ModelUnavailableError
from ..models.hub import ModelFiles, ModelFilesError, is_local, pull
from ..models.manager import Limits, ModelManager
from ..observability import configure_logging
from ..settings import RUN_KEEP_ALIVE, SERVE_KEEP_ALIVE, Settings, load_options
from .models import pull_options, register
from .options import given, server_options, setting_option, usage_error

logger = logging.getLogger("llamaserve")

LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1"}

RUN_EXAMPLES = """
\b
Examples:
  llamaserve run smollm2                      # the bundled tiny model
  llamaserve run smollm2 --alias gpt-4o-mini  # answer to another model name
  llamaserve run ./models/qwen2.5-0.5b-instruct-q4_k_m.gguf --ctx 8192 --port 9000
  llamaserve run hf:bartowski/Qwen2.5-0.5B-Instruct-GGUF:Q4_K_M   # pulled first if missing
  llamaserve run smollm2 gemma3-270m          # two models, both resident
  llamaserve run ./llava-v1.5-7b-q4_k.gguf --mmproj ./mmproj-model-f16.gguf  # images too
  llamaserve run smollm2 --host 0.0.0.0 --api-key SECRET   # reachable from other machines
\b
Then, from any OpenAI client:
  curl http://127.0.0.1:8000/v1/chat/completions -H 'Content-Type: application/json' \\
    -d '{"model":"smollm2","messages":[{"role":"user","content":"Say this is a test"}]}'
"""

SERVE_EXAMPLES = """
\b
Examples:
  llamaserve serve                            # every model of the bundled catalog
  llamaserve serve --config my-models.yaml --max-memory 8GB --keep-alive 10m
  llamaserve serve --max-models 2 --keep-alive 0
"""


@click.group(
    epilog="""
\b
Examples:
  llamaserve run smollm2       # serve the bundled tiny model on http://127.0.0.1:8000/v1/
  llamaserve pull qwen-vl      # download a catalog model (or hf:OWNER/REPO:Q4_K_M)
  llamaserve list              # models on this machine
  llamaserve serve             # every catalog model, loaded on demand
  llamaserve ps                # what a running server has loaded
  llamaserve run --help        # every option of `run`
"""
)
@click.version_option(__version__, prog_name="llamaserve")
def main() -> None:
    """Serve GGUF models through llama.cpp behind the OpenAI HTTP API."""


register(main)


def make_settings(**flags: Any) -> Settings:
    """Flags given on the command line win over LLAMASERVE_* variables, which win over
    defaults."""
    try:
        settings = Settings(**given(flags))
    except ValidationError as exc:
        raise usage_error(exc) from exc
    if settings.api_key_file is not None and not settings.file_keys():
        # serving with no key at all would be the opposite of what the file asked for
        raise click.UsageError(f"--api-key-file {settings.api_key_file} holds no API key (only "
                               "blank lines and # comments): add one key per line")
    configure_logging(settings.verbose, settings.log_format)
    if not settings.keys() and settings.host not in LOOPBACK_HOSTS:
        logger.warning("serving on %s without an API key: anyone who can reach this address "
                       "can use the model. Pass --api-key KEY.", settings.host)
    return settings


def check_address(settings: Settings) -> None:
    """Refuse a port that is taken before loading anything (a load can take minutes)."""
    family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            probe.bind((settings.host, settings.port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise click.ClickException(
                    f"port {settings.port} is in use (another llamaserve or Ollama?): pass "
                    "--port N") from exc
            raise click.ClickException(
                f"cannot listen on {settings.host}:{settings.port}: {exc.strerror}") from exc


def make_manager(settings: Settings, keep_alive: float) -> ModelManager:
    keep = settings.keep_alive if settings.keep_alive is not None else keep_alive
    budget = settings.max_memory if settings.max_memory is not None else default_max_memory()
    return ModelManager(Limits(max_memory=budget, max_models=settings.max_models,
                               keep_alive=keep))


def with_draft(spec: ModelSpec, settings: Settings, catalog: Catalog) -> ModelSpec:
    """`spec` with the draft model --draft names (instead of its catalog entry's)."""
    if settings.draft is None or spec.kind in ("embedding", "rerank"):
        return spec
    return dataclasses.replace(spec, draft=resolve_draft(settings.draft, catalog))


def pull_with_draft(spec: ModelSpec) -> ModelFiles:
    """The model's files, and its draft model's (pulled when missing)."""
    files = pull(spec, pull_options())
    if spec.draft is not None:
        files = dataclasses.replace(files, draft=pull(spec.draft, pull_options()).weights)
    return files


def serve_app(
    manager: ModelManager, settings: Settings, what: str, chat_model: str = "MODEL"
) -> None:
    from ..server import create_app
    from ..serving import serve

    app = create_app(manager, settings)
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    base = f"http://{host}:{settings.port}"
    logger.info("serving %s at %s/v1/ (OpenAI API)", what, base)
    if settings.playground:
        logger.info("playground: %s/  terminal chat: llamaserve chat %s%s", base, chat_model,
                    "" if settings.port == 8000 else f" --url {base}/v1")
    serve(app, manager, settings)
    manager.close()


@main.command(epilog=RUN_EXAMPLES)
@click.argument("models", nargs=-1, required=True, metavar="MODEL...")
@click.option(
    "--alias",
    default=None,
    help="Model id in the API.  [default: the catalog name, else the file stem]",
)
@setting_option("catalog")
@click.option(
    "--mmproj",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Vision projector GGUF for MODEL: chat messages may then carry images.",
)
@server_options
def run(models: tuple[str, ...], alias: str | None, catalog: Path | None, mmproj: Path | None,
        **flags: Any) -> None:
    """Load MODEL (several may be given), keep it resident and serve it over the OpenAI API.

    MODEL is a path to a .gguf file, a name from the catalog (models.yaml) such as smollm2, or
    a Hugging Face reference hf:OWNER/REPO[:QUANT_OR_FILE][@REVISION]. A model that is not
    downloaded yet is pulled first.
    """
    settings = make_settings(catalog=catalog, **flags)
    check_address(settings)
    for option, value in (("--alias", alias), ("--mmproj", mmproj)):
        if value and len(models) > 1:
            raise click.UsageError(f"{option} applies to one model; give it with a single MODEL")
    try:
        known = load_catalog(settings.catalog)
        specs = [with_draft(resolve(model, known), settings, known) for model in models]
        specs[0] = specs[0].with_alias(alias)
        pulled = [(spec, pull_with_draft(spec)) for spec in specs]
    except (CatalogError, ModelFilesError) as exc:
        raise click.ClickException(str(exc)) from exc
    if mmproj is not None:
        spec, files = pulled[0]
        pulled[0] = (spec, dataclasses.replace(files, projector=mmproj))
    # a projector makes a vision model, whatever the catalog or the file name said
    pulled = [(dataclasses.replace(spec, kind="vision") if files.projector else spec, files)
              for spec, files in pulled]
    manager = make_manager(settings, keep_alive=RUN_KEEP_ALIVE)
    try:
        for spec, files in pulled:
            manager.add(spec, files, load_options(settings, spec))
        manager.load_all()
    except (ValueError, ModelUnavailableError) as exc:
        raise click.ClickException(str(exc)) from exc
    serve_app(manager, settings, ", ".join(spec.id for spec, _ in pulled), pulled[0][0].id)


@main.command(epilog=SERVE_EXAMPLES)
@setting_option("catalog", "--config", "--catalog", help="The models.yaml whose models to serve.")
@server_options
def serve(catalog: Path | None, **flags: Any) -> None:
    """Serve every model of the catalog on demand.

    A model loads on its first request (concurrent first requests share one load) and stays
    resident for --keep-alive; Hub models must be pulled first (`llamaserve pull NAME`).
    """
    settings = make_settings(catalog=catalog, **flags)
    check_address(settings)
    try:
        known = load_catalog(settings.catalog)
    except CatalogError as exc:
        raise click.ClickException(str(exc)) from exc
    manager = make_manager(settings, keep_alive=SERVE_KEEP_ALIVE)
    try:
        specs = [with_draft(resolve(name, known), settings, known) for name in known.models]
    except CatalogError as exc:
        raise click.ClickException(str(exc)) from exc
    for spec in specs:
        manager.add(spec, None, load_options(settings, spec))
    here = [spec.id for spec in specs if is_local(spec)]
    serve_app(manager, settings,
              f"{len(here)} of the catalog's {len(specs)} models on demand (here without a "
              f"download: {', '.join(here) or 'none'}; `llamaserve pull NAME` for the others)",
              here[0] if here else "MODEL")


@main.command(epilog="""
\b
Examples:
  llamaserve chat smollm2                     # starts a server if none answers
  llamaserve chat llava --url http://box:8000/v1 --api-key SECRET
  echo "Say this is a test" | llamaserve chat smollm2   # one-shot, from a pipe
""")
@click.argument("model")
@click.option("--url", default="http://127.0.0.1:8000/v1", show_default=True,
              help="The server's OpenAI base URL; if nothing answers there, a local "
              "`llamaserve run MODEL` is started for the session.")
@setting_option("api_key", help="Sent as 'Authorization: Bearer KEY'.", envvar=True)
@click.option("--system", default=None, help="A system message to start with.")
def chat(model: str, url: str, api_key: str | None, system: str | None) -> None:
    """Chat with MODEL in the terminal, streaming replies.

    Type a message and Enter; a line starting with \"\"\" starts a multi-line message. /help
    lists the commands: /set system TEXT, /set parameter temperature 0.2, /image PATH, /retry,
    /reset, /bye. Ctrl-C stops a reply.
    """
    from .chat import run_chat

    run_chat(model, url, api_key, system)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
