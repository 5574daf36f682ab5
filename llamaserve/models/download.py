"""Hub files into the Hugging Face cache: resumable across processes, and visible only once
their hash is checked.

huggingface_hub 2.x downloads into a per-process temporary name (`<etag>.<random>.incomplete`)
that it deletes on failure and cannot reuse after a kill, and it moves the blob to its final
name before anything checks its bytes. So the bytes are transferred here instead, with
huggingface_hub's own `http_get` (retries, progress bars) and its cache layout:

- under huggingface_hub's lock for the blob (`.locks/<repo>/<etag>.lock`), so concurrent pulls,
  or a pull and another HF tool, never write the same file;
- into `blobs/<etag>.incomplete`, a stable name: a later pull sends `Range: bytes=<size>-` and
  continues it; a partial that huggingface_hub left under its per-process name is adopted
  (the longest) or deleted;
- hashed there (SHA-256 for LFS files, the git blob id otherwise), and only then renamed to
  `blobs/<etag>` and linked from `snapshots/<commit>/<file>`;
- with a marker (`.llamaserve-verified/<etag>`, holding the blob's size and mtime) that `run`,
  `list` and `serve` require: a blob that reached its final name another way (another tool, an
  older llamaserve killed while hashing) is hashed before it is loaded, and deleted if corrupt.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from .digests import SHA256_HEX, digest_of
from .errors import HashMismatchError

logger = logging.getLogger(__name__)
MARKERS = ".llamaserve-verified"


@dataclass(frozen=True)
class BlobPaths:
    """Where one Hub file lives in the Hugging Face cache."""

    storage: Path  # models--OWNER--REPO
    etag: str
    filename: str
    commit: str

    @classmethod
    def of(cls, repo: str, filename: str, etag: str, commit: str) -> BlobPaths:
        from huggingface_hub import constants
        from huggingface_hub.file_download import repo_folder_name

        folder = repo_folder_name(repo_id=repo, repo_type="model")
        return cls(Path(constants.HF_HUB_CACHE) / folder, etag, filename, commit)

    @property
    def blob(self) -> Path:
        return self.storage / "blobs" / self.etag

    @property
    def partial(self) -> Path:
        return self.storage / "blobs" / f"{self.etag}.incomplete"

    @property
    def pointer(self) -> Path:
        return self.storage / "snapshots" / self.commit / self.filename

    @property
    def lock(self) -> Path:
        return self.storage.parent / ".locks" / self.storage.name / f"{self.etag}.lock"


# -- the verified marker ---------------------------------------------------------------------


def _marker(blob: Path) -> Path:
    return blob.parent.parent / MARKERS / blob.name


def _stamp(blob: Path) -> str:
    stat = blob.stat()
    return f"{stat.st_size} {stat.st_mtime_ns}"


def is_verified(path: Path) -> bool:
    """Whether the cached file (a snapshot link or a blob) was hashed since it last changed."""
    blob = path.resolve()
    try:
        return _marker(blob).read_text() == _stamp(blob)
    except OSError:
        return False


def mark_verified(blob: Path) -> None:
    marker = _marker(blob)
    marker.parent.mkdir(parents=True, exist_ok=True)
    staged = marker.with_name(f"{marker.name}.{os.getpid()}.tmp")
    staged.write_text(_stamp(blob))
    os.replace(staged, marker)


def forget(blob: Path) -> None:
    """Remove a blob and its marker."""
    _marker(blob).unlink(missing_ok=True)
    blob.unlink(missing_ok=True)


def expected_digest(blob: Path) -> str | None:
    """The digest a blob's name promises (the Hub names blobs by their ETag: the LFS SHA-256,
    or the git blob id of a small file), or None for a name that is neither."""
    name = blob.name.lower()
    return name if SHA256_HEX.match(name) or (len(name) == 40 and _is_hex(name)) else None


def _is_hex(text: str) -> bool:
    return all(c in "0123456789abcdef" for c in text)


def check_cached(path: Path, expected: str | None = None) -> str | None:
    """Hash an unverified cached file against `expected` (else its blob name) and mark it;
    returns None when it is good (or nothing says what it should be), else its actual
    digest, after deleting the corrupt blob."""
    if is_verified(path):
        return None
    blob = path.resolve()
    expected = expected or expected_digest(blob)
    if expected is None:
        return None
    actual = digest_of(blob, expected)
    if actual == expected:
        mark_verified(blob)
        return None
    logger.warning("%s is corrupt: SHA %s, expected %s; deleting it", blob, actual, expected)
    forget(blob)
    return actual


# -- the transfer ----------------------------------------------------------------------------


@contextlib.contextmanager
def blob_lock(paths: BlobPaths, notify: Callable[[str], None]) -> Iterator[None]:
    """huggingface_hub's own lock for this blob; says so when another download holds it."""
    from filelock import Timeout
    from huggingface_hub.utils import WeakFileLock

    paths.lock.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(WeakFileLock(paths.lock, timeout=0.05))
        except Timeout:
            notify(f"{paths.filename} is being downloaded by another process; waiting for it")
            stack.enter_context(WeakFileLock(paths.lock))
        yield


def adopt_partials(paths: BlobPaths) -> int:
    """The bytes already downloaded: `<etag>.incomplete`, or the longest partial
    huggingface_hub left under a per-process name (the others are deleted). Call it holding
    the blob's lock."""
    blobs = paths.blob.parent
    strays = sorted(blobs.glob(f"{paths.etag}.*.incomplete"), key=lambda p: p.stat().st_size)
    for stray in strays:
        if stray.stat().st_size > (paths.partial.stat().st_size if paths.partial.exists() else 0):
            os.replace(stray, paths.partial)
        else:
            stray.unlink(missing_ok=True)
    return paths.partial.stat().st_size if paths.partial.exists() else 0


def transfer(url: str, headers: dict[str, str], paths: BlobPaths, size: int | None,
             tqdm_class: Any, notify: Callable[[str], None]) -> int:
    """Download into the stable partial file, continuing what is there; returns the bytes
    that were there already."""
    from huggingface_hub.file_download import http_get

    paths.partial.parent.mkdir(parents=True, exist_ok=True)
    done = adopt_partials(paths)
    if size is None or done > size:
        done = 0  # nothing to check a partial against: start over
    if done and done == size:  # no transfer, no progress bar: say why nothing moves
        notify(f"{paths.filename}: an interrupted pull left all of it; checking its hash")
    with paths.partial.open("r+b" if done else "wb") as stream:
        stream.truncate(done)
        stream.seek(done)
        http_get(url, stream, resume_size=done, headers=headers, expected_size=size,
                 displayed_filename=paths.filename, tqdm_class=tqdm_class)
    return done


def _checked_transfer(paths: BlobPaths, url: str, location: str, size: int | None,
                      expected: str | None, tqdm_class: Any,
                      notify: Callable[[str], None]) -> str | None:
    """Transfer and hash the partial file; a resumed one that fails the check is downloaded
    once more from the start (the old bytes may be what was wrong). Returns None when the
    partial is good, else its digest (after deleting it)."""
    headers = download_headers(url, location)
    resumed = transfer(location, headers, paths, size, tqdm_class, notify)
    if expected is None:
        logger.warning("%s: the Hub sent no hash to check it against", paths.filename)
        return None
    actual = digest_of(paths.partial, expected)
    if actual != expected and resumed:
        notify(f"the resumed {paths.filename} does not match its hash; downloading it again")
        paths.partial.unlink(missing_ok=True)
        transfer(location, headers, paths, size, tqdm_class, notify)
        actual = digest_of(paths.partial, expected)
    if actual == expected:
        return None
    paths.partial.unlink(missing_ok=True)
    return actual


def publish(paths: BlobPaths, revision: str) -> Path:
    """Rename the checked partial to its blob name, mark it and link it into the snapshot."""
    os.replace(paths.partial, paths.blob)
    mark_verified(paths.blob)
    return link(paths, revision)


def link(paths: BlobPaths, revision: str) -> Path:
    """The snapshot entry for the blob (and `refs/<revision>` for a branch or tag)."""
    pointer = paths.pointer
    pointer.parent.mkdir(parents=True, exist_ok=True)
    target = os.path.relpath(paths.blob, pointer.parent)
    if not (pointer.is_symlink() and os.readlink(pointer) == target):
        staged = pointer.with_name(f".{pointer.name}.{os.getpid()}.link")
        staged.unlink(missing_ok=True)
        os.symlink(target, staged)
        os.replace(staged, pointer)
    if revision != paths.commit:
        ref = paths.storage / "refs" / revision
        if not ref.is_file() or ref.read_text() != paths.commit:
            ref.parent.mkdir(parents=True, exist_ok=True)
            staged = ref.with_name(f".{ref.name}.{os.getpid()}.tmp")
            staged.write_text(paths.commit)
            os.replace(staged, ref)
    return pointer


def download_headers(resolve_url: str, location: str) -> dict[str, str]:
    """huggingface_hub's headers (token, user agent); the token only to the Hub's own host,
    not to the CDN a file redirects to."""
    from huggingface_hub.utils import build_hf_headers

    headers = dict(build_hf_headers())
    headers["Accept-Encoding"] = "identity"  # byte ranges of the file itself
    if urlparse(resolve_url).netloc != urlparse(location).netloc:
        headers = {k: v for k, v in headers.items() if k.lower() != "authorization"}
    return headers


def fetch_verified(paths: BlobPaths, *, revision: str, url: str, location: str,
                   size: int | None, expected: str | None, tqdm_class: Any,
                   notify: Callable[[str], None], model_id: str, origin: str) -> Path:
    """The file in the cache, verified: kept if already good, else downloaded (resuming a
    partial) and hashed before it gets its final name."""
    with blob_lock(paths, notify):
        if paths.blob.exists():
            actual = check_cached(paths.blob, expected)
            if actual is None:
                notify(f"{paths.filename} is already downloaded")
                return link(paths, revision)
            notify(f"the cached {paths.filename} was corrupt (SHA {actual}); downloading it again")
        actual = _checked_transfer(paths, url, location, size, expected, tqdm_class, notify)
        if actual is not None:
            raise HashMismatchError(
                f"model '{model_id}': {paths.filename} is corrupt: its SHA-256 is {actual}, "
                f"{origin} says {expected}. The file was deleted; run "
                f"`llamaserve pull {model_id}` again"
            )
        pointer = publish(paths, revision)
    notify(f"{paths.filename} downloaded and verified")
    return pointer
