"""Tiny random-weight Hugging Face models and a tokenizer, built locally (no downloads).

Used by the vLLM conformance checks (:mod:`npu_platform.vllm.conformance`), the tests, the
demo and the benchmarks: everything that needs "a model vLLM can load" on a machine without
network access.

``build_model(kind, path, seed=0)`` writes a complete model directory that both vLLM and
transformers load: ``config.json``, seeded random ``model.safetensors``, a
``generation_config.json`` and a word-level fast tokenizer. Kinds:

* ``"llama"``: LlamaForCausalLM, 4 query heads and 4 KV heads (MHA), GPT-NeoX-style RoPE;
* ``"qwen2"``: Qwen2ForCausalLM, 4 query heads and 2 KV heads (GQA), QKV bias.

Both have hidden size 64, head size 16, 2 layers and a 384-token vocabulary, so a forward
pass costs well under a millisecond of CPU. Weights are drawn with a larger spread than
usual (``initializer_range``) so greedy decoding rarely meets near-ties. Keyword overrides
change the architecture (``intermediate_size``, ``num_hidden_layers``, ...), for example to
get tens of MiB of weights for memory tests; the vocabulary stays the tokenizer's.

The same ``kind``, ``seed`` and overrides give the same weights (and the same files) on any
machine. Importing this module imports neither torch nor transformers; building does.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

__all__ = [
    "COMMON",
    "KINDS",
    "SPECIAL",
    "VOCAB_SIZE",
    "build_model",
    "build_tokenizer",
    "greedy_agreement",
    "load_tokenizer",
    "prompts",
    "weight_bytes",
]

SPECIAL = ["<unk>", "<s>", "</s>", "<pad>"]
VOCAB_SIZE = 384
_WORDS = [f"w{i}" for i in range(VOCAB_SIZE - len(SPECIAL))]
KINDS = ("llama", "qwen2")

COMMON: dict[str, Any] = {
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
#: What overrides may not change (the tokenizer and the special ids depend on them).
_FIXED = ("vocab_size", "bos_token_id", "eos_token_id", "pad_token_id")


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


def load_tokenizer(path: str | Path) -> Any:
    """The tokenizer of a model directory written by :func:`build_model`.

    Read straight from ``tokenizer.json``: transformers maps some model types (qwen2) to
    their own tokenizer classes, which cannot read a word-level tokenizer.
    """
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(tokenizer_file=str(Path(path) / "tokenizer.json"))


def build_model(kind: str, path: str | Path, seed: int = 0, **overrides: Any) -> Path:
    """Write a tiny ``kind`` ("llama" or "qwen2") model with seeded random weights.

    ``overrides`` replace entries of :data:`COMMON` (not the vocabulary or special ids).
    Returns ``path``.
    """
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig, Qwen2Config

    fixed = sorted(set(overrides) & set(_FIXED))
    if fixed:
        raise ValueError(f"tiny model: {', '.join(fixed)} cannot be overridden")
    unknown = sorted(set(overrides) - set(COMMON))
    if unknown:
        raise ValueError(
            f"tiny model: unknown setting(s) {', '.join(unknown)}; "
            f"choose from {', '.join(sorted(set(COMMON) - set(_FIXED)))}"
        )
    settings = {**COMMON, **overrides}
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    if kind == "llama":
        head_dim = settings["hidden_size"] // settings["num_attention_heads"]
        config = LlamaConfig(**settings, num_key_value_heads=4, head_dim=head_dim)
    elif kind == "qwen2":
        config = Qwen2Config(**settings, num_key_value_heads=2, use_sliding_window=False)
    else:
        raise ValueError(f"unknown tiny model kind {kind!r}; choose from {', '.join(KINDS)}")
    # A private generator: the caller's global RNG state is left as it was.
    with torch.random.fork_rng(devices=[]):
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


def weight_bytes(path: str | Path) -> int:
    """Bytes of the weights stored in a model directory's safetensors files."""
    total = 0
    for file in sorted(Path(path).glob("*.safetensors")):
        with open(file, "rb") as fh:
            header_len = int.from_bytes(fh.read(8), "little")
            header = json.loads(fh.read(header_len))
        for name, entry in header.items():
            if name != "__metadata__":
                start, end = entry["data_offsets"]
                total += end - start
    return total


def hf_greedy(
    model_dir: str | Path, prompts: list[list[int]], new_tokens: int, dtype: str = "float32"
) -> list[list[int]]:
    """Hugging Face transformers' greedy continuation of each prompt: the reference that
    vLLM's output through the plugin must equal."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=getattr(torch, dtype))
    out = []
    for ids in prompts:
        inputs = torch.tensor([ids])
        gen = model.generate(
            inputs,
            attention_mask=torch.ones_like(inputs),
            max_new_tokens=new_tokens,
            min_new_tokens=new_tokens,
            do_sample=False,
        )
        out.append(gen[0, len(ids) :].tolist())
    return out


def greedy_agreement(
    model_dir: str | Path,
    prompts: list[list[int]],
    got: list[list[int]],
    ref: list[list[int]],
    dtype: str,
) -> dict[str, Any]:
    """Whether ``got`` (vLLM's greedy tokens) equals ``ref`` (Hugging Face's, same dtype)
    token for token up to the first near-tie.

    In float32 the two must be equal. In a 16-bit dtype, two correct implementations round
    differently (fused kernels, accumulation order), and where the best two tokens are
    closer than that rounding, either is a right answer and the continuations part. So at
    the first position ``p`` where a sequence differs, the reference model scores the common
    prefix twice, in ``dtype`` and in float32; the dtype's own rounding error at ``p`` is
    ``noise = max |logits_dtype - logits_float32|`` over the vocabulary, and the difference is
    a near-tie when the two chosen tokens' dtype logits differ by at most ``2 * noise`` (twice:
    each implementation may be off by that much). Anything farther apart is a wrong token.
    Tokens after ``p`` are not compared.
    """
    import torch
    from transformers import AutoModelForCausalLM

    def load(name: str) -> Any:
        return AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=getattr(torch, name))

    models: dict[str, Any] = {}
    sequences = []
    compared = total = 0
    for ids, mine, theirs in zip(prompts, got, ref, strict=True):
        total += len(theirs)
        p = next((i for i, (a, b) in enumerate(zip(mine, theirs, strict=False)) if a != b), None)
        if p is None:
            equal = len(mine) == len(theirs)
            compared += len(theirs) if equal else min(len(mine), len(theirs))
            sequences.append({"equal": equal, "diverged_at": None, "tie": None})
            continue
        compared += p
        entry: dict[str, Any] = {"equal": False, "diverged_at": p, "tie": False}
        if dtype != "float32":
            for name in (dtype, "float32"):
                models.setdefault(name, load(name))
            seq = torch.tensor([ids + theirs[:p]])
            with torch.no_grad():
                low = models[dtype](seq).logits[0, -1].float()
                high = models["float32"](seq).logits[0, -1].float()
            noise = float((low - high).abs().max())
            gap = abs(float(low[theirs[p]] - low[mine[p]]))
            entry.update(gap=gap, noise=noise, tie=gap <= 2 * noise)
        sequences.append(entry)
    return {
        "sequences": sequences,
        "compared": compared,
        "total": total,
        "ok": all(s["equal"] or s["tie"] for s in sequences),
    }


def prompts(count: int = 8, seed: int = 0, min_len: int = 3, max_len: int = 40) -> list[str]:
    """``count`` space-separated word prompts of different lengths (deterministic)."""
    rng = random.Random(seed)
    lengths = sorted({rng.randint(min_len, max_len) for _ in range(count * 4)})
    rng.shuffle(lengths)
    lengths = lengths[:count]
    while len(lengths) < count:
        lengths.append(min_len + len(lengths))
    return [" ".join(rng.choice(_WORDS) for _ in range(n)) for n in lengths]
