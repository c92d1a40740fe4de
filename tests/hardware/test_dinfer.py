"""The dInfer-shaped program (``tests/dinfer_like/program.py``) unmodified on a real Ascend NPU.

As ``tests/test_patches_dinfer.py`` runs it on the emulated NPU: with
``NPU_PLATFORM_PATCH_ONLY=cuda,distributed,flash_attn,torch_memory_saver`` (what dInfer, a
CUDA program, asks for) every step passes in every spawned worker (``torch.cuda`` answers for
the NPU, nccl -> hccl, flash_attn varlen against plain attention, ``.cuda()``, a CUDA graph,
torch_memory_saver), on ``npu`` tensors. One worker per device, two at most; no CUDA build of
flash_attn or torch_memory_saver is needed (the start-up patches answer those imports).

Needs a real NPU (``npu`` marker, skipped elsewhere) and npu-platform installed in the
environment (its start-up hook, ``npu_platform-startup.pth``, applies the patches).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.fakedist import REPO_ROOT
from tests.test_patches_dinfer import (
    ACTIVE_LINE,
    CUDA_PROGRAM_PATCHES,
    PROGRAM,
    STEPS,
    TENSOR_STEPS,
)

pytestmark = [pytest.mark.npu, pytest.mark.slow]

#: The active-patches line each worker logs, on the real NPU.
REAL_ACTIVE_LINE = ACTIVE_LINE.replace("emulated", "real")


def _world_size() -> int:
    from npu_platform.detect import detect

    return max(1, min(2, detect(refresh=True).device_count))


def test_runs_unmodified_on_the_npu(tmp_path):
    world_size = _world_size()
    env = {k: v for k, v in os.environ.items() if not k.startswith("NPU_PLATFORM_")}
    env["NPU_PLATFORM_PATCH_ONLY"] = CUDA_PROGRAM_PATCHES
    env["PYTHONPATH"] = os.pathsep.join(
        [str(REPO_ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
    )
    result = tmp_path / "result.json"
    proc = subprocess.run(
        [sys.executable, str(PROGRAM), str(result), "--world-size", str(world_size)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.exists(), proc.stdout + proc.stderr[-6000:]
    report = json.loads(result.read_text())
    detail = json.dumps(report["workers"], indent=1) + proc.stderr[-3000:]
    assert proc.returncode == 0, detail
    assert report["ok"], detail
    assert [w["rank"] for w in report["workers"]] == list(range(world_size))
    for worker in report["workers"]:
        assert worker["exitcode"] == 0, detail
        assert worker["steps"] == dict.fromkeys(STEPS, "ok"), detail
        assert worker["cuda_available"] is True, detail
        assert worker["backend"] == "hccl", detail  # asked for "nccl"
        assert worker["devices"] == dict.fromkeys(TENSOR_STEPS, f"npu:{worker['rank']}"), detail
        assert worker["flash_attn_module"] == "npu_platform.patches.flash_attn"
        assert worker["memory_saver_module"] == "npu_platform.torch_memory_saver"
        assert max(worker["flash_attn_max_error"].values()) < 1e-2, detail
    active = [line for line in proc.stderr.splitlines() if REAL_ACTIVE_LINE in line]
    expected = REAL_ACTIVE_LINE + CUDA_PROGRAM_PATCHES.replace(",", ", ")
    assert active == [expected] * world_size, active
