"""What can go wrong with a served model, independent of any protocol: llamaserve/errors.py
maps each class to its answer."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .catalog import HubRef


class ModelError(Exception):
    """Why the manager cannot hand out a model; api/errors.py says what each one answers."""


class ModelNotFoundError(ModelError, LookupError):
    def __init__(self, name: str, known: list[str]) -> None:
        super().__init__(
            f"The model '{name}' does not exist or is not served here. "
            f"Served models: {', '.join(known) or 'none'}."
        )
        self.name = name


class ModelNotNamedError(ModelError, ValueError):
    """A request without a model name on a server that serves several."""




class ModelKindError(ModelError, ValueError):
    """A task the model's kind cannot do: a chat model asked to rerank, a reranker to chat."""


class EmbeddingModelError(ModelKindError):
    """A text generation asked of a model that only computes embeddings."""

    def __init__(self, name: str) -> None:
        super().__init__(
            f"The model '{name}' is an embedding model: it answers POST /v1/embeddings only, "
            "not chat or text completions. Serve a chat model for those."
        )
        self.name = name


class ModelUnavailableError(ModelError, RuntimeError):
    """A served model that cannot be used now."""


class ModelNotDownloadedError(ModelUnavailableError):
    """A Hub model whose files are not in the cache: `llamaserve pull` it."""


class ModelTooLargeError(ModelUnavailableError):
    """The model needs more memory than the whole budget: retrying will not help."""


class ModelBusyError(ModelUnavailableError):
    """Loading the model needs memory held by models with requests in flight."""


class ModelLoadError(ModelUnavailableError):
    """A model file that llama.cpp refused to load; the message names the file. The server
    and its other models keep serving."""


# Getting a model's files (hub.py)

class ModelFilesError(RuntimeError):
    """A model's files are missing and cannot be fetched; the message says what to do."""


class NotDownloadedError(ModelFilesError):
    """A Hub model that is not in the cache, when downloading is not allowed."""


class AmbiguousFileError(ModelFilesError):
    """An `hf:` reference that matches several GGUF files."""

    def __init__(self, message: str, ref: HubRef, candidates: list[str]) -> None:
        super().__init__(message)
        self.ref = ref
        self.candidates = candidates


class HashMismatchError(ModelFilesError):
    """A downloaded file whose SHA-256 is not the one the Hub or the catalog announced."""
