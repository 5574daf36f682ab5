"""How the manager gets a model's files, header and llama.cpp contexts: a `Loader`, injected
so that the manager's policy is unit-tested with fakes; `LlamaLoader` is the real one."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Protocol

from ..engine import BatchEngine, LoadOptions
from ..engine.embedding import Embedder
from .catalog import ModelSpec
from .gguf_info import ModelInfo, read_model_info
from .hub import ModelFiles, locate_cached


class Loader(Protocol):
    """Where the manager gets a model's files, header and contexts. Every call blocks (the
    manager makes it from a worker thread) and raises only what its docstring says."""

    def locate(self, spec: ModelSpec) -> ModelFiles:
        """The model's files on disk, without network access: NotDownloadedError for a Hub
        model not in the cache, ModelFilesError for other missing files."""
        ...

    def read_info(self, weights: Path) -> ModelInfo:
        """The GGUF header (GGUFError if it is not one): the memory estimate comes from it."""
        ...

    def load_engine(self, files: ModelFiles, options: LoadOptions) -> BatchEngine:
        """A text engine, with the projector if any (ValueError, RuntimeError or OSError when
        llama.cpp refuses the file)."""
        ...

    def load_embedder(self, weights: Path, options: LoadOptions, *, chat_model: bool) -> Embedder:
        """An embedding context: an embedding model's only one, or a chat model's second."""
        ...


class LlamaLoader:
    """The real loader: the Hugging Face cache (or a path, or a package), the GGUF header,
    llama.cpp."""

    def locate(self, spec: ModelSpec) -> ModelFiles:
        files = locate_cached(spec)
        if spec.draft is not None:
            files = replace(files, draft=locate_cached(spec.draft).weights)
        return files

    def read_info(self, weights: Path) -> ModelInfo:
        return read_model_info(weights)

    def load_engine(self, files: ModelFiles, options: LoadOptions) -> BatchEngine:
        return BatchEngine.load(files.weights, options, files.projector, files.draft)

    def load_embedder(self, weights: Path, options: LoadOptions, *, chat_model: bool) -> Embedder:
        return Embedder.load(weights, options, chat_model=chat_model)


