"""Which models are resident, and handing them to requests (Ollama's scheduler, in small).

Every model the server answers to is registered here; it is loaded on its first request (or at
start for `llamaserve run`) and stays resident for its keep-alive. Handlers borrow one with
`async with manager.use(name) as model`, which counts the request as in flight: a model with
a request in flight is never unloaded. Before a load the manager estimates the model's memory
from its GGUF header and unloads the least recently used idle models until it fits the
budget (`--max-memory`) and the count limit (`--max-models`). Loads happen one at a time, so
concurrent first requests for a model share one load.

Getting files, headers and llama.cpp contexts is the loader's job (`Loader`, by default
`LlamaLoader`), and time is read from an injected clock: the policy here is unit-tested with
fakes (tests/test_manager_policy.py).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

from ..engine import BatchEngine, LoadOptions
from ..engine.embedding import Embedder
from ..engine.options import micro_batch
from ..host import resident_bytes
from .catalog import ModelSpec
from .errors import (
    EmbeddingModelError,
    ModelBusyError,
    ModelKindError,
    ModelLoadError,
    ModelNotDownloadedError,
    ModelNotFoundError,
    ModelNotNamedError,
    ModelTooLargeError,
    ModelUnavailableError,
)
from .gguf_info import GGUFError, MemoryEstimate, ModelInfo, human_bytes, kv_types
from .hub import ModelFiles, ModelFilesError, NotDownloadedError
from .loader import LlamaLoader, Loader

logger = logging.getLogger(__name__)


# What a request wants of a model: text generation (the engine), embeddings (an embedding
# context: an embedding model's only one, or a chat model's second), relevance scores (a
# reranker's context), or its vocabulary (whichever context is there).
Task = Literal["generate", "embed", "rerank", "tokenize"]


@dataclass(frozen=True)
class Limits:
    max_memory: int | None = None  # bytes; None: no budget
    max_models: int | None = None
    keep_alive: float = 300.0  # seconds idle before unloading; 0: at once; negative: never


@dataclass
class ResidentModel:
    spec: ModelSpec
    options: LoadOptions
    files: ModelFiles | None = None  # None until located (on the first request)
    keep_alive: float = -1.0  # seconds; negative: forever
    engine: BatchEngine | None = None
    # Embeddings: the only context of an embedding model; made on first use for a chat model.
    embedder: Embedder | None = None
    embedding_only: bool = False
    reranker: bool = False  # an embedding-only model whose output is a relevance score
    info: ModelInfo | None = None
    estimate: MemoryEstimate | None = None
    measured_bytes: int | None = None  # growth of the process's RSS during the load
    in_flight: int = 0
    last_used: float = 0.0  # the manager's clock
    expires_at: float | None = None  # deadline on the manager's clock; None: never (or busy)

    @property
    def loaded(self) -> bool:
        return (self.embedder if self.embedding_only else self.engine) is not None

    @property
    def created(self) -> int:
        return int(self.files.weights.stat().st_mtime) if self.files is not None else 0

    @property
    def footprint(self) -> int:
        return self.estimate.total if self.estimate is not None else 0


class ModelManager:
    def __init__(
        self,
        limits: Limits | None = None,
        loader: Loader | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """`clock`: seconds, for last use and keep-alive deadlines (tests pass a fake one)."""
        self.limits = limits or Limits()
        self.loader: Loader = loader or LlamaLoader()
        self._clock = clock
        self._models: dict[str, ResidentModel] = {}
        self._load_lock: asyncio.Lock | None = None
        self._wake: asyncio.Event | None = None
        self._reaper: asyncio.Task[None] | None = None

    def add(
        self,
        spec: ModelSpec,
        files: ModelFiles | None,
        options: LoadOptions,
        keep_alive: float | None = None,
    ) -> ResidentModel:
        """Register a model (`files` None: located on first use); keep_alive None: the
        manager's default."""
        for name in (spec.id, *spec.aliases):
            if self.find(name) is not None:
                raise ValueError(f"two served models answer to the name '{name}'")
        model = ResidentModel(spec, options, files)
        model.keep_alive = self.limits.keep_alive if keep_alive is None else keep_alive
        self._models[spec.id] = model
        return model

    @property
    def models(self) -> list[ResidentModel]:
        return list(self._models.values())

    @property
    def loaded(self) -> list[ResidentModel]:
        return [m for m in self._models.values() if m.loaded]

    def find(self, name: str) -> ResidentModel | None:
        if name in self._models:
            return self._models[name]
        return next((m for m in self._models.values() if name in m.spec.aliases), None)

    def add_alias(self, name: str, alias: str) -> ResidentModel:
        """Let the model answering to `name` answer to `alias` too, from now until the server
        stops (Ollama's copy). ValueError if `alias` already names another model."""
        model = self.find(name)
        if model is None:
            raise ModelNotFoundError(name, [m.spec.id for m in self._models.values()])
        other = self.find(alias)
        if other is not None and other is not model:
            raise ValueError(f"the name '{alias}' is already model '{other.spec.id}'")
        if other is None:
            model.spec = replace(model.spec, aliases=(*model.spec.aliases, alias))
        return model

    def named(self, name: str | None) -> str:
        """`name`, or the only served model's when a request leaves the model out (llama-server
        clients do, as it serves one model)."""
        if name is not None:
            return name
        if len(self._models) == 1:
            return next(iter(self._models))
        raise ModelNotNamedError(
            "This server serves several models "
            f"({', '.join(self._models) or 'none'}): name one in 'model'."
        )

    # -- planning: pure decisions on the current state, no awaiting in between --------------

    def _prepare(self, model: ResidentModel) -> None:
        """Locate the files and estimate the memory (blocking: header read, maybe a hash)."""
        if model.files is None:
            try:
                model.files = self.loader.locate(model.spec)
            except NotDownloadedError as exc:
                raise ModelNotDownloadedError(str(exc)) from exc
            except ModelFilesError as exc:
                raise ModelUnavailableError(str(exc)) from exc
        if model.estimate is None:
            try:
                model.info = self.loader.read_info(model.files.weights)
            except GGUFError as exc:
                raise ModelLoadError(f"cannot load model '{model.spec.id}': {exc}") from exc
            # The one decision of the context: the engine is loaded with what is estimated.
            model.reranker = model.info.ranks
            model.embedding_only = (model.spec.kind in ("embedding", "rerank")
                                    or model.info.embeds_only)
            context = model.info.effective_context(model.options.n_ctx, model.spec.context,
                                                   embedding=model.embedding_only)
            model.options = options = replace(model.options, n_ctx=context)
            # Embedding models run in their own f16 context (engine/embedding.py).
            types = ({} if model.embedding_only else
                     {"cache_type_k": options.cache_type_k, "cache_type_v": options.cache_type_v})
            model.estimate = model.info.estimate(
                context, micro_batch(options.n_gpu_layers, options.deterministic),
                sequences=options.parallel, **types)
            if model.files.draft is not None:
                model.estimate = self._with_draft(model, model.estimate, model.files.draft)

    def _with_draft(self, model: ResidentModel, estimate: MemoryEstimate,
                    draft: Path) -> MemoryEstimate:
        """The estimate plus the draft model's own weights, KV cache and compute buffer (it
        gets a context like the model's)."""
        try:
            info = self.loader.read_info(draft)
        except GGUFError as exc:
            raise ModelLoadError(f"cannot load the draft model of '{model.spec.id}': {exc}") \
                from exc
        options = model.options
        extra = info.estimate(estimate.context,
                              micro_batch(options.n_gpu_layers, options.deterministic),
                              sequences=estimate.sequences, cache_type_k=options.cache_type_k,
                              cache_type_v=options.cache_type_v)
        return replace(estimate, weights=estimate.weights + extra.weights,
                       kv_cache=estimate.kv_cache + extra.kv_cache,
                       compute=estimate.compute + extra.compute)

    @staticmethod
    def _refuse(model: ResidentModel, task: Task) -> None:
        """ModelKindError when the model cannot do `task` (known once its header is read)."""
        name = model.spec.id
        if task == "rerank" and not model.reranker:
            kind = "an embedding model" if model.embedding_only else "a text generation model"
            raise ModelKindError(
                f"The model '{name}' is {kind}, not a reranker: reranking needs a cross-encoder "
                "GGUF whose pooling type is rank (e.g. bge-reranker-v2-m3). Serve one and name "
                "it in 'model'."
            )
        if model.reranker and task in ("generate", "embed"):
            asked = "embeddings" if task == "embed" else "chat or text completions"
            raise ModelKindError(
                f"The model '{name}' is a reranker: it answers POST /v1/rerank (and /tokenize), "
                f"not {asked}. Serve an embedding or chat model for those."
            )
        if task == "generate" and model.embedding_only:
            raise EmbeddingModelError(name)

    def _victims(self, model: ResidentModel) -> list[ResidentModel]:
        """Idle models to unload, least recently used first, so that `model` fits."""
        need, budget = model.footprint, self.limits.max_memory
        if budget is not None and need > budget:
            assert model.estimate is not None
            est = model.estimate
            raise ModelTooLargeError(
                f"model '{model.spec.id}' needs about {human_bytes(need)} (weights "
                f"{human_bytes(est.weights)}, KV cache for {est.sequences} x {est.context} tokens "
                f"{human_bytes(est.kv_cache)} ({kv_types(est)}), compute "
                f"{human_bytes(est.compute)}) but the memory "
                f"budget is {human_bytes(budget)}: raise --max-memory, lower --ctx, use a "
                "smaller quantisation or a quantized KV cache (--cache-type-k/-v q8_0)"
            )
        resident = sorted(self.loaded, key=lambda m: m.last_used)
        used = sum(m.footprint for m in resident)
        count = len(resident)
        victims: list[ResidentModel] = []
        for candidate in resident:
            fits = budget is None or used + need <= budget
            if fits and (self.limits.max_models is None or count < self.limits.max_models):
                break
            if candidate.in_flight == 0:
                victims.append(candidate)
                used -= candidate.footprint
                count -= 1
        fits = budget is None or used + need <= budget
        if not fits or (self.limits.max_models is not None and count >= self.limits.max_models):
            busy = ", ".join(m.spec.id for m in resident if m.in_flight)
            raise ModelBusyError(
                f"model '{model.spec.id}' cannot be loaded now: it needs "
                f"{human_bytes(need)} and the resident models with requests in flight ({busy}) "
                "hold the rest of the budget; retry when they finish, or raise --max-memory / "
                "--max-models"
            )
        return victims

    def _load(self, model: ResidentModel) -> None:
        """Load the weights: an embedding context for an embedding model (the catalog says so,
        or, for a bare .gguf, its header), else a text engine with the projector if any."""
        assert model.files is not None
        path = model.files.weights
        logger.info("loading %s from %s (%s, %d threads)", model.spec.id, path,
                    human_bytes(model.footprint) if model.estimate else "size unknown",
                    model.options.n_threads or 0)
        before = resident_bytes()
        try:
            if model.embedding_only:
                model.embedder = self.loader.load_embedder(path, model.options, chat_model=False)
            else:
                model.engine = self.loader.load_engine(model.files, model.options)
        except (ValueError, RuntimeError, OSError) as exc:
            raise ModelLoadError(f"cannot load model '{model.spec.id}' from {path}: {exc}") from exc
        after = resident_bytes()
        model.measured_bytes = after - before if before is not None and after else None

    def _load_embedder(self, model: ResidentModel) -> Embedder:
        assert model.files is not None
        path = model.files.weights
        logger.info("creating an embedding context for %s", model.spec.id)
        try:
            return self.loader.load_embedder(path, model.options, chat_model=True)
        except (ValueError, RuntimeError, OSError) as exc:
            raise ModelLoadError(f"cannot load model '{model.spec.id}' from {path}: {exc}") from exc

    def _detach(self, model: ResidentModel, why: str) -> list[BatchEngine | Embedder]:
        """Take the model's contexts out of service; the caller closes them."""
        contexts = [c for c in (model.engine, model.embedder) if c is not None]
        model.engine, model.embedder, model.expires_at = None, None, None
        if contexts:
            logger.info("unloading %s (%s)", model.spec.id, why)
        return contexts

    # -- blocking use (llamaserve run, before the server starts) -----------------------------

    def load_all(self) -> None:
        """Load every registered model now, in order (blocking)."""
        for model in self._models.values():
            if not model.loaded:
                self._prepare(model)
                for victim in self._victims(model):
                    for context in self._detach(victim, "making room"):
                        context.close()
                self._load(model)
                model.last_used = self._clock()
                self._schedule_expiry(model, None)

    # -- async use (the server) --------------------------------------------------------------

    async def start(self) -> None:
        """Start the keep-alive timer (from the app's lifespan, on the server's loop)."""
        self._load_lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._reaper = asyncio.create_task(self._expire_idle(), name="keep-alive")

    def _lock(self) -> asyncio.Lock:
        """Held for every load and unload. Made here when the manager is used without
        start() (tests of the app factory, of the policy)."""
        if self._load_lock is None:
            self._load_lock = asyncio.Lock()
        return self._load_lock

    async def _ensure_loaded(self, model: ResidentModel, task: Task) -> None:
        async with self._lock():  # one load at a time: concurrent first requests share it
            if model.loaded:
                return
            await asyncio.to_thread(self._prepare, model)
            self._refuse(model, task)  # before loading a model that cannot serve the request
            for victim in self._victims(model):
                for context in self._detach(victim, "least recently used, making room"):
                    await asyncio.to_thread(context.close)
            await asyncio.to_thread(self._load, model)

    @asynccontextmanager
    async def use(
        self, name: str, keep_alive: float | None = None, *, embeddings: bool = False,
        task: Task = "generate",
    ) -> AsyncIterator[ResidentModel]:
        """The model answering to `name`, loaded, counted as in use until the block ends.
        `keep_alive` (seconds; 0 = unload when done, negative = forever), when given, becomes
        the model's keep-alive from now on, as in Ollama. For `task` "generate" its `engine`
        is ready, for "embed" (also `embeddings=True`) and "rerank" its `embedder`, for
        "tokenize" either; a model that cannot do the task: ModelKindError."""
        if embeddings:
            task = "embed"
        model = self.find(name)
        if model is None:
            raise ModelNotFoundError(name, [m.spec.id for m in self._models.values()])
        model.in_flight += 1
        model.expires_at = None
        try:
            if not model.loaded:
                await self._ensure_loaded(model, task)
            self._refuse(model, task)
            if task == "embed" and model.embedder is None:
                async with self._lock():
                    if model.embedder is None:
                        model.embedder = await asyncio.to_thread(self._load_embedder, model)
            model.last_used = self._clock()
            yield model
        finally:
            model.in_flight -= 1
            model.last_used = self._clock()
            self._schedule_expiry(model, keep_alive)

    def _schedule_expiry(self, model: ResidentModel, keep_alive: float | None) -> None:
        if keep_alive is not None:
            model.keep_alive = keep_alive
        if model.in_flight or not model.loaded:
            return
        seconds = model.keep_alive
        model.expires_at = None if seconds < 0 else self._clock() + seconds
        if self._wake is not None:
            self._wake.set()

    async def _expire_idle(self) -> None:
        assert self._wake is not None
        while True:
            self._wake.clear()
            timeout = await self.unload_expired()
            try:
                await asyncio.wait_for(self._wake.wait(), timeout)
            except asyncio.TimeoutError:
                pass

    async def unload_expired(self) -> float | None:
        """Unload the idle models whose keep-alive has run out (the keep-alive task calls this
        whenever a deadline passes or changes); returns the seconds until the next deadline,
        None if there is none."""
        now = self._clock()
        for model in self.loaded:
            if model.in_flight == 0 and model.expires_at is not None and model.expires_at <= now:
                await self._unload(model, "keep-alive expired")
        deadlines = [m.expires_at for m in self.loaded
                     if m.in_flight == 0 and m.expires_at is not None]
        return max(0.0, min(deadlines) - self._clock()) if deadlines else None

    async def _unload(self, model: ResidentModel, why: str) -> None:
        async with self._lock():
            if model.in_flight or not model.loaded:
                return
            for context in self._detach(model, why):
                await asyncio.to_thread(context.close)

    def by_recent_use(self) -> list[ResidentModel]:
        """The loaded models, the most recently used first."""
        return sorted(self.loaded, key=lambda m: -m.last_used)

    def expires_in(self, model: ResidentModel) -> float | None:
        """Seconds until keep-alive unloads the model; None: never, or not while it is busy."""
        if model.in_flight or model.expires_at is None:
            return None
        return model.expires_at - self._clock()

    def wind_down(self) -> None:
        """Shutdown's grace period is over: every engine ends its running requests now, as
        "length", so their answers and streams still end well-formed."""
        for model in self._models.values():
            if model.engine is not None:
                model.engine.wind_down()

    def close(self) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
            self._reaper = None
        for model in self._models.values():
            for context in self._detach(model, "shutting down"):
                context.close()
