"""POST /api/pull, DELETE /api/delete, POST /api/copy; /api/create, /api/push and
/api/blobs answer 501.

A pull is the verified Hub pull of `llamaserve pull` (models/hub.py), run in a worker thread,
its progress reported as Ollama's NDJSON status lines; the pulled model is registered with
the server and can be used at once. Names are catalog names and Hugging Face references
(`hf.co/OWNER/REPO[:QUANT]`), never paths: a client must not make the server load a file of
its choosing.
"""

from __future__ import annotations

import asyncio
import dataclasses
import io
import logging
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from tqdm.std import tqdm

from ...errors import RequestError
from ...models.cache import remove
from ...models.catalog import CatalogError, HubRef, HubSource, ModelSpec, load_catalog
from ...models.catalog import resolve as resolve_spec
from ...models.gguf_info import split_parts
from ...models.hub import (
    AmbiguousFileError,
    HashMismatchError,
    ManifestEntry,
    ModelFiles,
    ModelFilesError,
    NotDownloadedError,
    PullOptions,
    manifest,
    pull,
)
from ...settings import load_options
from .errors import error_response, in_band_error, ollama_errors
from .http import copied_names, manager_of, ndjson_response, parse_body
from .names import find_served, llamaserve_name, not_found, resolve
from .schemas import CopyBody, DeleteBody, PullBody

logger = logging.getLogger(__name__)
Report = Callable[[str, int | None, int], None]  # file, total bytes, bytes so far


def _spec(request: Request, name: str) -> ModelSpec:
    """The model an Ollama name means: a served one, a catalog entry, or a Hub reference."""
    served = find_served(manager_of(request), name)
    if served is not None:
        return served.spec
    text = llamaserve_name(name)
    try:
        catalog = load_catalog(request.app.state.settings.catalog)
        if text.startswith("hf:"):
            return resolve_spec(text, catalog)
    except CatalogError as exc:
        raise RequestError(400, str(exc), param="model") from exc
    found = catalog.lookup(text)
    if found is None:
        raise RequestError(404, f"model '{name}' not found: llamaserve pulls the models of its "
                           f"catalog ({', '.join(sorted(catalog.models))}) and Hugging Face "
                           "repos, named hf.co/OWNER/REPO[:QUANT]", param="model")
    return resolve_spec(found[0], catalog)


def pull_error(exc: ModelFilesError) -> RequestError:
    from huggingface_hub.errors import (
        EntryNotFoundError,
        GatedRepoError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    cause = exc.__cause__
    if isinstance(exc, AmbiguousFileError):
        status = 400
    elif isinstance(cause, GatedRepoError):
        status = 403
    elif isinstance(cause, RepositoryNotFoundError | RevisionNotFoundError | EntryNotFoundError):
        status = 404
    elif isinstance(exc, HashMismatchError | NotDownloadedError) or cause is not None:
        status = 502  # the Hub unreachable, a corrupt transfer: the upstream failed, not you
    else:
        status = 404  # no such file in the repo
    return RequestError(status, str(exc), param="model")


def progress_bar(report: Report) -> type[tqdm]:
    """A progress bar class for huggingface_hub that reports instead of drawing (at most ten
    times a second, and at the end)."""

    class Reporting(tqdm):  # type: ignore[misc]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs.pop("name", None)
            kwargs.update(disable=False, file=io.StringIO())
            super().__init__(*args, **kwargs)
            self._reported = 0.0
            report(self.desc, self.total, int(self.n))

        def update(self, n: float | None = 1) -> bool | None:
            shown = super().update(n)
            now = time.monotonic()
            if now - self._reported >= 0.1 or (self.total and self.n >= self.total):
                self._reported = now
                report(self.desc, self.total, int(self.n))
            return shown

    return Reporting


def _status(name: str, digest: str | None, total: int | None, completed: int) -> dict[str, Any]:
    line: dict[str, Any] = {"status": f"pulling {name}"}
    if digest:
        line["digest"] = f"sha256:{digest}"
    return {**line, "total": total or completed, "completed": completed}


async def pull_lines(spec: ModelSpec, register: Callable[[ModelSpec, ModelFiles], None]
                     ) -> AsyncIterator[dict[str, Any]]:
    """Ollama's pull progress; ModelFilesError once it fails. The model is registered when
    its files are in, whether or not the client is still listening."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
    reported: set[str] = set()
    digests: dict[str, str | None] = {}

    def report(name: str, total: int | None, completed: int) -> None:
        reported.add(name)
        line = _status(name, digests.get(name), total, completed)
        loop.call_soon_threadsafe(queue.put_nowait, line)

    def work() -> tuple[ModelSpec, ModelFiles, list[ManifestEntry]]:
        loop.call_soon_threadsafe(queue.put_nowait, {"status": "pulling manifest"})
        pinned, entries = (manifest(spec) if isinstance(spec.source, HubSource | HubRef)
                           else (spec, []))
        digests.update((entry.name, entry.sha256) for entry in entries)
        options = PullOptions(tqdm_class=progress_bar(report), notify=logger.info)
        return pinned, pull(pinned, options), entries

    def finished(done: asyncio.Future[Any]) -> None:
        if not done.cancelled() and done.exception() is None:
            pinned, files, _ = done.result()
            register(pinned, files)
        queue.put_nowait(None)

    future = loop.run_in_executor(None, work)
    future.add_done_callback(finished)
    while (line := await queue.get()) is not None:
        yield line
    _, files, entries = future.result()
    # files already in the cache had no progress bar: report them complete
    paths = {p.name: p for p in split_parts(files.weights) +
             ([files.projector] if files.projector else [])}
    # a file from a package or a path has no Hub digest: its line carries none
    listed = entries or [ManifestEntry(name) for name in paths]
    for entry in listed:
        if entry.name not in reported:
            path = paths.get(Path(entry.name).name)
            size = entry.size or (path.stat().st_size if path else 0)
            yield _status(entry.name, entry.sha256, size, size)
    for status in ("verifying sha256 digest", "writing manifest", "success"):
        yield {"status": status}


def _registrar(request: Request) -> Callable[[ModelSpec, ModelFiles], None]:
    manager, settings = manager_of(request), request.app.state.settings

    def register(spec: ModelSpec, files: ModelFiles) -> None:
        if manager.find(spec.id) is not None:
            return  # served already: its files are located on its next load
        if files.projector is not None:
            spec = dataclasses.replace(spec, kind="vision")
        if any(manager.find(alias) for alias in spec.aliases):
            spec = dataclasses.replace(spec, aliases=())
        manager.add(spec, files, load_options(settings, spec))
        logger.info("pulled %s: now served", spec.id)

    return register


@ollama_errors
async def pull_model(request: Request) -> Response:
    body = await parse_body(request, PullBody)
    lines = pull_lines(_spec(request, body.target), _registrar(request))
    if body.stream is not False:
        return ndjson_response(_reported(lines))
    try:
        statuses = [line async for line in lines]
    except ModelFilesError as exc:
        raise pull_error(exc) from exc
    return JSONResponse(statuses[-1])


async def _reported(lines: AsyncIterator[dict[str, Any]]) -> AsyncIterator[dict[str, Any]]:
    try:
        async for line in lines:
            yield line
    except ModelFilesError as exc:
        yield in_band_error(pull_error(exc))


@ollama_errors
async def delete_model(request: Request) -> Response:
    """Remove a Hub model's files from the cache; it stays served, and a request for it
    answers "not downloaded" until it is pulled again (a loaded one keeps running)."""
    body = await parse_body(request, DeleteBody)
    served = find_served(manager_of(request), body.target)
    spec = served.spec if served is not None else _spec(request, body.target)
    try:
        await run_in_threadpool(remove, spec)
    except ModelFilesError as exc:
        if isinstance(spec.source, HubSource | HubRef):
            raise not_found(body.target) from exc
        raise RequestError(400, str(exc), param="model") from exc
    if served is not None:
        served.files = None
    return Response(status_code=200)


@ollama_errors
async def copy_model(request: Request) -> Response:
    """The destination becomes another name of the same model, until the server stops."""
    body = await parse_body(request, CopyBody)
    manager = manager_of(request)
    model = await resolve(manager, body.source)
    destination = llamaserve_name(body.destination)
    try:
        manager.add_alias(model.spec.id, destination)
    except ValueError as exc:
        raise RequestError(400, str(exc), param="destination") from exc
    if destination != model.spec.id:
        copied_names(request).add(destination)
    return Response(status_code=200)


_UNSUPPORTED = {"create": "create models from Modelfiles", "push": "push models",
                "blobs": "take model blobs"}


async def not_implemented(request: Request) -> Response:
    route = request.url.path.removeprefix("/api/").split("/")[0]
    return error_response(501, f"llamaserve does not {_UNSUPPORTED.get(route, route)}: it "
                          "serves GGUF files from its catalog and the Hugging Face Hub (get "
                          "them with /api/pull or `llamaserve pull`)")
