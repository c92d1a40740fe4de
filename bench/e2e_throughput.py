#!/usr/bin/env python
"""Generation throughput of vLLM on the emulated NPU against Hugging Face ``generate``.

    .venv/bin/python bench/e2e_throughput.py [--prompts 16] [--new-tokens 64]
                                             [--dtype float32] [--repeat 3] [--json]

Same tiny Llama (built locally, random weights), same prompts (token ids), same number of
new tokens per prompt (greedy, EOS masked so every sequence runs to the end), same process
and same CPU threads:

* ``hf``: transformers' ``generate`` on the whole batch (left padding, KV cache);
* ``vllm``: ``vllm.LLM.generate`` through npu-platform on the emulated NPU (continuous
  batching, paged KV cache, every torch_npu op schema-checked and run by its CPU reference).

Each side is warmed up once and then timed ``--repeat`` times; the best time counts.
``tokens_per_s_ratio_vs_hf`` = vLLM tokens/s / HF tokens/s. On the emulated NPU this says
what the plugin's host-side overhead (scheduling, metadata, contract checks) costs against
a plain PyTorch loop; it says nothing about NPU performance.
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


def _setup_environment() -> None:
    sys.path.insert(0, str(ROOT))
    os.environ["NPU_PLATFORM_EMULATE"] = "1"
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _best(fn, repeat: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    _setup_environment()

    import torch
    from transformers import AutoModelForCausalLM

    from npu_platform.vllm.tiny_model import build_model, load_tokenizer, prompts

    threads = torch.get_num_threads()
    with tempfile.TemporaryDirectory(prefix="npu-platform-bench-") as tmp:
        model_dir = build_model("llama", Path(tmp) / "tiny-llama")
        tok = load_tokenizer(model_dir)
        batch = [tok(t).input_ids for t in prompts(args.prompts, seed=1)]
        total_new = args.prompts * args.new_tokens

        # ---- Hugging Face generate, batched with left padding.
        hf = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=getattr(torch, args.dtype))
        width = max(map(len, batch))
        pad = tok.pad_token_id if tok.pad_token_id is not None else 3
        ids = torch.tensor([[pad] * (width - len(p)) + p for p in batch])
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in batch])

        def run_hf() -> None:
            with torch.no_grad():
                out = hf.generate(
                    ids,
                    attention_mask=mask,
                    max_new_tokens=args.new_tokens,
                    min_new_tokens=args.new_tokens,
                    do_sample=False,
                    pad_token_id=pad,
                )
            assert out.shape[1] - width == args.new_tokens

        hf_s = _best(run_hf, args.repeat)

        # ---- vLLM through the plugin on the emulated NPU.
        from vllm import LLM, SamplingParams
        from vllm.platforms import current_platform

        llm = LLM(
            model=str(model_dir),
            dtype=args.dtype,
            max_model_len=256,
            max_num_seqs=args.prompts,
            kv_cache_memory_bytes=64 << 20,
            seed=0,
        )
        torch.set_num_threads(threads)  # vLLM lowers it for serving; compare like for like
        params = SamplingParams(
            temperature=0.0, max_tokens=args.new_tokens, min_tokens=args.new_tokens
        )
        requests = [{"prompt_token_ids": p} for p in batch]

        def run_vllm() -> None:
            outs = llm.generate(requests, params, use_tqdm=False)
            assert sum(len(o.outputs[0].token_ids) for o in outs) == total_new

        vllm_s = _best(run_vllm, args.repeat)
        platform = type(current_platform).__name__

    summary = {
        "platform": platform,
        "dtype": args.dtype,
        "prompts": args.prompts,
        "new_tokens_per_prompt": args.new_tokens,
        "torch_threads": threads,
        "hf_seconds": hf_s,
        "vllm_seconds": vllm_s,
        "hf_tokens_per_s": total_new / hf_s,
        "vllm_tokens_per_s": total_new / vllm_s,
        "tokens_per_s_ratio_vs_hf": hf_s / vllm_s,
    }
    print(f"{args.prompts} prompts x {args.new_tokens} new tokens, {args.dtype}, {threads} threads")
    print(f"  HF generate:                 {summary['hf_tokens_per_s']:9.1f} tokens/s")
    print(
        f"  vLLM on the emulated NPU:    {summary['vllm_tokens_per_s']:9.1f} tokens/s ({platform})"
    )
    print(f"  tokens_per_s_ratio_vs_hf = {summary['tokens_per_s_ratio_vs_hf']:.3f}")
    if args.json:
        print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
