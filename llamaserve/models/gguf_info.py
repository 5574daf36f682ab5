"""What a GGUF file's header says (architecture, size, context, quantisation, template) and how
much memory the model will take once loaded, without loading it.

The header is read with the `gguf` package's types (value types, quantisation block sizes,
file types), but not with `gguf.GGUFReader`: the reader builds a numpy view per vocabulary
string, which takes 3 s for SmolLM2 and 16 s for Gemma 3's 262k-token vocabulary. We walk the
same layout and skip the long arrays, which takes milliseconds.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import gguf

from ..engine.options import DEFAULT_CONTEXT_CAP

# Arrays longer than this (vocabularies, merges) are counted, not kept.
_KEEP_ARRAY_MAX = 64
_SCALARS: dict[gguf.GGUFValueType, str] = {
    gguf.GGUFValueType.UINT8: "<B",
    gguf.GGUFValueType.INT8: "<b",
    gguf.GGUFValueType.UINT16: "<H",
    gguf.GGUFValueType.INT16: "<h",
    gguf.GGUFValueType.UINT32: "<I",
    gguf.GGUFValueType.INT32: "<i",
    gguf.GGUFValueType.FLOAT32: "<f",
    gguf.GGUFValueType.BOOL: "<?",
    gguf.GGUFValueType.UINT64: "<Q",
    gguf.GGUFValueType.INT64: "<q",
    gguf.GGUFValueType.FLOAT64: "<d",
}
SPLIT_PATTERN = re.compile(r"^(?P<prefix>.*)-(?P<part>\d{5})-of-(?P<count>\d{5})\.gguf$")
# llama.cpp's default micro-batch: the compute buffer holds logits for this many tokens.
DEFAULT_UBATCH = 512


def effective_context(
    requested: int | None, catalog: int | None, trained: int | None,
    cap: int = DEFAULT_CONTEXT_CAP,
) -> int:
    """The context (tokens per sequence) a model is served with: `--ctx` when given, else the
    catalog's `context`, else the model's training context capped at `cap` — a GGUF trained
    on 128k tokens would otherwise allocate gigabytes of KV cache. The manager decides it once
    per model; the engine, the memory estimate, `show` and `ps` all use that one number."""
    if requested:
        return requested
    if catalog:
        return catalog
    return min(trained or cap, cap)


class GGUFError(ValueError):
    """A file that is not a readable GGUF."""


@dataclass(frozen=True)
class ArrayInfo:
    """A long array in the header, e.g. the vocabulary: only its length is kept."""

    length: int


@dataclass
class Header:
    metadata: dict[str, Any] = field(default_factory=dict)
    n_params: int = 0
    tensor_bytes: int = 0


class _Reader:
    def __init__(self, stream: BinaryIO, path: Path) -> None:
        self.stream = stream
        self.path = path

    def unpack(self, fmt: str) -> Any:
        size = struct.calcsize(fmt)
        data = self.stream.read(size)
        if len(data) != size:
            raise GGUFError(f"{self.path}: truncated GGUF header")
        return struct.unpack(fmt, data)[0]

    def string(self) -> str:
        length = self.unpack("<Q")
        if length > 1 << 30:
            raise GGUFError(f"{self.path}: corrupt GGUF header (string of {length} bytes)")
        return self.stream.read(length).decode("utf-8", errors="replace")

    def value(self, value_type: gguf.GGUFValueType) -> Any:
        if value_type == gguf.GGUFValueType.STRING:
            return self.string()
        if value_type == gguf.GGUFValueType.ARRAY:
            item_type = gguf.GGUFValueType(self.unpack("<I"))
            if item_type == gguf.GGUFValueType.ARRAY:
                # llama.cpp refuses them too; reading them recursively could nest 5,000 deep
                raise ValueError("an array of arrays, which llama.cpp cannot read")
            length = self.unpack("<Q")
            if length <= _KEEP_ARRAY_MAX:
                return [self.value(item_type) for _ in range(length)]
            if item_type == gguf.GGUFValueType.STRING:
                for _ in range(length):
                    self.stream.seek(self.unpack("<Q"), 1)
            else:
                self.stream.seek(length * struct.calcsize(_SCALARS[item_type]), 1)
            return ArrayInfo(length)
        return self.unpack(_SCALARS[value_type])


def read_header(path: Path) -> Header:
    """Metadata, parameter count and tensor bytes of one GGUF file (one part of a split)."""
    try:
        stream = path.open("rb")
    except OSError as exc:
        raise GGUFError(f"cannot read {path}: {exc.strerror}") from exc
    with stream:
        reader = _Reader(stream, path)
        if stream.read(4) != struct.pack("<I", gguf.GGUF_MAGIC):
            raise GGUFError(f"{path} is not a GGUF file (wrong magic bytes)")
        try:
            version = reader.unpack("<I")
            if version not in (2, 3):
                raise GGUFError(f"{path}: GGUF version {version} is not supported")
            n_tensors = reader.unpack("<Q")
            n_kv = reader.unpack("<Q")
            header = Header()
            for _ in range(n_kv):
                key = reader.string()
                header.metadata[key] = reader.value(gguf.GGUFValueType(reader.unpack("<I")))
            for _ in range(n_tensors):
                reader.string()  # name
                n_dims = reader.unpack("<I")
                shape = [reader.unpack("<Q") for _ in range(n_dims)]
                quant = gguf.GGMLQuantizationType(reader.unpack("<I"))
                reader.unpack("<Q")  # offset
                n_elements = 1
                for dim in shape:
                    n_elements *= dim
                block_size, type_size = gguf.GGML_QUANT_SIZES[quant]
                header.n_params += n_elements
                header.tensor_bytes += n_elements // block_size * type_size
        except (ValueError, KeyError) as exc:  # an unknown enum value: not a GGUF we can read
            raise GGUFError(f"{path}: corrupt or unsupported GGUF header ({exc})") from exc
    return header


def split_parts(path: Path) -> list[Path]:
    """Every part of a split GGUF given its first part (`-00001-of-0000N.gguf`), else [path]."""
    match = SPLIT_PATTERN.match(path.name)
    if match is None:
        return [path]
    count = int(match["count"])
    return [
        path.with_name(f"{match['prefix']}-{part:05d}-of-{count:05d}.gguf")
        for part in range(1, count + 1)
    ]


def cache_bytes_per_element(name: str) -> float:
    """Bytes per K or V element of a KV cache type: f16 2, q8_0 34/32, q4_0 18/32 (a block of
    32 values with its f16 scale)."""
    quant = gguf.GGMLQuantizationType[name.upper()]
    block_size, type_size = gguf.GGML_QUANT_SIZES[quant]
    return type_size / block_size


RANK_POOLING = int(gguf.PoolingType.RANK)  # 4, llama.cpp's LLAMA_POOLING_TYPE_RANK


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes a loaded model needs: weights, KV cache for the context, compute buffer."""

    weights: int
    kv_cache: int
    compute: int
    context: int  # per sequence
    sequences: int = 1  # decoded together, each with its own `context` cells
    cache_type_k: str = "f16"  # the KV cache's element types (--cache-type-k/-v)
    cache_type_v: str = "f16"

    @property
    def total(self) -> int:
        return self.weights + self.kv_cache + self.compute


def kv_types(estimate: MemoryEstimate) -> str:
    """The KV cache's element types in words: `f16`, or `K q8_0, V q4_0`."""
    k, v = estimate.cache_type_k, estimate.cache_type_v
    return k if k == v else f"K {k}, V {v}"


@dataclass(frozen=True)
class ModelInfo:
    path: Path
    parts: int
    file_bytes: int
    architecture: str
    name: str | None
    n_params: int
    tensor_bytes: int
    context_length: int | None
    quantization: str | None
    chat_template: str | None
    block_count: int
    embedding_length: int
    head_count: int
    head_count_kv: list[int]  # per layer
    key_length: int
    value_length: int
    vocab_size: int
    metadata: dict[str, Any]

    @property
    def embeds_only(self) -> bool:
        """Non-causal attention (BERT and its kin) or a pooling type in the header (e.g.
        Qwen3-Embedding): a model that computes embeddings and cannot generate text."""
        causal = self.metadata.get(f"{self.architecture}.attention.causal")
        pooling = self.metadata.get(f"{self.architecture}.pooling_type")
        return causal is False or (isinstance(pooling, int) and pooling != 0)

    @property
    def ranks(self) -> bool:
        """A reranker: pooling type rank (llama.cpp's LLAMA_POOLING_TYPE_RANK, 4), whose
        classification head scores (query, document) pairs."""
        return self.metadata.get(f"{self.architecture}.pooling_type") == RANK_POOLING

    def effective_context(
        self, requested: int | None = None, catalog: int | None = None, *, embedding: bool = False
    ) -> int:
        """`effective_context` for this model; an embedding model never runs past its training
        context (its positions have no embeddings there)."""
        context = effective_context(requested, catalog, self.context_length)
        if embedding and self.context_length:
            context = min(context, self.context_length)
        return context

    def estimate(
        self, context: int, n_ubatch: int = DEFAULT_UBATCH, sequences: int = 1,
        cache_type_k: str = "f16", cache_type_v: str = "f16",
    ) -> MemoryEstimate:
        """llama.cpp's own arithmetic: K and V (f16 unless quantized with --cache-type-k/-v)
        for every layer and context cell, and a compute buffer dominated by the logits of one
        micro-batch (checked against its load log for SmolLM2 and Gemma 3). `sequences`
        parallel requests get `context` cells each (decide it with `effective_context`)."""
        k_per_cell = sum(n * self.key_length for n in self.head_count_kv)
        v_per_cell = sum(n * self.value_length for n in self.head_count_kv)
        cell_bytes = (k_per_cell * cache_bytes_per_element(cache_type_k)
                      + v_per_cell * cache_bytes_per_element(cache_type_v))
        kv_cache = int(context * sequences * cell_bytes)
        ubatch = min(n_ubatch, context)
        compute = ubatch * 4 * (self.vocab_size + 3 * self.embedding_length)
        return MemoryEstimate(self.tensor_bytes, kv_cache, compute, context, sequences,
                              cache_type_k, cache_type_v)


def _quant_name(metadata: dict[str, Any]) -> str | None:
    file_type = metadata.get("general.file_type")
    if not isinstance(file_type, int):
        return None
    try:
        name = gguf.LlamaFileType(file_type).name
    except ValueError:
        return f"type {file_type}"
    return name.removeprefix("MOSTLY_").replace("ALL_", "")


def read_model_info(path: Path) -> ModelInfo:
    """The header of a model (all parts of a split GGUF), no weights loaded."""
    parts = split_parts(path)
    headers = [read_header(part) for part in parts]
    metadata = headers[0].metadata
    arch = str(metadata.get("general.architecture", "unknown"))

    def arch_key(name: str, default: Any = None) -> Any:
        return metadata.get(f"{arch}.{name}", default)

    block_count = int(arch_key("block_count", 0))
    embedding = int(arch_key("embedding_length", 0))
    heads = arch_key("attention.head_count", 0)
    head_count = max(heads) if isinstance(heads, list) else int(heads or 0)
    kv_heads = arch_key("attention.head_count_kv", head_count)
    kv_per_layer = list(kv_heads) if isinstance(kv_heads, list) else [int(kv_heads)] * block_count
    head_dim = embedding // head_count if head_count else 0
    tokens = metadata.get("tokenizer.ggml.tokens")
    vocab = tokens.length if isinstance(tokens, ArrayInfo) else len(tokens or [])
    context = arch_key("context_length")
    template = metadata.get("tokenizer.chat_template")
    return ModelInfo(
        path=path,
        parts=len(parts),
        file_bytes=sum(part.stat().st_size for part in parts),
        architecture=arch,
        name=metadata.get("general.name"),
        n_params=sum(h.n_params for h in headers),
        tensor_bytes=sum(h.tensor_bytes for h in headers),
        context_length=int(context) if context is not None else None,
        quantization=_quant_name(metadata),
        chat_template=template if isinstance(template, str) else None,
        block_count=block_count,
        embedding_length=embedding,
        head_count=head_count,
        head_count_kv=kv_per_layer,
        key_length=int(arch_key("attention.key_length", head_dim)),
        value_length=int(arch_key("attention.value_length", head_dim)),
        vocab_size=int(arch_key("vocab_size", vocab) or vocab),
        metadata={k: v for k, v in metadata.items() if not isinstance(v, ArrayInfo)},
    )


def human_bytes(size: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if abs(size) < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} TB"  # pragma: no cover


def human_count(count: int) -> str:
    for unit, scale in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if count >= scale:
            return f"{count / scale:.1f}{unit}"
    return str(count)
