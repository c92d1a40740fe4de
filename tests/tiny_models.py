"""Tiny random-weight Hugging Face models and a tokenizer, built locally (no downloads).

``build_model(kind, path)`` writes a complete model directory that both vLLM and
transformers load: ``config.json``, seeded random ``model.safetensors``, a
``generation_config.json`` and a word-level fast tokenizer. Kinds:

* ``"llama"``: LlamaForCausalLM, 4 query heads and 4 KV heads (MHA), GPT-NeoX-style RoPE;
* ``"qwen2"``: Qwen2ForCausalLM, 4 query heads and 2 KV heads (GQA), QKV bias.

Both have hidden size 64, head size 16, 2 layers and a 384-token vocabulary, so a forward
pass costs well under a millisecond of CPU. Weights are drawn with a larger spread than
usual (``initializer_range``) so greedy decoding rarely meets near-ties.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

SPECIAL = ["<unk>", "<s>", "</s>", "<pad>"]
VOCAB_SIZE = 384
_WORDS = [f"w{i}" for i in range(VOCAB_SIZE - len(SPECIAL))]

COMMON = {
    "vocab_size": VOCAB_SIZE,
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "max_position_embeddings": 512,
    "rms_norm_eps": 1e-6,
    "rope_theta": 10000.0,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "pad_token_id": 3,
    "tie_word_embeddings": False,
    "initializer_range": 0.2,
    "dtype": "float32",
}


def build_tokenizer(path: str | Path) -> None:
    """A whitespace word-level tokenizer over ``<unk> <s> </s> <pad> w0 w1 ...``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(SPECIAL + _WORDS)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="<unk>",
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
    )
    fast.save_pretrained(str(path))


def build_model(kind: str, path: str | Path, seed: int = 0) -> Path:
    """Write a tiny ``kind`` ("llama" or "qwen2") model with seeded random weights."""
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig, Qwen2Config

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    if kind == "llama":
        config = LlamaConfig(**COMMON, num_key_value_heads=4, head_dim=16)
    elif kind == "qwen2":
        config = Qwen2Config(**COMMON, num_key_value_heads=2, use_sliding_window=False)
    else:
        raise ValueError(f"unknown tiny model kind {kind!r}")
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("bias"):
                param.normal_(0.0, 0.05)
    model.save_pretrained(str(path), safe_serialization=True)
    build_tokenizer(path)
    (path / "generation_config.json").write_text(
        json.dumps({"bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 3})
    )
    return path


def prompts(count: int = 8, seed: int = 0, min_len: int = 3, max_len: int = 40) -> list[str]:
    """``count`` space-separated word prompts of different lengths (deterministic)."""
    rng = random.Random(seed)
    lengths = sorted({rng.randint(min_len, max_len) for _ in range(count * 4)})
    rng.shuffle(lengths)
    lengths = lengths[:count]
    while len(lengths) < count:
        lengths.append(min_len + len(lengths))
    return [" ".join(rng.choice(_WORDS) for _ in range(n)) for n in lengths]
