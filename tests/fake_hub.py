"""A local stand-in for the Hugging Face Hub: the endpoints `huggingface_hub` uses to list a
repo and download files, with switches to cut a transfer half way, corrupt a byte or serve
a file slowly.

Like the real Hub, `resolve` answers LFS files with a redirect to a content-addressed URL
(`Location`) carrying `X-Linked-Etag` (the SHA-256) and `X-Linked-Size`, and small files
directly with their git blob id as ETag. Downloads honour `Range`.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlparse

CHUNK = 1 << 20


@dataclass
class FakeFile:
    path: Path
    lfs: bool = True
    sha256: str = ""
    git_sha1: str = ""

    def __post_init__(self) -> None:
        sha256, sha1 = hashlib.sha256(), hashlib.sha1(f"blob {self.size}\0".encode())
        with self.path.open("rb") as stream:
            while chunk := stream.read(CHUNK):
                sha256.update(chunk)
                sha1.update(chunk)
        self.sha256, self.git_sha1 = sha256.hexdigest(), sha1.hexdigest()

    @property
    def size(self) -> int:
        return self.path.stat().st_size


@dataclass
class FakeRepo:
    commit: str
    files: dict[str, FakeFile] = field(default_factory=dict)
    token: str | None = None  # gated: this bearer token is required


@dataclass
class Seen:
    method: str
    path: str
    range: str | None
    authorization: str | None


class FakeHub:
    def __init__(self) -> None:
        self.repos: dict[str, FakeRepo] = {}
        self.requests: list[Seen] = []
        self.cut_once: set[str] = set()  # sha256s whose next GET stops half way
        self.corrupt: set[str] = set()  # sha256s served with one byte flipped
        self.throttle: dict[str, float] = {}  # sha256 -> bytes per second it is served at
        # Two origins, as on the real Hub: LFS files redirect to a "CDN" on another origin,
        # where huggingface_hub stops following (the metadata is on the redirect itself).
        self._servers = [ThreadingHTTPServer(("127.0.0.1", 0), _handler(self)) for _ in "ab"]
        for server in self._servers:
            server.daemon_threads = True

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._servers[0].server_address[1]}"

    @property
    def cdn_url(self) -> str:
        return f"http://127.0.0.1:{self._servers[1].server_address[1]}"

    def add(self, repo: str, name: str, path: Path, *, lfs: bool = True) -> FakeFile:
        commit = hashlib.sha1(repo.encode()).hexdigest()
        fake = FakeFile(path, lfs=lfs)
        self.repos.setdefault(repo, FakeRepo(commit)).files[name] = fake
        return fake

    def start(self) -> FakeHub:
        for server in self._servers:
            threading.Thread(target=server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        for server in self._servers:
            server.shutdown()
            server.server_close()

    def blob(self, sha256: str) -> FakeFile | None:
        for repo in self.repos.values():
            for fake in repo.files.values():
                if fake.sha256 == sha256:
                    return fake
        return None

    def downloads(self, name: str) -> list[Seen]:
        """GETs of a file's bytes (by its name, following the redirect to its blob)."""
        shas = {f.sha256 for r in self.repos.values() for n, f in r.files.items() if n == name}
        return [
            s for s in self.requests
            if s.method == "GET" and (s.path.endswith("/" + name) or
                                      s.path.rsplit("/", 1)[-1] in shas)
        ]


def _handler(hub: FakeHub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - quiet
            pass

        def do_HEAD(self) -> None:  # noqa: N802 - http.server's naming
            self._route(head=True)

        def do_GET(self) -> None:  # noqa: N802
            try:
                self._route(head=False)
            except (BrokenPipeError, ConnectionResetError):  # a killed client: expected
                self.close_connection = True

        def _route(self, head: bool) -> None:
            url = urlparse(self.path)
            path = unquote(url.path)
            hub.requests.append(Seen(self.command, path, self.headers.get("Range"),
                                     self.headers.get("Authorization")))
            parts = path.strip("/").split("/")
            if parts[:2] == ["api", "models"] and len(parts) >= 4:
                self._api(parts[2] + "/" + parts[3], parts[4:], parse_qs(url.query))
            elif parts[0] == "cdn" and len(parts) == 2:
                fake = hub.blob(parts[1])
                if fake is None:
                    self._error(404, "EntryNotFound")
                else:
                    self._send_file(fake, head, {})
            elif len(parts) >= 5 and parts[2] == "resolve":
                self._resolve(parts[0] + "/" + parts[1], parts[3], "/".join(parts[4:]), head)
            else:
                self._error(404, "EntryNotFound")

        def _repo(self, name: str, revision: str) -> FakeRepo | None:
            repo = hub.repos.get(name)
            if repo is None:
                self._error(404, "RepoNotFound")
                return None
            if repo.token and self.headers.get("Authorization") != f"Bearer {repo.token}":
                self._error(401, "GatedRepo")
                return None
            if revision not in ("main", repo.commit):
                self._error(404, "RevisionNotFound")
                return None
            return repo

        def _api(self, name: str, rest: list[str], query: dict[str, list[str]]) -> None:
            revision = rest[1] if len(rest) >= 2 and rest[0] in ("revision", "tree") else "main"
            repo = self._repo(name, revision)
            if repo is None:
                return
            if rest[:1] == ["tree"]:
                body: object = [
                    {"type": "file", "path": n, "size": f.size, "oid": f.git_sha1,
                     **({"lfs": {"oid": f.sha256, "size": f.size, "pointerSize": 134}}
                        if f.lfs else {})}
                    for n, f in repo.files.items()
                ]
            else:
                blobs = query.get("blobs", ["false"])[0].lower() == "true"
                body = {
                    "id": name, "modelId": name, "sha": repo.commit, "private": False,
                    "siblings": [
                        {"rfilename": n, **({"size": f.size, "blobId": f.git_sha1} if blobs
                                            else {}),
                         **({"lfs": {"sha256": f.sha256, "size": f.size, "pointerSize": 134}}
                            if blobs and f.lfs else {})}
                        for n, f in repo.files.items()
                    ],
                }
            data = json.dumps(body).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _resolve(self, name: str, revision: str, filename: str, head: bool) -> None:
            repo = self._repo(name, revision)
            if repo is None:
                return
            fake = repo.files.get(filename)
            if fake is None:
                self._error(404, "EntryNotFound", {"X-Repo-Commit": repo.commit})
                return
            headers = {"X-Repo-Commit": repo.commit}
            if fake.lfs:
                self.send_response(302)
                headers |= {
                    "ETag": f'"{fake.git_sha1}"',
                    "X-Linked-Etag": f'"{fake.sha256}"',
                    "X-Linked-Size": str(fake.size),
                    "Location": f"{hub.cdn_url}/cdn/{fake.sha256}",
                    "Content-Length": "0",
                }
                for key, value in headers.items():
                    self.send_header(key, value)
                self.end_headers()
                return
            self._send_file(fake, head, headers | {"ETag": f'"{fake.git_sha1}"'})

        def _send_file(self, fake: FakeFile, head: bool, headers: dict[str, str]) -> None:
            size, start = fake.size, 0
            wanted = self.headers.get("Range")
            if wanted and wanted.startswith("bytes="):
                start = int(wanted[6:].split("-", 1)[0] or 0)
            self.send_response(206 if start else 200)
            for key, value in headers.items():
                self.send_header(key, value)
            if start:
                self.send_header("Content-Range", f"bytes {start}-{size - 1}/{size}")
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("Content-Length", str(size - start))
            self.end_headers()
            if head:
                return
            cut = size // 2 if fake.sha256 in hub.cut_once and start < size // 2 else None
            hub.cut_once.discard(fake.sha256)
            flip = size // 2 if fake.sha256 in hub.corrupt else None
            with fake.path.open("rb") as stream:
                stream.seek(start)
                offset = start
                while chunk := stream.read(CHUNK):
                    if flip is not None and offset <= flip < offset + len(chunk):
                        data = bytearray(chunk)
                        data[flip - offset] ^= 0xFF
                        chunk = bytes(data)
                    if cut is not None and offset + len(chunk) >= cut:
                        self.wfile.write(chunk[: cut - offset])
                        self.wfile.flush()
                        self.close_connection = True
                        return
                    self._write(chunk, hub.throttle.get(fake.sha256))
                    offset += len(chunk)

        def _write(self, data: bytes, rate: float | None) -> None:
            if rate is None:
                self.wfile.write(data)
                return
            piece = max(int(rate / 20), 1)  # twenty writes a second
            for start in range(0, len(data), piece):
                self.wfile.write(data[start:start + piece])
                self.wfile.flush()
                time.sleep(piece / rate)

        def _error(self, status: int, code: str, extra: dict[str, str] | None = None) -> None:
            data = json.dumps({"error": code}).encode()
            self.send_response(status)
            self.send_header("X-Error-Code", code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for key, value in (extra or {}).items():
                self.send_header(key, value)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)

    return Handler


def write_tiny_gguf(path: Path, file_type: int, arch: str = "llama") -> Path:
    """A small valid GGUF header with one tensor (not loadable as a model: for listing,
    selecting and showing files)."""
    import gguf
    import numpy as np

    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_name(path.stem)
    writer.add_context_length(1024)
    writer.add_block_count(1)
    writer.add_embedding_length(8)
    writer.add_head_count(2)
    writer.add_file_type(file_type)
    writer.add_tensor("token_embd.weight", np.zeros((4, 8), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
