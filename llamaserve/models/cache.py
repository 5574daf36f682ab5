"""The models on this machine: listing them (`llamaserve list`) and removing Hub downloads
from the Hugging Face cache (`llamaserve rm`).

huggingface_hub deletes whole revisions (`scan_cache_dir().delete_revisions`), which would take
every other quantisation of the same repo with it; `remove` unlinks just the model's files
and the blobs no other snapshot uses, and the repo folder once nothing is left in it.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

from .catalog import Catalog, HubSource, ModelSpec, PackageSource
from .download import forget, is_verified
from .gguf_info import GGUFError, read_model_info, split_parts
from .hub import ModelFilesError, _gguf_candidates, _package_dir, pin

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LocalModel:
    name: str
    origin: str  # "hub owner/repo" or "package name"
    path: Path | None  # None: assembled by its package on first run
    size: int | None
    modified: float | None
    quantization: str | None


def _quantization(path: Path) -> str | None:
    try:
        return read_model_info(path).quantization
    except (GGUFError, OSError):
        return None


def _hub_files(verified: bool = False) -> list[tuple[str, str, Path, int, float]]:
    """(repo, file, snapshot path, size, modified) of every cached file (`verified`: only
    those whose hash was checked), newest revision first."""
    from huggingface_hub import scan_cache_dir
    from huggingface_hub.errors import CacheNotFound

    try:
        cache = scan_cache_dir()
    except CacheNotFound:
        return []
    rows = []
    for repo in cache.repos:
        if repo.repo_type != "model":
            continue
        for revision in sorted(repo.revisions, key=lambda r: -r.last_modified):
            for cached in revision.files:
                if verified and not is_verified(cached.file_path):
                    continue
                name = str(cached.file_path.relative_to(revision.snapshot_path))
                rows.append((repo.repo_id, name, cached.file_path, cached.size_on_disk,
                             cached.blob_last_modified))
    return rows


def list_local(catalog: Catalog) -> list[LocalModel]:
    """Catalog models shipped by installed packages, and every GGUF model in the HF cache
    (under its catalog name when an entry points at it, else as `hf:OWNER/REPO:FILE`)."""
    models: list[LocalModel] = []
    for name, entry in catalog.models.items():
        source = entry.source
        if isinstance(source, PackageSource) and (package := _package_dir(source)) is not None:
            path = package / source.file if source.file else None
            if path is not None and not path.is_file():
                continue
            stat = path.stat() if path is not None else None
            models.append(LocalModel(
                name, f"package {source.pip or source.package}", path,
                stat.st_size if stat else None, stat.st_mtime if stat else None,
                _quantization(path) if path else None,
            ))
    hub_files = _hub_files(verified=True)  # an unchecked file is not one you can run
    seen: set[tuple[str, str]] = set()
    by_repo: dict[str, dict[str, tuple[Path, int, float]]] = {}
    for repo, file, path, size, modified in hub_files:
        by_repo.setdefault(repo, {}).setdefault(file, (path, size, modified))
    for repo, files in by_repo.items():
        for file in _gguf_candidates(list(files)):
            if (repo, file) in seen:
                continue
            seen.add((repo, file))
            entry_name, projector = f"hf:{repo}:{file}", None
            for name, entry in catalog.models.items():
                source = entry.source
                if isinstance(source, HubSource) and (source.hub, source.file) == (repo, file):
                    entry_name, projector = name, entry.projector
                    break
            parts = [str(p) for p in split_parts(Path(file))] + ([projector] if projector else [])
            present = [files[p] for p in parts if p in files]
            models.append(LocalModel(
                entry_name, f"hub {repo}", files[file][0],
                sum(size for _, size, _ in present), max(m for _, _, m in present),
                _quantization(files[file][0]),
            ))
    return models


def unverified() -> list[str]:
    """`hf:OWNER/REPO:FILE` of cached GGUF models whose hash was never checked (fetched by
    another tool, or by a pull killed while hashing): `list` leaves them out, `pull` checks
    them."""
    by_repo: dict[str, list[str]] = {}
    for repo, file, path, _size, _modified in _hub_files():
        if not is_verified(path):
            by_repo.setdefault(repo, []).append(file)
    return [f"hf:{repo}:{file}" for repo, files in by_repo.items()
            for file in _gguf_candidates(files)]


def _is_referenced(blob: Path, repo_dir: Path) -> bool:
    for link in (repo_dir / "snapshots").rglob("*"):
        if link.is_symlink() and link.resolve() == blob:
            return True
    return False


def remove(spec: ModelSpec) -> tuple[list[Path], int]:
    """Delete a Hub model's files from the cache; returns the files removed and bytes freed."""
    if isinstance(spec.source, PackageSource):
        raise ModelFilesError(
            f"model '{spec.id}' ships in the Python package '{spec.source.package}': remove it "
            f"with `pip uninstall {spec.source.pip or spec.source.package}`"
        )
    if isinstance(spec.source, Path):
        raise ModelFilesError(
            f"'{spec.source}' is a file you gave by path, not a download: delete it yourself"
        )
    try:
        spec = pin(spec, online=False)
    except ModelFilesError as exc:
        raise ModelFilesError(f"model '{spec.id}' is not downloaded; nothing to remove") from exc
    source = spec.source
    assert isinstance(source, HubSource)
    wanted = {str(p) for p in split_parts(Path(source.file))}
    if spec.projector:
        wanted.add(spec.projector)
    removed: list[Path] = []
    blobs: set[Path] = set()
    repo_dir: Path | None = None
    for repo, file, path, _size, _modified in _hub_files():
        if repo == source.hub and file in wanted:
            repo_dir = path.parents[len(Path(file).parts) - 1].parent.parent
            blobs.add(path.resolve())
            path.unlink()
            removed.append(path)
    if repo_dir is None:
        raise ModelFilesError(f"model '{spec.id}' is not downloaded; nothing to remove")
    freed = 0
    for blob in blobs:
        if blob.exists() and not _is_referenced(blob, repo_dir):
            freed += blob.stat().st_size
            forget(blob)
    if not any(p.is_file() for p in (repo_dir / "snapshots").rglob("*")):
        shutil.rmtree(repo_dir)  # nothing left of the repo: its refs and locks go too
    logger.info("removed %s (%d bytes)", spec.id, freed)
    return removed, freed

