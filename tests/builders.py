"""Tiny synthetic GGUF models, written with the `gguf` package, for tests and benchmarks.

`write_llava_projector` makes a LLaVA-1.5 style vision projector that llama.cpp's mtmd loads
beside SmolLM2; `write_tiny_qwen25vl` a Qwen2.5-VL model and projector pair (M-RoPE);
`image_bytes` and `data_uri` make test images.

`write_tiny_bert` makes a BERT-architecture sentence embedder that llama.cpp loads and runs like
all-MiniLM or bge: random weights (fixed seed), so its vectors mean nothing, but they are real
llama.cpp outputs: deterministic, different for different texts, pooled as the metadata asks.
With `pooling=gguf.PoolingType.RANK` it is a cross-encoder reranker like bge-reranker: a
classification head (`cls`, `cls.output`, as llama.cpp's BERT loader reads them) gives one
relevance logit per (query, document) pair.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gguf
import numpy as np

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
PAD_ID, UNK_ID, CLS_ID, SEP_ID, MASK_ID = range(len(SPECIAL_TOKENS))

# Whole words (llama.cpp's WordPiece marks a word start with "▁", as its BERT converter does).
WORDS = """
the of and to in is was for on that with as by at from it an be this are or which have not
has had but were they their one all we can her his there been more when who will would no
if out so said what up its about into than them only other new some could time these two may
first then do any like my now over such our man me even most made after also did many before
must through back years where much your way well down should because each just those people how
too little state good very make world still own see men work long get here between both life
being under never day same another know while last might us great old year off come since
against go came right used take three small large big high low fast slow hot cold red blue green
black white cat dog bird fish tree sun moon star sky sea river lake rain snow wind fire water
earth stone house city road car train boat book word text page line story song music art food
bread milk tea coffee apple orange hello world test embedding embeddings vector model models
search query document answer question data number list input output server client request
response token tokens batch learn learning machine language sentence meaning similar different
""".split()
# WordPiece continuations ("##ing" in the Hugging Face vocabulary) are stored without the "##".
SUBWORDS = ["ing", "ed", "s", "es", "er", "est", "ly", "ion", "ness", "ment", "able", "ful"]
LETTERS = list("abcdefghijklmnopqrstuvwxyz0123456789")
PUNCTUATION = list(".,!?;:'\"()-/")


def bert_vocab() -> list[str]:
    start = "\u2581"
    tokens = [
        *SPECIAL_TOKENS,
        *(start + w for w in WORDS),
        *(start + p for p in PUNCTUATION),
        *(start + c for c in LETTERS),
        *SUBWORDS,
        *LETTERS,  # any lowercase word falls back to letters rather than [UNK]
    ]
    return list(dict.fromkeys(tokens))  # llama.cpp refuses a vocabulary with duplicates


def write_tiny_bert(
    path: Path,
    *,
    width: int = 64,
    layers: int = 2,
    heads: int = 4,
    context: int = 128,
    pooling: gguf.PoolingType = gguf.PoolingType.MEAN,
    seed: int = 0,
) -> Path:
    """Write a BERT embedder GGUF (f32, ~0.3 MB at the defaults), or with rank pooling a
    reranker, and return its path."""
    tokens = bert_vocab()
    n_vocab, n_ff = len(tokens), 2 * width
    rng = np.random.default_rng(seed)

    def weight(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) / np.sqrt(shape[-1])).astype(np.float32)

    def ones(n: int) -> np.ndarray:
        return np.ones(n, dtype=np.float32)

    def zeros(n: int) -> np.ndarray:
        return np.zeros(n, dtype=np.float32)

    writer = gguf.GGUFWriter(str(path), "bert")
    writer.add_name("tiny-bert")
    writer.add_context_length(context)
    writer.add_embedding_length(width)
    writer.add_feed_forward_length(n_ff)
    writer.add_block_count(layers)
    writer.add_head_count(heads)
    writer.add_layer_norm_eps(1e-12)
    writer.add_causal_attention(False)
    writer.add_pooling_type(pooling)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)

    writer.add_tokenizer_model("bert")
    writer.add_token_list(tokens)
    writer.add_token_types(
        [
            gguf.TokenType.CONTROL if t in SPECIAL_TOKENS else gguf.TokenType.NORMAL
            for t in tokens
        ]
    )
    writer.add_token_type_count(2)
    writer.add_bos_token_id(CLS_ID)  # llama.cpp's BERT tokenizer adds BOS as [CLS]
    writer.add_sep_token_id(SEP_ID)
    writer.add_unk_token_id(UNK_ID)
    writer.add_pad_token_id(PAD_ID)
    writer.add_mask_token_id(MASK_ID)
    writer.add_bool("tokenizer.ggml.normalizer.lowercase", True)

    # numpy shapes (rows, columns); the writer stores them reversed, in ggml's order.
    writer.add_tensor("token_embd.weight", weight(n_vocab, width))
    writer.add_tensor("token_types.weight", weight(2, width))
    writer.add_tensor("position_embd.weight", weight(context, width))
    writer.add_tensor("token_embd_norm.weight", ones(width))
    writer.add_tensor("token_embd_norm.bias", zeros(width))
    for i in range(layers):
        block = f"blk.{i}"
        for name in ("attn_q", "attn_k", "attn_v", "attn_output"):
            writer.add_tensor(f"{block}.{name}.weight", weight(width, width))
            writer.add_tensor(f"{block}.{name}.bias", zeros(width))
        writer.add_tensor(f"{block}.attn_output_norm.weight", ones(width))
        writer.add_tensor(f"{block}.attn_output_norm.bias", zeros(width))
        writer.add_tensor(f"{block}.ffn_up.weight", weight(n_ff, width))
        writer.add_tensor(f"{block}.ffn_up.bias", zeros(n_ff))
        writer.add_tensor(f"{block}.ffn_down.weight", weight(width, n_ff))
        writer.add_tensor(f"{block}.ffn_down.bias", zeros(width))
        writer.add_tensor(f"{block}.layer_output_norm.weight", ones(width))
        writer.add_tensor(f"{block}.layer_output_norm.bias", zeros(width))
    if pooling == gguf.PoolingType.RANK:
        # RoBERTa's classification head: dense + tanh on the [CLS] state, then one logit
        # (llama.cpp: {n_embd, n_embd} and {n_embd, n_cls_out}; n_cls_out is 1 without labels).
        writer.add_tensor("cls.weight", weight(width, width))
        writer.add_tensor("cls.bias", weight(width))
        writer.add_tensor("cls.output.weight", weight(1, width))
        writer.add_tensor("cls.output.bias", zeros(1))

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


# A LLaVA-1.5 style projector ("mlp"): a 2-block ViT on 32x32 images in 8x8 patches (16
# patches), projected to 576 dims, SmolLM2-135M's embedding width.
IMAGE_SIZE = 32
PATCH_SIZE = 8
VIT_WIDTH = 64
VIT_FFN = 128
VIT_BLOCKS = 2
SMOLLM2_WIDTH = 576


def write_llava_projector(path: Path, seed: int = 0) -> Path:
    """A projector GGUF that llama.cpp's mtmd loads beside SmolLM2 (random f32 weights)."""
    import gguf

    rng = np.random.default_rng(seed)
    writer = gguf.GGUFWriter(str(path), "clip")
    writer.add_string("clip.projector_type", "mlp")
    writer.add_bool("clip.has_vision_encoder", True)
    writer.add_bool("clip.has_llava_projector", True)
    writer.add_bool("clip.use_gelu", True)
    writer.add_uint32("clip.vision.image_size", IMAGE_SIZE)
    writer.add_uint32("clip.vision.patch_size", PATCH_SIZE)
    writer.add_uint32("clip.vision.embedding_length", VIT_WIDTH)
    writer.add_uint32("clip.vision.feed_forward_length", VIT_FFN)
    writer.add_uint32("clip.vision.block_count", VIT_BLOCKS)
    writer.add_uint32("clip.vision.projection_dim", SMOLLM2_WIDTH)
    writer.add_uint32("clip.vision.attention.head_count", 4)
    writer.add_float32("clip.vision.attention.layer_norm_epsilon", 1e-6)
    writer.add_array("clip.vision.image_mean", [0.5, 0.5, 0.5])
    writer.add_array("clip.vision.image_std", [0.5, 0.5, 0.5])

    def tensor(name: str, *shape: int) -> None:
        # numpy shapes; the writer reverses them into ggml's order
        writer.add_tensor(name, (rng.standard_normal(shape) * 0.02).astype(np.float32))

    n_patches = (IMAGE_SIZE // PATCH_SIZE) ** 2
    tensor("v.patch_embd.weight", VIT_WIDTH, 3, PATCH_SIZE, PATCH_SIZE)
    tensor("v.position_embd.weight", n_patches, VIT_WIDTH)
    tensor("v.pre_ln.weight", VIT_WIDTH)
    tensor("v.pre_ln.bias", VIT_WIDTH)
    for block in range(VIT_BLOCKS):
        prefix = f"v.blk.{block}"
        for part in ("q", "k", "v", "out"):
            tensor(f"{prefix}.attn_{part}.weight", VIT_WIDTH, VIT_WIDTH)
            tensor(f"{prefix}.attn_{part}.bias", VIT_WIDTH)
        for norm in ("ln1", "ln2"):
            tensor(f"{prefix}.{norm}.weight", VIT_WIDTH)
            tensor(f"{prefix}.{norm}.bias", VIT_WIDTH)
        tensor(f"{prefix}.ffn_up.weight", VIT_FFN, VIT_WIDTH)
        tensor(f"{prefix}.ffn_up.bias", VIT_FFN)
        tensor(f"{prefix}.ffn_down.weight", VIT_WIDTH, VIT_FFN)
        tensor(f"{prefix}.ffn_down.bias", VIT_WIDTH)
    tensor("mm.0.weight", SMOLLM2_WIDTH, VIT_WIDTH)
    tensor("mm.0.bias", SMOLLM2_WIDTH)
    tensor("mm.2.weight", SMOLLM2_WIDTH, SMOLLM2_WIDTH)
    tensor("mm.2.bias", SMOLLM2_WIDTH)

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def image_bytes(
    fmt: str = "PNG", size: tuple[int, int] = (40, 24), orientation: int | None = None
) -> bytes:
    """An encoded test image: a red left half and a blue right half (so rotations show)."""
    import io

    from PIL import Image

    image = Image.new("RGB", size, (0, 0, 255))
    image.paste((255, 0, 0), (0, 0, size[0] // 2, size[1]))
    buffer = io.BytesIO()
    if orientation is not None:
        exif = Image.Exif()
        exif[0x0112] = orientation  # Orientation
        image.save(buffer, fmt, exif=exif)
    else:
        image.save(buffer, fmt)
    return buffer.getvalue()


def data_uri(data: bytes, media_type: str = "image/png") -> str:
    import base64

    return f"data:{media_type};base64,{base64.b64encode(data).decode()}"


def png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height, with a few bytes of pixel data: a
    decompression bomb's header, built without the memory a real one would take."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data)))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))


# A Qwen2.5-VL pair (llama.cpp arch "qwen2vl", projector "qwen2.5vl_merger"): M-RoPE, where an
# image takes more KV cells (tokens) than positions. SmolLM2's tokenizer plus Qwen's vision
# control tokens; random weights, so the text means nothing.
QWEN_VL_WIDTH = 64  # text model embedding width (= the projector's output)
QWEN_VL_HEADS = 4  # head dim 16: M-RoPE sections [2, 3, 3, 0] in the real 16:24:24 ratio
QWEN_VL_KV_HEADS = 2
QWEN_VL_FFN = 128
QWEN_VL_BLOCKS = 2
QWEN_VIT_WIDTH = 32
QWEN_VIT_FFN = 48  # unlike the width, or the loader takes ffn_up and ffn_down for each other
QWEN_VIT_BLOCKS = 2
QWEN_PATCH = 14
QWEN_VISION_TOKENS = ["<|vision_start|>", "<|vision_end|>", "<|image_pad|>"]
CHATML_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + "
    "message['content'] + '<|im_end|>\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def _copy_tokenizer(writer: gguf.GGUFWriter, source: Path, extra: list[str]) -> list[int]:
    """Copy a GGUF's `tokenizer.ggml.*` (a BPE vocabulary) and append `extra` control tokens;
    returns the token types of the new vocabulary."""
    fields = gguf.GGUFReader(str(source)).fields

    def value(key: str) -> Any:
        return fields[key].contents()

    tokens = [*value("tokenizer.ggml.tokens"), *extra]
    types = [*value("tokenizer.ggml.token_type"), *[gguf.TokenType.CONTROL] * len(extra)]
    writer.add_tokenizer_model(value("tokenizer.ggml.model"))
    writer.add_tokenizer_pre(value("tokenizer.ggml.pre"))
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(value("tokenizer.ggml.merges"))
    writer.add_bos_token_id(value("tokenizer.ggml.bos_token_id"))
    writer.add_eos_token_id(value("tokenizer.ggml.eos_token_id"))
    writer.add_unk_token_id(value("tokenizer.ggml.unknown_token_id"))
    writer.add_pad_token_id(value("tokenizer.ggml.padding_token_id"))
    writer.add_add_bos_token(False)
    return [int(t) for t in types]


def write_tiny_qwen25vl(
    model_path: Path, projector_path: Path, tokenizer_source: Path, *, context: int = 512,
    seed: int = 0,
) -> tuple[Path, Path]:
    """Write a tiny Qwen2.5-VL model GGUF and its projector (f32, ~15 MB together).

    The control tokens' embedding rows (end of turn, end of text among them) are scaled down:
    with the output tied to the embeddings their logits stay near 0 while the others spread
    widely, so the model never stops on its own and a request without max_tokens runs to the
    end of the context. (Not zero: this llama.cpp reads no RMS-norm epsilon for qwen2vl, so
    a zero row would normalise to NaN.)
    """
    rng = np.random.default_rng(seed)

    def weight(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) / np.sqrt(shape[-1])).astype(np.float32)

    def ones(n: int) -> np.ndarray:
        return np.ones(n, dtype=np.float32)

    def zeros(n: int) -> np.ndarray:
        return np.zeros(n, dtype=np.float32)

    width, heads, kv_heads = QWEN_VL_WIDTH, QWEN_VL_HEADS, QWEN_VL_KV_HEADS
    kv_width = width // heads * kv_heads
    writer = gguf.GGUFWriter(str(model_path), "qwen2vl")
    writer.add_name("tiny-qwen2.5-vl")
    writer.add_context_length(context)
    writer.add_embedding_length(width)
    writer.add_block_count(QWEN_VL_BLOCKS)
    writer.add_feed_forward_length(QWEN_VL_FFN)
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_rope_freq_base(1_000_000.0)
    writer.add_layer_norm_rms_eps(1e-6)
    writer.add_array("qwen2vl.rope.dimension_sections", [2, 3, 3, 0])
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    token_types = np.asarray(_copy_tokenizer(writer, tokenizer_source, QWEN_VISION_TOKENS))
    writer.add_chat_template(CHATML_TEMPLATE)

    embeddings = rng.standard_normal((len(token_types), width)).astype(np.float32)
    embeddings[token_types == gguf.TokenType.CONTROL] *= 1e-3
    writer.add_tensor("token_embd.weight", embeddings)
    writer.add_tensor("output_norm.weight", ones(width))
    for i in range(QWEN_VL_BLOCKS):
        block = f"blk.{i}"
        writer.add_tensor(f"{block}.attn_norm.weight", ones(width))
        writer.add_tensor(f"{block}.attn_q.weight", weight(width, width))
        writer.add_tensor(f"{block}.attn_q.bias", zeros(width))
        writer.add_tensor(f"{block}.attn_k.weight", weight(kv_width, width))
        writer.add_tensor(f"{block}.attn_k.bias", zeros(kv_width))
        writer.add_tensor(f"{block}.attn_v.weight", weight(kv_width, width))
        writer.add_tensor(f"{block}.attn_v.bias", zeros(kv_width))
        writer.add_tensor(f"{block}.attn_output.weight", weight(width, width))
        writer.add_tensor(f"{block}.ffn_norm.weight", ones(width))
        writer.add_tensor(f"{block}.ffn_gate.weight", weight(QWEN_VL_FFN, width))
        writer.add_tensor(f"{block}.ffn_up.weight", weight(QWEN_VL_FFN, width))
        writer.add_tensor(f"{block}.ffn_down.weight", weight(width, QWEN_VL_FFN))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()

    vit, ffn = QWEN_VIT_WIDTH, QWEN_VIT_FFN
    writer = gguf.GGUFWriter(str(projector_path), "clip")
    writer.add_string("clip.projector_type", "qwen2.5vl_merger")
    writer.add_bool("clip.has_vision_encoder", True)
    writer.add_bool("clip.use_silu", True)
    writer.add_uint32("clip.vision.image_size", 56)
    writer.add_uint32("clip.vision.patch_size", QWEN_PATCH)
    writer.add_uint32("clip.vision.embedding_length", vit)
    writer.add_uint32("clip.vision.feed_forward_length", ffn)
    writer.add_uint32("clip.vision.block_count", QWEN_VIT_BLOCKS)
    writer.add_uint32("clip.vision.attention.head_count", 4)
    writer.add_float32("clip.vision.attention.layer_norm_epsilon", 1e-6)
    writer.add_uint32("clip.vision.projection_dim", width)
    writer.add_uint32("clip.vision.n_wa_pattern", 2)
    writer.add_uint32("clip.vision.spatial_merge_size", 2)
    writer.add_array("clip.vision.image_mean", [0.5, 0.5, 0.5])
    writer.add_array("clip.vision.image_std", [0.5, 0.5, 0.5])

    def tensor(name: str, *shape: int) -> None:
        writer.add_tensor(name, (rng.standard_normal(shape) * 0.02).astype(np.float32))

    tensor("v.patch_embd.weight", vit, 3, QWEN_PATCH, QWEN_PATCH)
    tensor("v.patch_embd.weight.1", vit, 3, QWEN_PATCH, QWEN_PATCH)  # the second frame
    for block in range(QWEN_VIT_BLOCKS):
        prefix = f"v.blk.{block}"
        writer.add_tensor(f"{prefix}.ln1.weight", ones(vit))
        writer.add_tensor(f"{prefix}.ln2.weight", ones(vit))
        for part in ("q", "k", "v", "out"):
            tensor(f"{prefix}.attn_{part}.weight", vit, vit)
            tensor(f"{prefix}.attn_{part}.bias", vit)
        for part in ("gate", "up"):
            tensor(f"{prefix}.ffn_{part}.weight", ffn, vit)
            tensor(f"{prefix}.ffn_{part}.bias", ffn)
        tensor(f"{prefix}.ffn_down.weight", vit, ffn)
        tensor(f"{prefix}.ffn_down.bias", vit)
    writer.add_tensor("v.post_ln.weight", ones(vit))
    tensor("mm.0.weight", 4 * vit, 4 * vit)
    tensor("mm.0.bias", 4 * vit)
    tensor("mm.2.weight", width, 4 * vit)
    tensor("mm.2.bias", width)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return model_path, projector_path


def write_with_template(source: Path, path: Path, template: str) -> Path:
    """A copy of the GGUF at `source` whose chat template is `template` (weights and every
    other key unchanged), e.g. SmolLM2 with a template that declares think tags."""
    from gguf.scripts.gguf_new_metadata import MetadataDetails, copy_with_new_metadata

    reader = gguf.GGUFReader(source)
    arch = str(reader.fields[gguf.Keys.General.ARCHITECTURE].contents())
    writer = gguf.GGUFWriter(str(path), arch=arch, endianess=reader.endianess)
    template_key = gguf.Keys.Tokenizer.CHAT_TEMPLATE
    copy_with_new_metadata(
        reader, writer, {template_key: MetadataDetails(gguf.GGUFValueType.STRING, template)}, [])
    return path
