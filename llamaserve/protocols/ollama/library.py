"""What Ollama's model routes (/api/tags, /api/show, /api/ps) say about a served model: its
files, digest, `details`, `model_info` and capabilities, read from the GGUF header.

`digest`: the SHA-256 the Hugging Face Hub announced for the file, which names its blob in
the HF cache (verified by the pull); for a file outside the cache (a pip package, a path), a
SHA-256 of its path, size and modification time, stable while the file is unchanged and never
the cost of hashing gigabytes.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from ...models.digests import SHA256_HEX
from ...models.gguf_info import GGUFError, ModelInfo, read_model_info, split_parts
from ...models.hub import ModelFiles, ModelFilesError, is_local, locate_cached
from ...models.manager import ResidentModel

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Described:
    files: ModelFiles
    info: ModelInfo
    size: int  # bytes on disk: every part and the projector
    modified: float  # the newest file's mtime
    digest: str


def digest_of(path: Path) -> str:
    blob = path.resolve()
    if SHA256_HEX.match(blob.name):
        return blob.name  # the HF cache names a blob after the LFS SHA-256
    stat = blob.stat()
    key = f"{blob}\0{stat.st_size}\0{stat.st_mtime_ns}"
    return hashlib.sha256(key.encode()).hexdigest()


@lru_cache(maxsize=64)
def _header(path: Path, size: int, mtime_ns: int) -> ModelInfo:
    return read_model_info(path)


def header_of(path: Path) -> ModelInfo:
    """The GGUF header, read once per version of the file (GGUFError if it is not one)."""
    stat = path.stat()
    return _header(path, stat.st_size, stat.st_mtime_ns)


# Files of models not loaded yet (`serve`): located once, as locating a package's assembled
# file hashes it (about a second for Gemma 3 270M).
_located: dict[str, ModelFiles] = {}


def _files(model: ResidentModel) -> ModelFiles | None:
    if model.files is not None:
        return model.files
    if model.spec.id not in _located:
        if not is_local(model.spec):
            return None
        try:
            _located[model.spec.id] = locate_cached(model.spec)
        except ModelFilesError:
            return None
    return _located[model.spec.id]


def describe(model: ResidentModel) -> Described | None:
    """The model's files and header, or None when its files are not on this machine (or not
    readable as GGUF: logged). Blocking (file system, header): call it from a worker thread."""
    files = _files(model)
    if files is None:
        return None
    try:
        paths = split_parts(files.weights) + ([files.projector] if files.projector else [])
        stats = [os.stat(path) for path in paths]
        info = model.info or header_of(files.weights)
        digest = digest_of(files.weights)
    except OSError:  # removed since (e.g. /api/delete)
        _located.pop(model.spec.id, None)
        return None
    except GGUFError as exc:
        logger.warning("cannot describe %s: %s", model.spec.id, exc)
        return None
    return Described(files, info, sum(s.st_size for s in stats),
                     max(s.st_mtime for s in stats), digest)


def human_number(count: int) -> str:
    """A parameter count as Ollama writes it: 134.52M, 7B, 3.1B."""
    for scale, unit, digits in ((1e9, "B", 1), (1e6, "M", 2)):
        if count >= scale:
            number = count / scale
            return f"{number:.0f}{unit}" if number == int(number) else f"{number:.{digits}f}{unit}"
    return f"{count / 1e3:.0f}K" if count >= 1000 else str(count)


def details(info: ModelInfo | None, projector: Path | None) -> dict[str, Any]:
    family = info.architecture if info else ""
    return {
        "parent_model": "",
        "format": "gguf",
        "family": family,
        "families": [family] + (["clip"] if projector else []) if family else None,
        "parameter_size": human_number(info.n_params) if info else "",
        "quantization_level": (info.quantization or "") if info else "",
    }


def accepts_images(model: ResidentModel, files: ModelFiles | None) -> bool:
    return model.spec.kind == "vision" or (files is not None and files.projector is not None)


def embeds_only(model: ResidentModel, info: ModelInfo) -> bool:
    return model.spec.kind == "embedding" or info.embeds_only


def capabilities(model: ResidentModel, described: Described) -> list[str]:
    """What the model can be asked for. Every chat model takes tools (templates that know
    none get llamaserve's tool instructions); `insert` (suffix) needs fill-in-the-middle
    tokens named in the header."""
    info = described.info
    if embeds_only(model, info):
        return ["embedding"]
    found = ["completion", "tools"]
    if accepts_images(model, described.files):
        found.append("vision")
    if any(key in info.metadata for key in ("tokenizer.ggml.fim_pre_token_id",
                                             "tokenizer.ggml.prefix_token_id")):
        found.append("insert")
    return found


def model_info(info: ModelInfo) -> dict[str, Any]:
    """The header's keys (long arrays such as the vocabulary left out, the template in
    `template`), with `general.parameter_count` counted when the file does not say."""
    fields: dict[str, Any] = {"general.parameter_count": info.n_params}
    fields.update((key, value) for key, value in info.metadata.items()
                  if key != "tokenizer.chat_template")
    return dict(sorted(fields.items()))


def served_context(model: ResidentModel, info: ModelInfo) -> int:
    """The context a request gets: decided once per model (the manager keeps it in
    options.n_ctx after the first load; the same rule before it)."""
    return info.effective_context(model.options.n_ctx, model.spec.context,
                                  embedding=embeds_only(model, info))


def parameters(model: ResidentModel, info: ModelInfo) -> str:
    """The defaults a request gets, in Modelfile PARAMETER syntax."""
    defaults = model.spec.defaults
    lines = [f"num_ctx {served_context(model, info)}"]
    for name in ("temperature", "top_k", "top_p", "min_p", "repeat_penalty"):
        value = getattr(defaults, name)
        if value is not None:
            lines.append(f"{name} {value:g}")
    if defaults.max_tokens is not None:
        lines.append(f"num_predict {defaults.max_tokens}")
    return "\n".join(lines)
