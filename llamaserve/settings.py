"""One Settings object: command-line flags, LLAMASERVE_* environment variables, defaults."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from .engine.options import DEFAULT_PARALLEL, DEFAULT_QUEUE_SIZE, DEFAULT_QUEUE_TIMEOUT
from .host import physical_cores

_DURATION = re.compile(r"(\d+(?:\.\d*)?)(ms|s|m|h|d)")
_DURATION_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
_SIZE = re.compile(r"^(\d+(?:\.\d*)?)\s*([KMGT]?)(i?)B?$", re.IGNORECASE)


def parse_duration(value: Any) -> float:
    """Seconds from a keep-alive as Ollama writes it: `5m`, `1h30m`, `90s`, `300` (seconds),
    `0` (unload at once) or any negative number (keep forever)."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    text = str(value).strip().lower()
    try:
        return float(text)
    except ValueError:
        pass
    negative = text.startswith("-")
    body = text.lstrip("-")
    parts = _DURATION.findall(body)
    if not parts or "".join(n + u for n, u in parts) != body:
        raise ValueError(
            f"'{value}' is not a duration: write e.g. 5m, 1h30m, 90s, 0 (unload at once) or "
            "-1 (keep forever)"
        )
    seconds = sum(float(n) * _DURATION_UNITS[u] for n, u in parts)
    return -seconds if negative else seconds


def parse_size(value: Any) -> int:
    """Bytes from `8GB`, `512MiB`, `2g` or a plain number of bytes."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    match = _SIZE.match(str(value).strip())
    if match is None:
        raise ValueError(f"'{value}' is not a size: write e.g. 8GB, 512MB, 2GiB")
    number, prefix, binary = match.groups()
    base = 1024 if binary else 1000
    return int(float(number) * base ** " KMGT".index(prefix.upper() or " "))


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LLAMASERVE_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    ctx: int | None = Field(default=None, ge=16, description="context size; default per model")
    threads: int = Field(default_factory=physical_cores, ge=1)
    gpu_layers: int | Literal["auto"] = Field(
        default="auto", description="-1 offloads every layer; auto: all when llama.cpp has a GPU"
    )
    # Concurrency: sequences decoded together per model, and requests waiting for one
    parallel: int = Field(default=DEFAULT_PARALLEL, ge=1, le=64,
                          description="requests decoded together per model")
    queue_size: int = Field(default=DEFAULT_QUEUE_SIZE, ge=0,
                            description="requests that may wait for a free sequence")
    queue_timeout: float = Field(default=DEFAULT_QUEUE_TIMEOUT, gt=0,
                                 description="seconds a request may wait before a 503")
    verbose: bool = False
    catalog: Path | None = Field(default=None, description="models.yaml; default: the bundled one")
    max_body_bytes: int = Field(default=32 * 1024 * 1024, ge=1024)
    # Security and operations
    api_key: str | None = Field(default=None, description="one key (LLAMASERVE_API_KEY)")
    api_keys: list[str] = Field(default_factory=list, description="keys from --api-key")
    api_key_file: Path | None = Field(default=None, description="a file with one key per line")
    cors_origins: list[str] = Field(default_factory=list)
    log_format: Literal["text", "json"] = "text"
    request_timeout: float = Field(default=600, ge=0, description="seconds; 0 = no limit")
    playground: bool = Field(default=True, description="serve the chat page at /")
    shutdown_grace: float = Field(default=10, ge=0, description="seconds to finish requests")

    def keys(self) -> list[str]:
        """Every accepted API key: flags, LLAMASERVE_API_KEY and the key file."""
        keys = [*self.api_keys, *([self.api_key] if self.api_key else [])]
        if self.api_key_file is not None:
            lines = self.api_key_file.read_text(encoding="utf-8").splitlines()
            keys += [line.strip() for line in lines if line.strip() and not line.startswith("#")]
        return keys
    # Image URLs in chat messages (vision models)
    block_private_urls: bool = Field(
        default=False, description="refuse image URLs whose host resolves to a private address"
    )
    image_timeout: float = Field(default=10.0, gt=0, description="seconds to fetch one image")
    image_max_bytes: int = Field(default=20 * 1024 * 1024, ge=1024)
    image_max_redirects: int = Field(default=3, ge=0)
    max_images: int = Field(default=16, ge=0, description="images in one request")
    # The model manager
    max_memory: int | None = Field(default=None, ge=0, description="bytes; default: 80% free")
    max_models: int | None = Field(default=None, ge=1)
    keep_alive: float | None = Field(default=None, description="seconds; default per command")

    @field_validator("max_memory", mode="before")
    @classmethod
    def _size(cls, value: Any) -> Any:
        return None if value is None else parse_size(value)

    @field_validator("keep_alive", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> Any:
        return None if value is None else parse_duration(value)

    @field_validator("gpu_layers", mode="before")
    @classmethod
    def _layers(cls, value: Any) -> Any:
        if isinstance(value, str) and value.strip().lower() != "auto":
            return int(value)
        return value
