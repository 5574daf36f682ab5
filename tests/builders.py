"""Tiny synthetic GGUF models, written with the `gguf` package, for tests and benchmarks.

`write_tiny_bert` makes a BERT-architecture sentence embedder that llama.cpp loads and runs like
all-MiniLM or bge: random weights (fixed seed), so its vectors mean nothing, but they are real
llama.cpp outputs: deterministic, different for different texts, pooled as the metadata asks.
"""

from __future__ import annotations

from pathlib import Path

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
    """Write a BERT embedder GGUF (f32, ~0.3 MB at the defaults) and return its path."""
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

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
