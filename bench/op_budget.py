#!/usr/bin/env python
"""torch_npu calls per layer and attention-metadata builds per decode step, in vLLM.

    .venv/bin/python bench/op_budget.py [--layers 4] [--decode-steps 8] [--json]

Runs vLLM through npu-platform on the NPU (the emulated one where there is no real one) in
the production configuration: a tiny Qwen2 (GQA, 4 query and 2 KV heads, head size 128),
bfloat16, the platform's default KV block size (128). One batch of prompts is generated
twice, with 1 and with ``1 + decode_steps`` new tokens; the difference is ``decode_steps``
pure decode steps. Counted there, from the plugin's own counters
(``npu_platform.ops.op_counts`` and ``npu_platform.vllm.attention.metadata_build_count``):

* ``per_layer``: torch_npu calls per layer and decode step, by op; the budget is one KV-cache
  write (``npu_scatter_pa_kv_cache``) and one attention (``npu_fused_infer_attention_score``);
* ``metadata_builds_per_step``: the budget is one (shared by every layer);
* ``within_budget``: both hold.

The engine runs in this process (``VLLM_ENABLE_V1_MULTIPROCESSING=0``) so the counters are
this process's. The figure counts calls, not time: it is the same on the emulated NPU and
on hardware.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
#: The ops the attention path may call per layer and step, and how often.
BUDGET = {"npu_scatter_pa_kv_cache": 1, "npu_fused_infer_attention_score": 1}
MODEL = {"hidden_size": 512, "num_attention_heads": 4}


def _setup_environment() -> None:
    sys.path.insert(0, str(ROOT))
    from npu_platform.detect import detect

    if not detect().is_npu:  # no real NPU: the emulated one
        os.environ["NPU_PLATFORM_EMULATE"] = "1"
        detect(refresh=True)
    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def measure(layers: int, decode_steps: int, prompts: int = 4) -> dict:
    from vllm import LLM, SamplingParams

    from npu_platform import ops
    from npu_platform.vllm import attention, tiny_model

    with tempfile.TemporaryDirectory(prefix="npu-op-budget-") as tmp:
        model_dir = tiny_model.build_model(
            "qwen2", Path(tmp) / "qwen2", seed=0, num_hidden_layers=layers, **MODEL
        )
        tok = tiny_model.load_tokenizer(model_dir)
        batch = [
            {"prompt_token_ids": tok(t).input_ids} for t in tiny_model.prompts(prompts, seed=0)
        ]
        llm = LLM(
            model=str(model_dir),
            dtype="bfloat16",
            max_model_len=256,
            max_num_seqs=prompts,
            kv_cache_memory_bytes=32 << 20,
            enable_prefix_caching=False,
            seed=0,
        )
        config = llm.llm_engine.vllm_config

        def counted(new_tokens: int) -> tuple[dict[str, int], int]:
            params = SamplingParams(temperature=0.0, max_tokens=new_tokens, min_tokens=new_tokens)
            ops.reset_op_counts()
            attention.reset_metadata_build_count()
            llm.generate(batch, params, use_tqdm=False)
            return ops.op_counts(), attention.metadata_build_count()

        counted(1)  # warm-up
        prefill_ops, prefill_builds = counted(1)
        all_ops, all_builds = counted(1 + decode_steps)
        per_layer = {
            op: (all_ops.get(op, 0) - prefill_ops.get(op, 0)) / (decode_steps * layers)
            for op in sorted(set(all_ops) | set(prefill_ops))
        }
        per_layer = {op: n for op, n in per_layer.items() if n}
        builds = (all_builds - prefill_builds) / decode_steps
        attention_ops = {op: n for op, n in per_layer.items() if op in BUDGET}
        return {
            "configuration": {
                "model": "qwen2 (GQA 4/2)",
                "layers": layers,
                "head_size": config.model_config.get_head_size(),
                "dtype": "bfloat16",
                "block_size": config.cache_config.block_size,
                "batch": prompts,
                "decode_steps": decode_steps,
            },
            "per_layer": per_layer,
            "metadata_builds_per_step": builds,
            "within_budget": attention_ops == BUDGET and builds == 1,
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--decode-steps", type=int, default=8)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    _setup_environment()
    result = measure(args.layers, args.decode_steps)
    if args.json:
        print(json.dumps(result), flush=True)
        return
    print(f"configuration: {result['configuration']}")
    print("torch_npu calls per layer and decode step:")
    for op, n in result["per_layer"].items():
        budget = BUDGET.get(op)
        note = f" (budget {budget})" if budget is not None else ""
        print(f"  {op}: {n:g}{note}")
    print(f"attention metadata builds per decode step: {result['metadata_builds_per_step']:g}")
    print(f"within budget: {result['within_budget']}")


if __name__ == "__main__":
    main()
