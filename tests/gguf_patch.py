"""GGUF copies with hostile headers, written in a second: the header is rewritten byte by byte
and the tensor data copied as it is (builders.write_with_template goes through gguf's reader
and writer, which takes ~15 s for SmolLM2 on a busy machine)."""

from __future__ import annotations

import shutil
import struct
from pathlib import Path

import gguf

from llamaserve.models.gguf_info import _Reader

TEMPLATE_KEY = gguf.Keys.Tokenizer.CHAT_TEMPLATE


def _string(text: str | bytes) -> bytes:
    data = text.encode("utf-8") if isinstance(text, str) else text
    return struct.pack("<Q", len(data)) + data


def copy_with_template(source: Path, target: Path, template: str) -> Path:
    """A copy of `source` whose `tokenizer.chat_template` is `template`."""
    with source.open("rb") as stream:
        reader = _Reader(stream, source)
        stream.seek(8)  # magic, version
        n_tensors, n_kv = reader.unpack("<Q"), reader.unpack("<Q")
        kvs: list[bytes] = []
        alignment = gguf.GGUF_DEFAULT_ALIGNMENT
        for _ in range(n_kv):
            start = stream.tell()
            key = reader.string()
            value = reader.value(gguf.GGUFValueType(reader.unpack("<I")))
            end = stream.tell()
            if key == "general.alignment":
                alignment = value
            if key == TEMPLATE_KEY:
                kvs.append(_string(key) + struct.pack("<I", gguf.GGUFValueType.STRING)
                           + _string(template))
            else:
                stream.seek(start)
                kvs.append(stream.read(end - start))
        infos_start = stream.tell()
        for _ in range(n_tensors):
            reader.string()
            n_dims = reader.unpack("<I")
            stream.seek(8 * n_dims + 4 + 8, 1)  # shape, type, offset
        infos_end = stream.tell()
        stream.seek(infos_start)
        infos = stream.read(infos_end - infos_start)
        header = struct.pack("<IIQQ", gguf.GGUF_MAGIC, 3, n_tensors, n_kv) + b"".join(kvs) + infos
        stream.seek(-infos_end % alignment + infos_end)  # the old data section
        with target.open("wb") as out:
            out.write(header + b"\0" * (-len(header) % alignment))
            shutil.copyfileobj(stream, out, 1 << 20)
    return target


def write_nested_arrays(target: Path, depth: int) -> Path:
    """A header-only GGUF with one key whose value is an array of arrays `depth` deep."""
    array = struct.pack("<I", gguf.GGUFValueType.ARRAY)
    value = (array + struct.pack("<Q", 1)) * depth
    value += struct.pack("<I", gguf.GGUFValueType.UINT8) + struct.pack("<Q", 1) + b"\1"
    kvs = (_string("general.architecture") + struct.pack("<I", gguf.GGUFValueType.STRING)
           + _string("llama") + _string("general.nested") + array + value)
    target.write_bytes(struct.pack("<IIQQ", gguf.GGUF_MAGIC, 3, 0, 2) + kvs)
    return target
