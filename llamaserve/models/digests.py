"""Checking a downloaded file against the digest the Hub announced: huggingface_hub does not
verify the bytes it writes into the cache, so a corrupt transfer would otherwise be loaded."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while chunk := stream.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def git_sha1_of(path: Path) -> str:
    """The git blob id, which the Hub sends as the ETag of files not stored in LFS."""
    digest = hashlib.sha1(f"blob {path.stat().st_size}\0".encode())  # noqa: S324 - git's id
    with path.open("rb") as stream:
        while chunk := stream.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def digest_of(path: Path, expected: str) -> str:
    """The file's digest in the form `expected` has: an LFS SHA-256, else a git blob id."""
    return sha256_of(path.resolve()) if SHA256_HEX.match(expected) else git_sha1_of(path)
