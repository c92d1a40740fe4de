#!/usr/bin/env python
"""Demo: unmodified vLLM generating text through npu-platform on the (emulated) Ascend NPU.

Builds a tiny random-weight Llama and a word-level tokenizer in a temporary folder (no
downloads), starts ``vllm.LLM`` on it, generates from a few prompts and prints the text,
tokens per second and which platform vLLM ran on.

    .venv/bin/python scripts/demo.py            # emulated NPU unless a real one is present
    .venv/bin/python scripts/demo.py --json     # last line: machine-readable summary

On a machine without an NPU, ``NPU_PLATFORM_EMULATE=1`` is set for you. The model is random,
so the text is random words; the point is the path it takes.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _prepare_environment() -> str:
    """Choose the real or the emulated NPU before torch and vLLM are imported."""
    sys.path.insert(0, str(ROOT))
    from npu_platform.detect import detect

    if os.environ.get("NPU_PLATFORM_EMULATE") is None and not detect().is_npu:
        os.environ["NPU_PLATFORM_EMULATE"] = "1"
        detect(refresh=True)
    # vLLM runs as users run it: its default multiprocessing, start-up patches at their
    # default.
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    return detect().target.value


PROMPTS = [
    "w1 w2 w3 w4",
    "w10 w20 w30 w40 w50 w60 w70 w80",
    "w100 w7 w99",
    "w5 w6 w7 w8 w9 w10 w11 w12 w13 w14 w15 w16",
]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--json", action="store_true", help="print a JSON summary last")
    args = parser.parse_args()

    target = _prepare_environment()
    from npu_platform.vllm.tiny_model import build_model

    with tempfile.TemporaryDirectory(prefix="npu-platform-demo-") as tmp:
        model_dir = build_model("llama", Path(tmp) / "tiny-llama")

        from vllm import LLM, SamplingParams
        from vllm.platforms import current_platform

        llm = LLM(
            model=str(model_dir),
            dtype="bfloat16",
            max_model_len=256,
            max_num_seqs=len(PROMPTS),
            kv_cache_memory_bytes=32 << 20,
            seed=0,
        )
        params = SamplingParams(
            temperature=0.0, max_tokens=args.max_tokens, min_tokens=args.max_tokens
        )
        llm.generate(PROMPTS[:1], SamplingParams(max_tokens=2), use_tqdm=False)  # warm-up
        started = time.perf_counter()
        outputs = llm.generate(PROMPTS, params, use_tqdm=False)
        elapsed = time.perf_counter() - started

        # Stop the engine-core process now. vLLM stops it when the LLM object is collected;
        # left to interpreter exit, multiprocessing's exit hook can wait for that
        # (non-daemonic) process before vLLM's own finalizer has told it to stop.
        llm.llm_engine.engine_core.shutdown()

        generated = sum(len(o.outputs[0].token_ids) for o in outputs)
        platform = f"{type(current_platform).__module__}.{type(current_platform).__qualname__}"
        emulated = target == "emulated"
        print(f"vLLM platform: {platform} ({current_platform.get_device_name()})")
        if emulated:
            print("Ran on the EMULATED Ascend NPU (NPU_PLATFORM_EMULATE=1, CPU-backed).")
        elif target == "real":
            print("Ran on a real Ascend NPU.")
        for prompt, out in zip(PROMPTS, outputs, strict=True):
            print(f"  {prompt!r} -> {out.outputs[0].text[:70]!r}...")
        tokens_per_s = generated / elapsed
        print(f"{generated} tokens in {elapsed:.2f} s: {tokens_per_s:.1f} tokens/s")
        if args.json:
            print(
                json.dumps(
                    {
                        "platform": platform,
                        "emulated": emulated,
                        "target": target,
                        "generated_tokens": generated,
                        "seconds": elapsed,
                        "tokens_per_s": tokens_per_s,
                    }
                )
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
