"""Images in prompts: a model's vision projector (mmproj) through llama.cpp's mtmd API.

llama-cpp-python's multimodal chat handlers run whole completions with their own sampling, so
only their pieces are used here: MTMDChatHandler loads the projector, and the LLaVA-style
handlers' Jinja formats render prompts for models whose GGUF has no usable template. The
prompt text carries one MEDIA_MARKER per image; `mtmd_tokenize` splits it into text and image
chunks, which are evaluated into the model's context so the normal token loop continues.
"""

from __future__ import annotations

import ctypes
import logging
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, NamedTuple

import llama_cpp
import llama_cpp.mtmd_cpp as mtmd
from llama_cpp import Llama, llama_chat_format

from .logs import route_llama_logs
from .types import EngineError, EngineInternalError, ImageInput

logger = logging.getLogger(__name__)

MEDIA_MARKER = mtmd.mtmd_default_marker().decode("utf-8")
# Stands in input_ids for positions holding image embeddings: no token id is negative, so a
# later prompt never matches them as a cached prefix.
MEDIA_POSITION = -1

# chat_handler names (models.yaml) → the llama-cpp-python handler whose prompt format is used.
# "mtmd" means the GGUF's own chat template (what MTMDChatHandler renders).
HANDLERS: dict[str, type[llama_chat_format.Llava15ChatHandler] | None] = {
    "mtmd": None,
    "llava-1-5": llama_chat_format.Llava15ChatHandler,
    "llava-1-6": llama_chat_format.Llava16ChatHandler,
    "moondream2": llama_chat_format.MoondreamChatHandler,
    "qwen2.5-vl": llama_chat_format.Qwen25VLChatHandler,
}
# Projector types of LLaVA-style models, whose GGUFs often ship without a chat template.
LLAVA_PROJECTORS = {"mlp", "mlp_norm", "ldp", "ldpv2"}


def projector_type(path: Path) -> str | None:
    """`clip.projector_type` from the projector GGUF's header."""
    import gguf

    field = gguf.GGUFReader(str(path)).fields.get("clip.projector_type")
    if field is None:
        return None
    return bytes(field.parts[field.data[0]]).decode("utf-8")


def choose_handler(chat_handler: str | None, llama: Llama, projector: Path) -> str:
    """The catalog's handler, else the GGUF's own template when it has one, else the LLaVA
    format for LLaVA-style projectors."""
    if chat_handler is not None:
        if chat_handler not in HANDLERS:
            known = ", ".join(sorted(HANDLERS))
            raise ValueError(f"unknown chat_handler '{chat_handler}' (known: {known})")
        return chat_handler
    if llama.metadata.get("tokenizer.chat_template") is not None:
        return "mtmd"
    kind = projector_type(projector)
    return "llava-1-5" if kind in LLAVA_PROJECTORS else "mtmd"


def handler_format(chat_handler: str) -> tuple[str | None, str | None]:
    """(Jinja template, default system message) of a handler; (None, None) for the GGUF's."""
    handler = HANDLERS[chat_handler]
    if handler is None:
        return None, None
    return handler.CHAT_FORMAT, handler.DEFAULT_SYSTEM_MESSAGE


class MediaChunk(NamedTuple):
    """One image of a prompt. With M-RoPE (Qwen2-VL and later) its tokens share positions:
    it takes `n_tokens` KV cells but advances the position by only `n_pos`."""

    start: int  # its first position
    n_pos: int
    n_tokens: int
    chunk: Any


@dataclass
class MediaPrompt:
    """A tokenized prompt with images. `tokens` has one entry per context position, with
    MEDIA_POSITION where image embeddings go; `n_tokens` counts every token the model sees,
    image tokens included: the KV cells the prompt takes, and its usage."""

    chunks: Any
    tokens: list[int]
    n_tokens: int
    images: list[MediaChunk] = field(default_factory=list)  # in prompt order

    @property
    def first_media(self) -> int:
        return self.tokens.index(MEDIA_POSITION)

    def close(self) -> None:
        if self.chunks is not None:
            mtmd.mtmd_input_chunks_free(self.chunks)
            self.chunks = None


class VisionProjector:
    """A projector loaded beside one model; all calls on the model's worker thread."""

    def __init__(self, path: Path, llama: Llama, use_gpu: bool, verbose: bool) -> None:
        route_llama_logs()
        # The handler's loader honours use_gpu and frees the context when `llama` closes.
        self._handler = llama_chat_format.MTMDChatHandler(
            str(path), verbose=verbose, use_gpu=use_gpu
        )
        try:
            self._handler._init_mtmd_context(llama)
        except ValueError as exc:
            raise ValueError(
                f"the vision projector {path} cannot be used with this model ({exc}); check "
                "that --mmproj names the mmproj GGUF made for these weights"
            ) from exc
        self.ctx = self._handler.mtmd_ctx
        self.llama = llama
        self.path = path

    def tokenize(self, text: str, add_special: bool, images: list[ImageInput]) -> MediaPrompt:
        markers = text.count(MEDIA_MARKER)
        if markers != len(images):
            raise EngineError(
                f"the prompt has {markers} image markers for {len(images)} images; remove "
                f"'{MEDIA_MARKER}' from the message text",
                param="messages",
            )
        bitmaps: list[Any] = []
        chunks = mtmd.mtmd_input_chunks_init()
        try:
            for image in images:
                bitmaps.append(self._bitmap(image))
            encoded = text.encode("utf-8")
            text_input = mtmd.mtmd_input_text()
            text_input.text = encoded
            text_input.text_len = len(encoded)
            text_input.add_special = add_special
            text_input.parse_special = True
            array = (mtmd.mtmd_bitmap_p_ctypes * len(bitmaps))(*bitmaps)
            result = mtmd.mtmd_tokenize(
                self.ctx, chunks, ctypes.byref(text_input), array, len(bitmaps)
            )
            if result != 0:
                raise EngineError(f"the images could not be preprocessed (mtmd error {result})",
                                  param="messages")
            prompt = MediaPrompt(chunks, [], mtmd.mtmd_helper_get_n_tokens(chunks))
            chunks = None
            for index in range(mtmd.mtmd_input_chunks_size(prompt.chunks)):
                chunk = mtmd.mtmd_input_chunks_get(prompt.chunks, index)
                if mtmd.mtmd_input_chunk_get_type(chunk) == mtmd.MTMD_INPUT_CHUNK_TYPE_TEXT:
                    prompt.tokens.extend(_text_tokens(chunk))
                else:
                    n_pos = mtmd.mtmd_input_chunk_get_n_pos(chunk)
                    n_tokens = mtmd.mtmd_input_chunk_get_n_tokens(chunk)
                    prompt.images.append(MediaChunk(len(prompt.tokens), n_pos, n_tokens, chunk))
                    prompt.tokens.extend([MEDIA_POSITION] * n_pos)
            return prompt
        finally:
            if chunks is not None:
                mtmd.mtmd_input_chunks_free(chunks)
            for bitmap in bitmaps:
                mtmd.mtmd_bitmap_free(bitmap)

    def eval_image(
        self, ctx: Any, chunk: Any, n_past: int, seq_id: int, n_batch: int, logits_last: bool
    ) -> int:
        """Encode one image chunk and decode its embeddings into sequence `seq_id` at `n_past`;
        returns the next free position. With logits_last, the logits of the last embedding
        are left at index -1 (for a prompt that ends with an image)."""
        new_n_past = llama_cpp.llama_pos(0)
        result = mtmd.mtmd_helper_eval_chunk_single(
            self.ctx, ctx, chunk, n_past, seq_id, n_batch, logits_last,
            ctypes.byref(new_n_past),
        )
        if result != 0:
            raise EngineInternalError(f"evaluating an image failed (mtmd error {result})")
        return int(new_n_past.value)

    @staticmethod
    def _bitmap(image: ImageInput) -> Any:
        pixels = (ctypes.c_uint8 * len(image.rgb)).from_buffer_copy(image.rgb)
        bitmap = mtmd.mtmd_bitmap_init(image.width, image.height, pixels)
        if not bitmap:
            raise EngineError(f"an image of {image.width}x{image.height} could not be used",
                              param="messages")
        return bitmap


def _text_tokens(chunk: Any) -> list[int]:
    count = ctypes.c_size_t()
    pointer = mtmd.mtmd_input_chunk_get_tokens_text(chunk, ctypes.byref(count))
    return [pointer[i] for i in range(count.value)]


@lru_cache(maxsize=16)
def fixed_input_side(path: Path) -> int | None:
    """The square side every image is scaled to by a projector that uses one fixed size
    (LLaVA 1.5's `mlp`, `ldp`...: `clip.vision.image_size`); None for those whose input size
    depends on the image (tiles, grid pinpoints, dynamic resolution)."""
    import gguf

    fields = gguf.GGUFReader(str(path)).fields
    kind = fields.get("clip.projector_type")
    size = fields.get("clip.vision.image_size")
    if kind is None or size is None or "clip.vision.image_grid_pinpoints" in fields:
        return None
    if bytes(kind.parts[kind.data[0]]).decode("utf-8") not in LLAVA_PROJECTORS:
        return None
    return int(size.parts[size.data[0]][0]) or None
