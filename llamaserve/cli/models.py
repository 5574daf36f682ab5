"""The commands about models on this machine and in a running server: pull, list, show, rm,
ps, info. Printing for humans lives here; the work is in hub.py, cache.py, gguf_info.py."""

from __future__ import annotations

import dataclasses
import io
import json
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import click
from tqdm.std import tqdm

from ..engine.options import (
    DEFAULT_CACHE_TYPE,
    DEFAULT_CONTEXT_CAP,
    DEFAULT_PARALLEL,
    micro_batch,
)
from ..models.cache import list_local, remove, unverified
from ..models.catalog import (
    Catalog,
    CatalogError,
    HubRef,
    HubSource,
    ModelSpec,
    load_catalog,
    resolve,
)
from ..models.gguf_info import GGUFError, human_bytes, human_count, kv_types, read_model_info
from ..models.hub import (
    AmbiguousFileError,
    ModelFiles,
    ModelFilesError,
    NotDownloadedError,
    PullOptions,
    locate_cached,
    pull,
)
from ..settings import Settings
from .options import setting_option

CATALOG_OPTION = setting_option("catalog", envvar=True)


class LineProgress(tqdm):  # type: ignore[misc]
    """Download progress as a few plain lines (start, every quarter, end) for logs and pipes,
    where a redrawn bar would be noise."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.pop("name", None)  # huggingface_hub's own tqdm takes a logger name
        kwargs.update(disable=False, file=io.StringIO())
        super().__init__(*args, **kwargs)
        self._started, self._resumed_at = time.monotonic(), self.n
        self._next_quarter = int(4 * self.n / self.total) + 1 if self.total else 5
        size = human_bytes(self.total) if self.total else "unknown size"
        resumed = f", resuming at {human_bytes(self.n)}" if self.n else ""
        click.echo(f"downloading {self.desc} ({size}{resumed})", err=True)

    def update(self, n: float | None = 1) -> bool | None:
        shown = super().update(n)
        while self.total and self._next_quarter <= 4 and self.n >= self.total * \
                self._next_quarter / 4:
            elapsed = max(time.monotonic() - self._started, 1e-6)
            rate = (self.n - self._resumed_at) / elapsed  # this transfer's bytes only
            click.echo(f"  {self.desc}: {25 * self._next_quarter}% of "
                       f"{human_bytes(self.total)}, {human_bytes(rate)}/s", err=True)
            self._next_quarter += 1
        return shown


def _echo_table(rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        cells = (cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        click.echo("  ".join(cells).rstrip())


def pull_options() -> PullOptions:
    """huggingface_hub's progress bars on a terminal, plain lines otherwise."""
    interactive = sys.stderr.isatty()
    return PullOptions(
        tqdm_class=None if interactive else LineProgress,
        notify=lambda line: click.echo(line, err=True),
    )


def _catalog(path: Path | None) -> Catalog:
    try:
        return load_catalog(path)
    except CatalogError as exc:
        raise click.ClickException(str(exc)) from exc


def _resolve(name: str, catalog: Catalog) -> ModelSpec:
    try:
        return resolve(name, catalog)
    except CatalogError as exc:
        raise click.ClickException(str(exc)) from exc


@click.command(name="pull", epilog="""
\b
Examples:
  llamaserve pull qwen-vl                     # a catalog model: weights + projector
  llamaserve pull hf:bartowski/Qwen2.5-0.5B-Instruct-GGUF:Q4_K_M   # any Hub repo, by quant
  llamaserve pull hf.co/bartowski/Qwen2.5-0.5B-Instruct-GGUF:Q4_K_M  # Ollama's spelling
""")
@click.argument("name")
@CATALOG_OPTION
def pull_command(name: str, catalog: Path | None) -> None:
    """Download NAME into the Hugging Face cache, checking each file's SHA-256.

    NAME is a catalog name (vision models come with their projector) or
    hf:OWNER/REPO[:QUANT_OR_FILE][@REVISION], e.g. hf:bartowski/Qwen2.5-0.5B-Instruct-GGUF:Q4_K_M.
    HF_TOKEN is used for gated repos; with HF_HUB_OFFLINE=1 only the cache is consulted.
    """
    spec = _resolve(name, _catalog(catalog))
    try:
        try:
            files = pull(spec, pull_options())
        except AmbiguousFileError as exc:
            if not sys.stdin.isatty():
                raise
            for number, candidate in enumerate(exc.candidates, 1):
                click.echo(f"  {number}. {candidate}", err=True)
            choice = click.prompt("Which file?", type=click.IntRange(1, len(exc.candidates)),
                                  err=True)
            ref = dataclasses.replace(exc.ref, selector=exc.candidates[choice - 1])
            files = pull(dataclasses.replace(spec, source=ref), pull_options())
    except ModelFilesError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"{spec.id}: {files.weights}")
    if files.projector is not None:
        click.echo(f"{spec.id} projector: {files.projector}")


@click.command(name="list", epilog="""
\b
Examples:
  llamaserve list                             # every model you can run without a download
""")
@CATALOG_OPTION
def list_command(catalog: Path | None) -> None:
    """The models on this machine: installed packages and Hugging Face cache downloads."""
    rows = [("NAME", "QUANT", "SIZE", "MODIFIED", "FROM")]
    for model in list_local(_catalog(catalog)):
        modified = time.strftime("%Y-%m-%d %H:%M", time.localtime(model.modified)) \
            if model.modified else "-"
        rows.append((model.name, model.quantization or "-",
                     human_bytes(model.size) if model.size is not None else "-",
                     modified, model.origin))
    _echo_table(rows)
    for name in unverified():
        click.echo(f"not listed: {name} is in the Hugging Face cache but its hash was never "
                   f"checked; `llamaserve pull {name}` checks it", err=True)


def _local_files(spec: ModelSpec) -> ModelFiles:
    try:
        return locate_cached(spec)
    except ModelFilesError as exc:
        raise click.ClickException(str(exc)) from exc


@click.command(name="show", epilog="""
\b
Examples:
  llamaserve show smollm2                     # header, context, memory estimate
  llamaserve show ./model.gguf --ctx 8192     # the memory it takes at another context
  llamaserve show smollm2 --template          # print the chat template
  llamaserve show smollm2 --cache-type-k q8_0 --cache-type-v q8_0   # with a quantized KV cache
""")
@click.argument("name")
@CATALOG_OPTION
@click.option("--template", is_flag=True, help="Print the whole chat template.")
@setting_option("ctx", help="Context size for the memory estimate.")
@setting_option("cache_type_k", help="KV cache type for K in the memory estimate.")
@setting_option("cache_type_v", help="KV cache type for V in the memory estimate.")
def show_command(name: str, catalog: Path | None, template: bool, ctx: int | None,
                 cache_type_k: str | None, cache_type_v: str | None) -> None:
    """What NAME is, read from its GGUF header (no model load): architecture, parameters,
    context length, quantisation, chat template, projector, and the memory it will take."""
    spec = _resolve(name, _catalog(catalog))
    files = _local_files(spec)
    try:
        info = read_model_info(files.weights)
    except GGUFError as exc:
        raise click.ClickException(str(exc)) from exc
    if template:
        click.echo(info.chat_template or "")
        return
    context = info.effective_context(ctx, spec.context,
                                     embedding=spec.kind in ("embedding", "rerank")
                                     or info.embeds_only)
    parallel = DEFAULT_PARALLEL
    estimate = info.estimate(context, micro_batch(0), sequences=parallel,
                             cache_type_k=cache_type_k or DEFAULT_CACHE_TYPE,
                             cache_type_v=cache_type_v or DEFAULT_CACHE_TYPE)
    first_line = (info.chat_template or "").strip().splitlines()[:1]
    rows = [
        ("name", spec.id),
        ("file", f"{files.weights}" + (f" (+{info.parts - 1} parts)" if info.parts > 1 else "")),
        ("architecture", info.architecture),
        ("parameters", human_count(info.n_params)),
        ("context length", str(info.context_length or "unknown")),
        ("served context", f"{context} tokens per sequence (--ctx, else the catalog's, else "
                           f"the training context up to {DEFAULT_CONTEXT_CAP})"),
        ("quantization", info.quantization or "unknown"),
        ("size", human_bytes(info.file_bytes)),
        ("memory", f"about {human_bytes(estimate.total)} at context {context} x {parallel} "
                   f"sequences on the CPU (weights "
                   f"{human_bytes(estimate.weights)}, KV cache {human_bytes(estimate.kv_cache)} "
                   f"({kv_types(estimate)}), "
                   f"compute {human_bytes(estimate.compute)})"),
        ("chat template", f"{len(info.chat_template)} characters: {first_line[0][:60]}..."
                          if info.chat_template and first_line else "none"),
        ("projector", str(files.projector) if files.projector else "none"),
    ]
    for key, value in rows:
        click.echo(f"  {key:<15} {value}")


@click.command(name="rm", epilog="""
\b
Examples:
  llamaserve rm qwen-vl                       # asks first
  llamaserve rm hf:bartowski/Qwen2.5-0.5B-Instruct-GGUF:Q4_K_M --yes
""")
@click.argument("name")
@CATALOG_OPTION
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
def rm_command(name: str, catalog: Path | None, yes: bool) -> None:
    """Remove NAME's downloaded files from the Hugging Face cache."""
    spec = _resolve(name, _catalog(catalog))
    try:
        if not isinstance(spec.source, HubRef | HubSource):
            remove(spec)  # refuses, saying how such a model is removed
        files = locate_cached(spec)
    except NotDownloadedError as exc:
        raise click.ClickException(f"model '{spec.id}' is not downloaded here; nothing to "
                                   "remove (`llamaserve list` shows what is)") from exc
    except ModelFilesError as exc:
        raise click.ClickException(str(exc)) from exc
    if not yes and not click.confirm(f"Remove {spec.id} ({files.weights.name}) from the "
                                     "Hugging Face cache?", err=True):
        raise click.ClickException("nothing removed")
    try:
        removed, freed = remove(spec)
    except ModelFilesError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"removed {spec.id}: {len(removed)} file(s), {human_bytes(freed)} freed")


def from_now(stamp: str, now: float | None = None) -> str:
    """An ISO time as Ollama's ps shows it: "4 minutes from now"."""
    import calendar

    try:
        when = calendar.timegm(time.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ"))
    except ValueError:
        return stamp
    seconds = max(0, round(when - (time.time() if now is None else now)))
    if seconds < 1:
        return "now"
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60), ("second", 1)):
        if seconds >= size:
            count = seconds // size
            return f"{count} {unit}{'s' if count != 1 else ''} from now"
    return stamp  # pragma: no cover


@click.command(name="ps", epilog="""
\b
Examples:
  llamaserve ps                               # the server at 127.0.0.1:8000
  llamaserve ps --port 11434 --api-key SECRET
""")
@setting_option("host", help="The server's address.", envvar=True)
@setting_option("port", help="The server's port.", envvar=True)
@setting_option("api_key", help="Sent as 'Authorization: Bearer KEY' to servers that require "
                "one.", envvar=True)
def ps_command(host: str | None, port: int | None, api_key: str | None) -> None:
    """The models a running server has loaded: memory, offload, and when they unload."""
    defaults = Settings.model_fields
    url = f"http://{host or defaults['host'].default}:{port or defaults['port'].default}/api/ps"
    request = urllib.request.Request(url)
    if api_key:
        request.add_header("Authorization", f"Bearer {api_key}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            body = json.load(response)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise click.ClickException(
            f"no llamaserve server answers at {url} ({getattr(exc, 'reason', exc)}): start one "
            "with `llamaserve run MODEL` (or `llamaserve serve`), or pass --host/--port"
        ) from exc
    rows = [("NAME", "SIZE", "MEASURED", "PROCESSOR", "CONTEXT", "SEQUENCES", "UNTIL")]
    for model in body["models"]:
        until = "forever" if model["expires_at"] is None else from_now(model["expires_at"])
        if model["in_flight"]:
            until = f"busy ({model['in_flight']} requests)"
        measured = model.get("measured_rss")
        seqs = model.get("sequences")
        busy = "-"
        if seqs:
            busy = f"{seqs['running']}/{seqs['parallel']}"
            if seqs["waiting"]:
                busy += f" +{seqs['waiting']} waiting"
        rows.append((model.get("id", model["name"]), human_bytes(model["size"]),
                     human_bytes(measured) if measured is not None else "-",
                     model["processor"], _context_column(model), busy, until))
    _echo_table(rows)
    if body.get("max_memory"):
        used = sum(model["size"] for model in body["models"])
        click.echo(f"memory budget: {human_bytes(used)} of {human_bytes(body['max_memory'])} "
                   "in use (estimated)")


def _context_column(model: dict[str, Any]) -> str:
    """The served context, with the KV cache types when they are not f16."""
    context = str(model["context_length"])
    k, v = model.get("cache_type_k") or "f16", model.get("cache_type_v") or "f16"
    if (k, v) == ("f16", "f16"):
        return context
    return f"{context} (KV {k})" if k == v else f"{context} (K {k}, V {v})"


@click.command(name="info", epilog="""
\b
Examples:
  llamaserve info                             # version, backend, GPU offload, threads
""")
def info_command() -> None:
    """The llama.cpp this install runs on: backend, SIMD features, threads, build."""
    import llama_cpp

    system = llama_cpp.llama_print_system_info().decode(errors="replace")
    lib_dir = Path(llama_cpp.__file__).parent / "lib"
    libraries = sorted(p.name for p in lib_dir.glob("*ggml-*")) if lib_dir.is_dir() else []
    backends = sorted({name.split(".")[0].removeprefix("libggml-").removeprefix("ggml-")
                       for name in libraries} - {"base", "cpu"})
    # "CPU : SSE3 = 1 | AVX = 1 | ... | LLAMAFILE = 1 |"
    features = [part.split(":")[-1].split("=")[0].strip() for part in system.split("|")
                if part.strip().endswith("= 1")]
    offload = llama_cpp.llama_supports_gpu_offload()
    ggml = next((n.split(".so.")[-1] for n in libraries if ".so." in n and n.count(".") > 3), None)
    rows = [
        ("backend", ", ".join(b.upper() for b in backends) or "CPU only"),
        ("GPU offload", "yes (--gpu-layers auto offloads all layers)" if offload else
         "no (this llama.cpp was built without a GPU backend)"),
        ("SIMD", " ".join(features) or "none reported"),
        ("threads", f"{Settings().threads} (physical cores; --threads to change)"),
        ("llama.cpp", f"llama-cpp-python {llama_cpp.__version__}"
                      + (f", ggml {ggml}" if ggml else "")),
        ("system info", system.strip()),
    ]
    for key, value in rows:
        click.echo(f"  {key:<12} {value}")


def register(group: click.Group) -> None:
    for command in (pull_command, list_command, show_command, rm_command, ps_command,
                    info_command):
        group.add_command(command)

