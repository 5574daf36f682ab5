"""The model manager's policy with a fake loader and a fake clock: loads, the memory budget,
LRU eviction, --max-models, keep-alive, busy models. No model, no server: milliseconds each.
The same behaviours with real models over HTTP are in test_manager.py."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Awaitable
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import pytest

from llamaserve.engine import LoadOptions
from llamaserve.models.catalog import ModelSpec
from llamaserve.models.gguf_info import GGUFError, ModelInfo
from llamaserve.models.hub import ModelFiles, NotDownloadedError
from llamaserve.models.manager import (
    EmbeddingModelError,
    Limits,
    ModelBusyError,
    ModelKindError,
    ModelLoadError,
    ModelManager,
    ModelNotDownloadedError,
    ModelNotFoundError,
    ModelNotNamedError,
    ModelTooLargeError,
)

MB = 1_000_000
T = TypeVar("T")


class FakeClock:
    """Seconds that pass only when told to, plus a millisecond per reading, so that two uses
    never tie for least recently used."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        self.now += 0.001
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class FakeContext:
    """Stands for a BatchEngine or an Embedder: it can be closed, and reports no queue."""

    memory_bytes = 0

    def __init__(self, name: str, loader: FakeLoader) -> None:
        self.name = name
        self.loader = loader
        self.closed = threading.Event()

    def sequences(self) -> dict[str, int]:
        return {"parallel": 1, "running": 0, "waiting": 0}

    def close(self) -> None:
        self.loader.closed.append(self.name)
        self.closed.set()


class FakeLoader:
    """Models by name with the sizes given (their whole estimate is weights), loaded at once
    or after `load_seconds`; `missing`, `unreadable` and `broken` ones fail as the real loader
    would: not downloaded, not a GGUF, refused by llama.cpp."""

    def __init__(self, sizes: dict[str, int], *, missing: tuple[str, ...] = (),
                 unreadable: tuple[str, ...] = (), broken: tuple[str, ...] = (),
                 load_seconds: float = 0.0, rerankers: tuple[str, ...] = ()) -> None:
        self.sizes = sizes
        self.rerankers = rerankers  # their headers say pooling type rank
        self.missing, self.unreadable, self.broken = missing, unreadable, broken
        self.load_seconds = load_seconds
        self.loads: list[str] = []  # "name" for an engine, "name:embedder" for an embedder
        self.closed: list[str] = []
        self.options: dict[str, LoadOptions] = {}

    def locate(self, spec: ModelSpec) -> ModelFiles:
        if spec.id in self.missing:
            raise NotDownloadedError(f"model '{spec.id}' is not downloaded: run "
                                     f"`llamaserve pull {spec.id}`")
        return ModelFiles(weights=Path(f"/models/{spec.id}.gguf"))

    def read_info(self, weights: Path) -> ModelInfo:
        name = weights.stem
        if name in self.unreadable:
            raise GGUFError(f"{weights} is not a GGUF file (wrong magic bytes)")
        # No KV cache and no compute buffer: the estimate is exactly the size given.
        return ModelInfo(
            path=weights, parts=1, file_bytes=self.sizes[name], architecture="fake",
            name=name, n_params=0, tensor_bytes=self.sizes[name], context_length=512,
            quantization=None, chat_template=None, block_count=0, embedding_length=0,
            head_count=0, head_count_kv=[], key_length=0, value_length=0, vocab_size=0,
            metadata={"fake.pooling_type": 4} if name in self.rerankers else {},
        )

    def _load(self, name: str, options: LoadOptions) -> Any:
        time.sleep(self.load_seconds)
        if name.split(":")[0] in self.broken:
            raise RuntimeError("llama.cpp failed to load the model")
        self.loads.append(name)
        self.options[name] = options
        return FakeContext(name, self)

    def load_engine(self, files: ModelFiles, options: LoadOptions) -> Any:
        return self._load(files.weights.stem, options)

    def load_embedder(self, weights: Path, options: LoadOptions, *, chat_model: bool) -> Any:
        return self._load(f"{weights.stem}:embedder", options)


def make(sizes: dict[str, int], limits: Limits | None = None, embedding: tuple[str, ...] = (),
         context: int | None = None,
         **failures: Any) -> tuple[ModelManager, FakeLoader, FakeClock]:
    """A manager serving `sizes` (in MB) with fakes; keep-alive forever unless limits say."""
    loader = FakeLoader({name: size * MB for name, size in sizes.items()}, **failures)
    rerankers = failures.get("rerankers", ())
    clock = FakeClock()
    manager = ModelManager(limits or Limits(keep_alive=-1), loader=loader, clock=clock)
    for name in sizes:
        kind = "embedding" if name in embedding else "rerank" if name in rerankers else "chat"
        spec = ModelSpec(id=name, kind=kind, source=Path(f"/models/{name}.gguf"),
                         context=context, aliases=(f"{name}-alias",))
        manager.add(spec, None, LoadOptions())
    return manager, loader, clock


def run(coroutine: Awaitable[T]) -> T:
    async def main() -> T:
        return await coroutine

    return asyncio.run(main())


async def use(manager: ModelManager, *names: str, **kwargs: Any) -> None:
    """One request to each model in turn, each done before the next starts."""
    for name in names:
        async with manager.use(name, **kwargs):
            pass


def resident(manager: ModelManager) -> list[str]:
    return sorted(model.spec.id for model in manager.loaded)


@asynccontextmanager
async def holding(manager: ModelManager, *names: str) -> AsyncIterator[None]:
    """Requests in flight on `names` until the block ends."""
    async with AsyncExitStack() as stack:
        for name in names:
            await stack.enter_async_context(manager.use(name))
        yield


# -- loading ---------------------------------------------------------------------------------

def test_a_model_loads_on_first_use_and_stays_resident() -> None:
    manager, loader, _ = make({"a": 100, "b": 100})
    run(use(manager, "a", "a-alias", "a"))
    assert loader.loads == ["a"] and resident(manager) == ["a"]


def test_concurrent_first_requests_share_one_load() -> None:
    manager, loader, _ = make({"a": 100}, load_seconds=0.05)
    engines: list[object] = []

    async def request() -> None:
        async with manager.use("a") as model:
            engines.append(model.engine)

    async def five() -> None:
        await asyncio.gather(*(request() for _ in range(5)))

    run(five())
    assert loader.loads == ["a"]
    assert len(engines) == 5 and len({id(engine) for engine in engines}) == 1


def test_the_context_decided_is_the_one_estimated_and_loaded() -> None:
    manager, loader, _ = make({"a": 100}, context=256)
    run(use(manager, "a"))
    [model] = manager.loaded
    assert model.estimate is not None and model.estimate.context == 256
    assert loader.options["a"].n_ctx == 256 == model.options.n_ctx


def test_load_all_loads_every_model_in_order_within_the_budget() -> None:
    manager, loader, _ = make({"a": 100, "b": 100, "c": 100},
                              Limits(max_memory=250 * MB, keep_alive=-1))
    manager.load_all()
    assert loader.loads == ["a", "b", "c"] and loader.closed == ["a"]
    assert resident(manager) == ["b", "c"]


def test_close_closes_every_context() -> None:
    manager, loader, _ = make({"a": 100, "b": 100})
    run(use(manager, "a", "b"))
    run(use(manager, "a", embeddings=True))
    manager.close()
    assert sorted(loader.closed) == ["a", "a:embedder", "b"] and resident(manager) == []


# -- the memory budget and LRU eviction ------------------------------------------------------

def test_idle_models_are_evicted_least_recently_used_first() -> None:
    manager, loader, _ = make({"a": 100, "b": 100, "c": 100},
                              Limits(max_memory=250 * MB, keep_alive=-1))
    run(use(manager, "a", "b", "a", "c"))
    assert loader.closed == ["b"]  # a was used after b
    assert resident(manager) == ["a", "c"]


def test_eviction_stops_as_soon_as_the_new_model_fits() -> None:
    manager, loader, _ = make({"a": 100, "b": 100, "c": 100, "d": 200},
                              Limits(max_memory=300 * MB, keep_alive=-1))
    run(use(manager, "a", "b", "c", "a"))  # least recently used now: b, c, a
    run(use(manager, "d"))  # 300 used + 200: b goes (400 > 300), then c (100 + 200 = 300)
    assert loader.closed == ["b", "c"]
    assert resident(manager) == ["a", "d"]


def test_a_model_that_fills_the_budget_exactly_fits() -> None:
    manager, loader, _ = make({"a": 100, "b": 150}, Limits(max_memory=250 * MB, keep_alive=-1))
    run(use(manager, "a", "b"))
    assert loader.closed == [] and resident(manager) == ["a", "b"]


def test_a_model_larger_than_the_whole_budget_is_refused_and_nothing_is_evicted() -> None:
    manager, loader, _ = make({"a": 100, "big": 200}, Limits(max_memory=150 * MB, keep_alive=-1))
    run(use(manager, "a"))
    with pytest.raises(ModelTooLargeError, match="budget is 150.0 MB: raise --max-memory"):
        run(use(manager, "big"))
    assert loader.loads == ["a"] and loader.closed == [] and resident(manager) == ["a"]


def test_memory_held_by_busy_models_makes_a_load_busy_until_they_finish() -> None:
    manager, loader, _ = make({"a": 100, "b": 100}, Limits(max_memory=150 * MB, keep_alive=-1))

    async def scenario() -> None:
        async with holding(manager, "a"):
            with pytest.raises(ModelBusyError, match=r"requests in flight \(a\)"):
                await use(manager, "b")
            assert resident(manager) == ["a"]
        await use(manager, "b")  # a is idle now: it makes room

    run(scenario())
    assert loader.closed == ["a"] and resident(manager) == ["b"]


def test_a_busy_model_is_never_evicted_even_if_least_recently_used() -> None:
    manager, loader, _ = make({"a": 100, "b": 100, "c": 100},
                              Limits(max_memory=250 * MB, keep_alive=-1))

    async def scenario() -> None:
        async with holding(manager, "a"):
            await use(manager, "b")  # a is now the least recently used, but in flight
            await use(manager, "c")

    run(scenario())
    assert loader.closed == ["b"] and resident(manager) == ["a", "c"]


def test_max_models_evicts_the_least_recently_used() -> None:
    manager, loader, _ = make({"a": 100, "b": 100, "c": 100},
                              Limits(max_models=2, keep_alive=-1))
    run(use(manager, "a", "b", "a", "c"))
    assert loader.closed == ["b"] and resident(manager) == ["a", "c"]


def test_max_models_with_every_resident_model_busy_is_busy() -> None:
    manager, loader, _ = make({"a": 100, "b": 100}, Limits(max_models=1, keep_alive=-1))

    async def scenario() -> None:
        async with holding(manager, "a"):
            with pytest.raises(ModelBusyError):
                await use(manager, "b")

    run(scenario())
    assert loader.loads == ["a"] and resident(manager) == ["a"]


# -- keep-alive ------------------------------------------------------------------------------

def test_a_positive_keep_alive_unloads_after_that_long_idle() -> None:
    manager, loader, clock = make({"a": 100}, Limits(keep_alive=10))
    run(use(manager, "a"))
    clock.advance(9)
    left = run(manager.unload_expired())
    assert resident(manager) == ["a"] and left is not None and 0.9 < left <= 1
    clock.advance(1.1)
    assert run(manager.unload_expired()) is None
    assert resident(manager) == [] and loader.closed == ["a"]


def test_keep_alive_zero_unloads_as_soon_as_the_request_is_done() -> None:
    manager, loader, _ = make({"a": 100}, Limits(keep_alive=0))
    run(use(manager, "a"))
    run(manager.unload_expired())
    assert resident(manager) == [] and loader.closed == ["a"]


def test_a_negative_keep_alive_never_unloads() -> None:
    manager, _, clock = make({"a": 100}, Limits(keep_alive=-1))
    run(use(manager, "a"))
    clock.advance(10**9)
    assert run(manager.unload_expired()) is None
    assert resident(manager) == ["a"] and manager.expires_in(manager.loaded[0]) is None


def test_a_requests_keep_alive_becomes_the_models_from_then_on() -> None:
    manager, _, clock = make({"a": 100}, Limits(keep_alive=300))
    run(use(manager, "a", keep_alive=0))
    run(manager.unload_expired())
    assert resident(manager) == []
    run(use(manager, "a"))  # no keep_alive given: still 0
    run(manager.unload_expired())
    assert resident(manager) == []
    run(use(manager, "a", keep_alive=-1))
    clock.advance(10**9)
    run(manager.unload_expired())
    assert resident(manager) == ["a"]


def test_a_busy_model_does_not_expire() -> None:
    manager, _, clock = make({"a": 100}, Limits(keep_alive=0))

    async def scenario() -> None:
        async with holding(manager, "a"):
            clock.advance(3600)
            await manager.unload_expired()
            assert resident(manager) == ["a"] and manager.expires_in(manager.loaded[0]) is None

    run(scenario())


def test_the_keep_alive_timer_unloads_on_its_own() -> None:
    """The real timer and clock: a 10 ms keep-alive, waited for on the context's close."""
    loader = FakeLoader({"a": 100 * MB})
    manager = ModelManager(Limits(keep_alive=0.01), loader=loader)
    manager.add(ModelSpec(id="a", kind="chat", source=Path("/models/a.gguf")), None,
                LoadOptions())

    async def scenario() -> bool:
        await manager.start()
        async with manager.use("a") as model:
            context = model.engine
        assert isinstance(context, FakeContext)
        closed = await asyncio.to_thread(context.closed.wait, 5)
        manager.close()
        return closed

    assert run(scenario()) and resident(manager) == []


def test_recent_use_orders_the_resident_models() -> None:
    manager, _, _ = make({"a": 100, "b": 100, "c": 100})
    run(use(manager, "a", "b", "c", "a"))
    assert [m.spec.id for m in manager.by_recent_use()] == ["a", "c", "b"]


# -- what cannot be served -------------------------------------------------------------------

def test_an_unknown_name_lists_the_served_models() -> None:
    manager, _, _ = make({"a": 100, "b": 100})
    with pytest.raises(ModelNotFoundError, match="Served models: a, b"):
        run(use(manager, "nope"))


def test_a_model_not_downloaded_says_how_to_pull_it() -> None:
    manager, _, _ = make({"ghost": 100}, missing=("ghost",))
    with pytest.raises(ModelNotDownloadedError, match="llamaserve pull ghost"):
        run(use(manager, "ghost"))


def test_a_file_that_is_not_a_gguf_fails_to_load_naming_it() -> None:
    manager, loader, _ = make({"junk": 100}, unreadable=("junk",))
    with pytest.raises(ModelLoadError, match="junk.gguf is not a GGUF"):
        run(use(manager, "junk"))
    assert loader.loads == []


def test_a_model_llama_cpp_refuses_fails_alone() -> None:
    manager, _, _ = make({"a": 100, "broken": 100}, broken=("broken",))
    run(use(manager, "a"))
    for _ in range(2):  # refused again, not left half-loaded
        with pytest.raises(ModelLoadError, match="cannot load model 'broken' from "
                                                 "/models/broken.gguf"):
            run(use(manager, "broken"))
    run(use(manager, "a"))
    assert resident(manager) == ["a"]


def test_an_embedding_model_refuses_generation_and_serves_embeddings() -> None:
    manager, loader, _ = make({"bge": 100}, embedding=("bge",))
    with pytest.raises(EmbeddingModelError):
        run(use(manager, "bge"))
    run(use(manager, "bge", embeddings=True))
    run(use(manager, "bge", embeddings=True))
    assert loader.loads == ["bge:embedder"]


def test_a_chat_model_gets_its_embedding_context_once_and_loses_it_with_the_model() -> None:
    manager, loader, _ = make({"a": 100, "b": 100}, Limits(max_models=1, keep_alive=-1))
    run(use(manager, "a", embeddings=True))
    run(use(manager, "a", embeddings=True))
    run(use(manager, "b"))
    assert loader.loads == ["a", "a:embedder", "b"]
    assert sorted(loader.closed) == ["a", "a:embedder"]


def test_a_reranker_reranks_and_tokenizes_and_refuses_the_rest() -> None:
    manager, loader, _ = make({"ranker": 100}, rerankers=("ranker",))
    run(use(manager, "ranker", task="rerank"))
    run(use(manager, "ranker", task="tokenize"))
    for kwargs in ({}, {"embeddings": True}):
        with pytest.raises(ModelKindError, match="is a reranker"):
            run(use(manager, "ranker", **kwargs))
    assert loader.loads == ["ranker:embedder"]


def test_a_model_that_is_not_a_reranker_is_refused_before_it_loads() -> None:
    manager, loader, _ = make({"chat": 100, "bge": 100}, embedding=("bge",))
    with pytest.raises(ModelKindError, match="'chat' is a text generation model, not a rerank"):
        run(use(manager, "chat", task="rerank"))
    with pytest.raises(ModelKindError, match="'bge' is an embedding model, not a reranker"):
        run(use(manager, "bge", task="rerank"))
    assert loader.loads == [] and resident(manager) == []
    run(use(manager, "chat", "bge", task="tokenize"))  # each with its only context
    assert loader.loads == ["chat", "bge:embedder"]


def test_the_model_may_go_unnamed_only_when_one_is_served() -> None:
    assert make({"a": 100})[0].named(None) == "a"
    assert make({"a": 100})[0].named("b") == "b"
    with pytest.raises(ModelNotNamedError, match=r"several models \(a, b\)"):
        make({"a": 100, "b": 100})[0].named(None)


def test_registering_two_models_under_one_name_is_refused() -> None:
    manager, _, _ = make({"a": 100})
    spec = ModelSpec(id="other", kind="chat", source=Path("/models/other.gguf"),
                     aliases=("a-alias",))
    with pytest.raises(ValueError, match="'a-alias'"):
        manager.add(spec, None, LoadOptions())

