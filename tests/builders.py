"""Tiny synthetic GGUF files for tests, written with the `gguf` package."""

from __future__ import annotations

from pathlib import Path

import numpy as np

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
