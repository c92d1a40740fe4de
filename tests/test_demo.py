"""The README's main job, ``scripts/demo.py``: unmodified vLLM generating through the plugin,
with vLLM's default multiprocessing, and the process exits on its own."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_demo_generates_on_the_npu_platform_and_exits():
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NPU_PLATFORM_", "VLLM_"))}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "demo.py"), "--max-tokens", "8", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,  # a process left waiting for its engine core would hit this
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["platform"] == "npu_platform.vllm.platform.NPUPlatform"
    assert summary["target"] == "emulated" and summary["emulated"] is True
    assert summary["generated_tokens"] == 4 * 8  # four prompts, min_tokens = max_tokens
    assert summary["tokens_per_s"] > 0
    assert "Ran on the EMULATED Ascend NPU" in proc.stdout
