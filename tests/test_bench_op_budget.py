"""``bench/op_budget.py`` (shown in the README): the per-step op budget of a vLLM decode step
on the NPU, in the production configuration, computed from the plugin's own counters."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.vllm_scenarios import scenario_env

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_decode_step_makes_one_kv_write_and_one_attention_per_layer_and_one_build():
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "op_budget.py"), "--json"],
        env=scenario_env(emulate=False),  # the bench switches the emulated NPU on itself
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["configuration"] == {
        "model": "qwen2 (GQA 4/2)",
        "layers": 4,
        "head_size": 128,
        "dtype": "bfloat16",
        "block_size": 128,
        "batch": 4,
        "decode_steps": 8,
    }
    per_layer = result["per_layer"]
    assert per_layer["npu_scatter_pa_kv_cache"] == 1
    assert per_layer["npu_fused_infer_attention_score"] == 1
    assert not any("attention" in op for op in per_layer if op != "npu_fused_infer_attention_score")
    assert result["metadata_builds_per_step"] == 1
    assert result["within_budget"] is True
