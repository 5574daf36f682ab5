"""One Settings object: command-line flags, LLAMASERVE_* environment variables, defaults.

Each option is declared once, as a field below: its name (the flag `--name-with-dashes` and
the variable `LLAMASERVE_NAME`), type, range, default and help (`description`). A field marked
with `Flag` is also an option of `llamaserve run` and `serve`; cli_options.py builds the click
options from these declarations, so `--help` shows what is declared here and nothing else.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import Field, FilePath, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from .engine.options import (
    DEFAULT_CONTEXT_CAP,
    DEFAULT_DRAFT_MAX,
    DEFAULT_PARALLEL,
    DEFAULT_QUEUE_SIZE,
    DEFAULT_QUEUE_TIMEOUT,
    LoadOptions,
)
from .host import physical_cores, resolve_gpu_layers

if TYPE_CHECKING:
    from .models.catalog import ModelSpec

# How long an idle model stays loaded when neither --keep-alive nor the request says:
# `run` serves the models it was given for as long as it runs, `serve` frees idle ones.
RUN_KEEP_ALIVE = -1.0
SERVE_KEEP_ALIVE = 300.0


@dataclass(frozen=True)
class Flag:
    """How a setting is written on the command line, beyond what its field says.

    `decls`: the flag's spellings (default `--name-with-dashes`; `--no-name` for a setting
    that is on by default, its help then "Do not ..." + the description). `metavar`: a syntax
    of the setting's own (SIZE, DURATION), so the flag takes text and Settings parses it.
    `default`: the default in words for --help, where the value alone says little or is
    computed. `shared`: one of the options `run` and `serve` share; False for a setting that
    commands place themselves (--catalog)."""

    decls: tuple[str, ...] = ()
    metavar: str | None = None
    default: str | None = None
    shared: bool = True

_DURATION = re.compile(r"(\d+(?:\.\d*)?)(ms|s|m|h|d)")
_DURATION_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
_SIZE = re.compile(r"^(\d+(?:\.\d*)?)\s*([KMGT]?)(i?)B?$", re.IGNORECASE)


def parse_duration(value: Any) -> float:
    """Seconds from a keep-alive as Ollama writes it: `5m`, `1h30m`, `90s`, `300` (seconds),
    `0` (unload at once) or any negative number (keep forever)."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        # clamped first: float() of a 5,000-digit integer overflows, and str() of it fails
        too_long = isinstance(value, int) and abs(value) > MAX_DURATION
        shown = "a number that large" if too_long else value
        return _bounded_duration(float(min(max(value, -2 * MAX_DURATION), 2 * MAX_DURATION)),
                                 shown)
    text = str(value).strip().lower()
    try:
        number = float(text)
    except ValueError:
        number = None
    if number is not None:
        return _bounded_duration(number, value)
    negative = text.startswith("-")
    body = text.lstrip("-")
    parts = _DURATION.findall(body)
    if not parts or "".join(n + u for n, u in parts) != body:
        raise ValueError(
            f"'{value}' is not a duration: write e.g. 5m, 1h30m, 90s, 0 (unload at once) or "
            "-1 (keep forever)"
        )
    seconds = sum(float(n) * _DURATION_UNITS[u] for n, u in parts)
    return _bounded_duration(-seconds if negative else seconds, value)


# Beyond this a duration is not meant literally (and dates past year 9999 break `ps`)
MAX_DURATION = 1e10  # seconds, ~317 years


def _bounded_duration(seconds: float, value: Any) -> float:
    """`seconds`, if finite and within MAX_DURATION: `nan` or `inf` (which float() reads)
    once made the keep-alive timer spin and /api/ps fail until a restart."""
    if not math.isfinite(seconds) or abs(seconds) > MAX_DURATION:
        raise ValueError(
            f"'{value}' is not a duration: write e.g. 5m, 1h30m, 90s, 0 (unload at once) or "
            "-1 (keep forever)"
        )
    return seconds


def parse_size(value: Any) -> int:
    """Bytes from `8GB`, `512MiB`, `2g` or `1000B`. Text needs a unit: `--max-memory 8` is
    far more likely to mean 8 GB than 8 bytes, so it is refused rather than guessed."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    match = _SIZE.match(str(value).strip())
    if match is None:
        raise ValueError(f"'{value}' is not a size: write e.g. 8GB, 512MB, 2GiB")
    if not match.group(2) and not str(value).strip().upper().endswith("B"):
        raise ValueError(f"'{value}' needs a unit: write e.g. {value}GB or {value}MB "
                         f"({value}B for bytes)")
    number, prefix, binary = match.groups()
    base = 1024 if binary else 1000
    return int(float(number) * base ** " KMGT".index(prefix.upper() or " "))


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LLAMASERVE_", extra="ignore")

    # Where to listen
    host: Annotated[str, Flag()] = Field(default="127.0.0.1", description="Address to bind.")
    port: Annotated[int, Flag()] = Field(default=8000, ge=0, le=65535,
                                         description="Port to listen on.")
    # How each model runs
    ctx: Annotated[int | None, Flag(
        default=f"the catalog's, else the model's, max {DEFAULT_CONTEXT_CAP}")] = Field(
        default=None, ge=16, description="Context size in tokens.")
    threads: Annotated[int, Flag(default="physical cores")] = Field(
        default_factory=physical_cores, ge=1, description="CPU threads for llama.cpp.")
    # Concurrency: sequences decoded together per model, and requests waiting for one
    parallel: Annotated[int, Flag()] = Field(
        default=DEFAULT_PARALLEL, ge=1, le=64,
        description="Requests decoded together per model (each gets --ctx tokens of KV cache).")
    queue_size: Annotated[int, Flag()] = Field(
        default=DEFAULT_QUEUE_SIZE, ge=0,
        description="Requests that may wait for a free sequence; more get 503.")
    queue_timeout: Annotated[float, Flag()] = Field(
        default=DEFAULT_QUEUE_TIMEOUT, gt=0,
        description="Seconds a request may wait for a free sequence before a 503.")
    gpu_layers: Annotated[int | Literal["auto"], Flag(metavar="auto|N")] = Field(
        default="auto",
        description="Layers to offload to the GPU; -1 = all, 0 = none, auto = all when "
        "llama.cpp was built with CUDA/Metal/Vulkan.")
    deterministic: Annotated[bool, Flag()] = Field(
        default=False,
        description="Bit-identical outputs whatever else is decoded at the same time "
        "(63-token micro-batches, flash attention; CPU only): prompts evaluate 20-50 % slower, "
        "the more the longer. Without it a request repeats its output under the same "
        "concurrency.")
    cache_type_k: Annotated[Literal["f16", "q8_0", "q4_0"], Flag()] = Field(
        default="f16", description="KV cache type for K: q8_0 takes 53 % of f16's memory, q4_0 "
        "28 %.")
    cache_type_v: Annotated[Literal["f16", "q8_0", "q4_0"], Flag()] = Field(
        default="f16", description="KV cache type for V (quantized: flash attention is "
        "turned on, as llama.cpp needs it).")
    reasoning_format: Annotated[Literal["auto", "none"], Flag()] = Field(
        default="auto",
        description="Thinking models: auto = their reasoning (<think>...</think>, detected "
        "from the chat template) apart from the answer, as reasoning_content; none = left in "
        "the content.")
    # Speculative decoding (engine/speculative.py)
    speculative: Annotated[Literal["auto", "ngram", "draft", "off"], Flag()] = Field(
        default="auto",
        description="Speculative decoding: ngram = draft tokens by prompt lookup (the request's "
        "own prompt and output), draft = with the draft model, auto = the draft model when "
        "there is one, else ngram; adaptive per request, off = never.")
    draft_max: Annotated[int, Flag()] = Field(
        default=DEFAULT_DRAFT_MAX, ge=0, le=64,
        description="Speculative decoding: most draft tokens per request and step (0 = off).")
    draft: Annotated[str | None, Flag(metavar="MODEL", default="the catalog entry's")] = Field(
        default=None,
        description="Draft model for speculative decoding (a catalog name, hf: reference or "
        ".gguf path) sharing the served model's vocabulary.")
    # The model manager
    max_memory: Annotated[int | None, Flag(
        metavar="SIZE", default="80% of the memory free at start")] = Field(
        default=None, ge=0,
        description="Memory budget for resident models, e.g. 8GB; least recently used idle "
        "models are unloaded to stay under it.")
    max_models: Annotated[int | None, Flag(default="no limit")] = Field(
        default=None, ge=1, description="Most models resident at once.")
    keep_alive: Annotated[float | None, Flag(
        metavar="DURATION",
        default=f"{RUN_KEEP_ALIVE:g} for run, {SERVE_KEEP_ALIVE / 60:g}m for serve")] = Field(
        default=None,
        description="How long an idle model stays loaded: 5m, 1h, 0 = unload after each "
        "request, -1 = forever.")
    # Security and operations
    api_keys: Annotated[list[str], Flag(decls=("--api-key",))] = Field(
        default_factory=list,
        description="Require 'Authorization: Bearer KEY' or 'x-api-key: KEY' (repeatable; or "
                    "LLAMASERVE_API_KEY).")
    api_key_file: Annotated[FilePath | None, Flag()] = Field(
        default=None, description="A file of accepted API keys, one per line.")
    cors_origins: Annotated[list[str], Flag(decls=("--cors-origin",))] = Field(
        default_factory=list,
        description="Allow browser clients from this origin (repeatable; '*' for any).")
    allowed_hosts: Annotated[list[str], Flag(decls=("--allowed-host",))] = Field(
        default_factory=list,
        description="Also answer requests whose Host header names this (repeatable; '*' for "
        "any). A server bound to a loopback address answers only its own addresses, "
        "localhost and this machine's names, so web pages cannot reach it by DNS rebinding.")
    log_format: Annotated[Literal["text", "json"], Flag()] = Field(
        default="text", description="Log lines as text or one JSON object per line.")
    request_timeout: Annotated[float, Flag()] = Field(
        default=600, ge=0, description="Seconds a request may generate for; 0 = no limit.")
    allow_private_urls: Annotated[bool, Flag()] = Field(
        default=False,
        description="Fetch image URLs from private, loopback and link-local addresses too "
        "(refused by default, redirects included).")
    block_private_urls: Annotated[bool, Flag()] = Field(
        default=False,
        description="Ignored, kept for old command lines: private addresses are refused by "
        "default (see --allow-private-urls).")
    max_image_pixels: Annotated[int, Flag()] = Field(
        default=40_000_000, ge=1,
        description="Largest image accepted, in pixels (width x height, read from its header "
        "before decoding); larger ones are a 400.")
    playground: Annotated[bool, Flag()] = Field(
        default=True, description="Serve the chat page at /.")
    state_dir: Annotated[Path | None, Flag(metavar="DIR", default="in memory")] = Field(
        default=None,
        description="Keep stored /v1/responses (previous_response_id) in an SQLite file in "
        "this directory, so conversations survive a restart.")
    verbose: Annotated[bool, Flag()] = Field(
        default=False, description="Debug logs, with llama.cpp's and uvicorn's own.")
    # Placed by each command itself (run: --catalog, serve: --config)
    catalog: Annotated[Path | None, Flag(default="the bundled catalog", shared=False)] = Field(
        default=None, description="A models.yaml to use instead of the bundled catalog.")
    # Only from the environment (LLAMASERVE_*)
    api_key: str | None = Field(
        default=None, description="One more accepted API key, from LLAMASERVE_API_KEY.")
    max_body_bytes: int = Field(default=32 * 1024 * 1024, ge=1024,
                                description="Largest request body accepted; larger is a 413.")
    shutdown_grace: float = Field(
        default=10, ge=0,
        description="Seconds running requests get to finish on shutdown; then they end as if "
        "they had reached max_tokens (finish_reason length).")
    read_timeout: float = Field(
        default=30, gt=0,
        description="Seconds a client may take to send a request's headers, and may pause "
        "while sending its body; slower connections are closed (408 for a body).")
    # Image URLs in chat messages (vision models)
    image_timeout: float = Field(default=10.0, gt=0, description="Seconds to fetch one image.")
    image_max_bytes: int = Field(default=20 * 1024 * 1024, ge=1024,
                                 description="Largest image accepted, in bytes.")
    image_max_redirects: int = Field(default=3, ge=0,
                                     description="Redirects followed to fetch one image.")
    max_images: int = Field(default=16, ge=0, description="Images in one request.")
    max_request_image_pixels: int = Field(
        default=256_000_000, ge=1,
        description="Pixels of all the images of one request together (from their headers).")
    max_image_side: int = Field(
        default=2048, ge=16,
        description="Images are decoded scaled down to fit this many pixels on their longest "
        "side (or to the projector's own size, when it scales every image to one square).")
    max_stored_responses: int = Field(
        default=1000, ge=1,
        description="Responses kept for previous_response_id and GET /v1/responses/{id}; "
        "the least recently used are dropped beyond it (in memory, also beyond 256 MB).")

    def keys(self) -> list[str]:
        """Every accepted API key: flags, LLAMASERVE_API_KEY and the key file."""
        return [*self.api_keys, *([self.api_key] if self.api_key else []), *self.file_keys()]

    def file_keys(self) -> list[str]:
        """The keys of --api-key-file: its lines but blank ones and # comments."""
        if self.api_key_file is None:
            return []
        lines = self.api_key_file.read_text(encoding="utf-8").splitlines()
        return [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]

    @field_validator("max_memory", mode="before")
    @classmethod
    def _size(cls, value: Any) -> Any:
        return None if value is None else parse_size(value)

    @field_validator("keep_alive", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> Any:
        return None if value is None else parse_duration(value)

    @field_validator("state_dir")
    @classmethod
    def _state_dir(cls, value: Path | None) -> Path | None:
        if value is not None and value.exists() and not value.is_dir():
            raise ValueError(f"{value} is not a directory")
        return value

    @field_validator("gpu_layers", mode="before")
    @classmethod
    def _layers(cls, value: Any) -> Any:
        if isinstance(value, str) and value.strip().lower() != "auto":
            try:
                return int(value)
            except ValueError:
                raise ValueError(f"'{value}' is not a number of layers: write auto, -1 (all), "
                                 "0 (none) or a count") from None
        return value


def load_options(settings: Settings, spec: ModelSpec) -> LoadOptions:
    """How `spec` is loaded under these settings: models given at start (cli) and models
    registered while serving (a pull through the Ollama API) alike."""
    return LoadOptions(
        n_ctx=settings.ctx or spec.context,
        n_threads=settings.threads,
        n_gpu_layers=resolve_gpu_layers(settings.gpu_layers),
        chat_format=spec.chat_format,
        chat_handler=spec.chat_handler,
        verbose=settings.verbose,
        parallel=settings.parallel,
        queue_size=settings.queue_size,
        queue_timeout=settings.queue_timeout,
        deterministic=settings.deterministic,
        cache_type_k=settings.cache_type_k,
        cache_type_v=settings.cache_type_v,
        speculative=settings.speculative,
        draft_max=settings.draft_max,
    )
