"""The tests' name for :mod:`npu_platform.vllm.tiny_model` (the builder lives in the package,
where the conformance checks use it too)."""

from npu_platform.vllm.tiny_model import (
    COMMON,
    KINDS,
    SPECIAL,
    VOCAB_SIZE,
    build_model,
    build_tokenizer,
    greedy_agreement,
    hf_greedy,
    load_tokenizer,
    prompts,
    weight_bytes,
)

__all__ = [
    "COMMON",
    "KINDS",
    "SPECIAL",
    "VOCAB_SIZE",
    "build_model",
    "build_tokenizer",
    "greedy_agreement",
    "hf_greedy",
    "load_tokenizer",
    "prompts",
    "weight_bytes",
]
