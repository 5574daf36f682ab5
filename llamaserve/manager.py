"""Which models are resident, and handing them to requests.

`llamaserve run` loads its models at start and keeps them resident; handlers borrow one with
`async with manager.use(name) as engine`, which counts the request as in flight.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from .catalog import ModelSpec
from .engine import LoadOptions, SerialEngine
from .engine.embedding import Embedder, is_embedding_model, read_metadata
from .hub import ModelFiles

logger = logging.getLogger(__name__)


class ModelNotFoundError(LookupError):
    def __init__(self, name: str, known: list[str]) -> None:
        super().__init__(
            f"The model '{name}' does not exist or is not served here. "
            f"Served models: {', '.join(known) or 'none'}."
        )
        self.name = name


class EmbeddingModelError(ValueError):
    """A text generation asked of a model that only computes embeddings."""

    def __init__(self, name: str) -> None:
        super().__init__(
            f"The model '{name}' is an embedding model: it answers POST /v1/embeddings only, "
            "not chat or text completions. Serve a chat model for those."
        )
        self.name = name


class ModelLoadError(RuntimeError):
    """A model file that llama.cpp refused to load; the message names the file."""


@dataclass
class ResidentModel:
    spec: ModelSpec
    files: ModelFiles
    options: LoadOptions
    engine: SerialEngine | None = None
    # Embeddings: the only context of an embedding model; made on first use for a chat model.
    embedder: Embedder | None = None
    embedding_only: bool = False
    in_flight: int = 0
    load_lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    @property
    def loaded(self) -> bool:
        return (self.embedder if self.embedding_only else self.engine) is not None

    @property
    def created(self) -> int:
        return int(self.files.weights.stat().st_mtime)


class ModelManager:
    def __init__(self) -> None:
        self._models: dict[str, ResidentModel] = {}

    def add(self, spec: ModelSpec, files: ModelFiles, options: LoadOptions) -> None:
        for name in (spec.id, *spec.aliases):
            if self.find(name) is not None:
                raise ValueError(f"two served models answer to the name '{name}'")
        self._models[spec.id] = ResidentModel(spec, files, options)

    @property
    def models(self) -> list[ResidentModel]:
        return list(self._models.values())

    def find(self, name: str) -> ResidentModel | None:
        if name in self._models:
            return self._models[name]
        return next((m for m in self._models.values() if name in m.spec.aliases), None)

    def load_all(self) -> None:
        """Load every model now (blocking; `run` does this before it starts serving)."""
        for model in self._models.values():
            if not model.loaded:
                self._load(model)

    @staticmethod
    def _load(model: ResidentModel) -> None:
        path = model.files.weights
        logger.info("loading %s from %s (%d threads)", model.spec.id, path,
                    model.options.n_threads or 0)
        try:
            # The catalog says which models embed; for a bare .gguf path the header does.
            if model.spec.kind == "embedding" or is_embedding_model(read_metadata(path)):
                model.embedder = Embedder.load(path, model.options, chat_model=False)
                model.embedding_only = True
            else:
                model.engine = SerialEngine.load(path, model.options, model.files.projector)
        except (ValueError, RuntimeError, OSError) as exc:
            raise ModelLoadError(f"cannot load model '{model.spec.id}' from {path}: {exc}") from exc

    @staticmethod
    def _load_embedder(model: ResidentModel) -> Embedder:
        path = model.files.weights
        logger.info("creating an embedding context for %s", model.spec.id)
        try:
            return Embedder.load(path, model.options, chat_model=True)
        except (ValueError, RuntimeError, OSError) as exc:
            raise ModelLoadError(f"cannot load model '{model.spec.id}' from {path}: {exc}") from exc

    @asynccontextmanager
    async def use(self, name: str, *, embeddings: bool = False) -> AsyncIterator[ResidentModel]:
        """The model answering to `name`, loaded, counted as in use until the block ends.

        With `embeddings`, its `embedder` is ready too; without, its `engine` (text generation),
        else EmbeddingModelError.
        """
        model = self.find(name)
        if model is None:
            raise ModelNotFoundError(name, [m.spec.id for m in self._models.values()])
        model.in_flight += 1
        try:
            if not model.loaded:
                async with model.load_lock:  # concurrent first requests share one load
                    if not model.loaded:
                        await asyncio.to_thread(self._load, model)
            if embeddings and model.embedder is None:
                async with model.load_lock:
                    if model.embedder is None:
                        model.embedder = await asyncio.to_thread(self._load_embedder, model)
            elif not embeddings and model.engine is None:
                raise EmbeddingModelError(model.spec.id)
            yield model
        finally:
            model.in_flight -= 1

    def close(self) -> None:
        for model in self._models.values():
            if model.engine is not None:
                model.engine.close()
                model.engine = None
            if model.embedder is not None:
                model.embedder.close()
                model.embedder = None
