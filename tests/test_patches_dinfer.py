"""The dInfer-shaped program (tests/dinfer_like/program.py) run unmodified, with the plugin.

* Emulated NPU, with ``NPU_PLATFORM_PATCH_ONLY=cuda,distributed,flash_attn,torch_memory_saver``
  (what dInfer, a CUDA program, asks for): every step passes (2 spawned workers, nccl ->
  hccl, flash_attn varlen vs naive attention, .cuda(), CUDA graph, torch_memory_saver) on
  ``npu`` tensors, even though CUDA builds of flash_attn and torch_memory_saver are
  installed.
* Emulated NPU, default patches: torch.cuda is left alone (``is_available()`` False; every
  step that needs a CUDA tensor fails as on a CPU-only torch) while ``distributed``
  (nccl -> hccl), ``flash_attn`` and ``torch_memory_saver`` still act.
* No NPU (this CPU machine, emulation off): the program fails step for step exactly as it
  does with the start-up patches switched off (``NPU_PLATFORM_PATCHES=0``), using the CUDA
  packages: no patch was applied.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fakedist import make_dist, make_fake_torch_memory_saver, subprocess_env

PROGRAM = Path(__file__).resolve().parent / "dinfer_like" / "program.py"
STEPS = (
    "set_device",
    "init_process_group",
    "all_reduce",
    "flash_attn",
    "module_cuda",
    "cuda_graph",
    "torch_memory_saver",
    "shutdown",
)
CUDA_ONLY = "fake CUDA flash_attn: this build needs an NVIDIA GPU"
CUDA_PROGRAM_PATCHES = "cuda,distributed,flash_attn,torch_memory_saver"
#: The steps that make a tensor (so report its device) in a successful run.
TENSOR_STEPS = ("all_reduce", "flash_attn", "module_cuda", "cuda_graph", "torch_memory_saver")
ACTIVE_LINE = "npu_platform start-up patches active on the emulated NPU: "

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cuda_site(tmp_path_factory) -> Path:
    """CUDA builds of flash_attn and torch_memory_saver, as a CUDA user would have them."""
    site = tmp_path_factory.mktemp("cuda_site")
    kernel = f"def _kernel(*args, **kwargs):\n    raise RuntimeError({CUDA_ONLY!r})\n\n\n"
    make_dist(
        site,
        "flash_attn",
        "2.7.4",
        files={
            "flash_attn/__init__.py": kernel
            + "flash_attn_func = flash_attn_varlen_func = _kernel\n",
            "flash_attn/bert_padding.py": kernel
            + "pad_input = unpad_input = index_first_axis = _kernel\n",
        },
    )
    make_fake_torch_memory_saver(site, "cuda")
    return site


def run_program(tmp_path: Path, site: Path, *args: str, **env: str | None) -> dict:
    result = tmp_path / "result.json"
    proc = subprocess.run(
        [sys.executable, str(PROGRAM), str(result), *args],
        env=subprocess_env([site], **env),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.exists(), proc.stdout + proc.stderr
    report = json.loads(result.read_text())
    report["returncode"] = proc.returncode
    report["stderr"] = proc.stderr
    return report


def test_runs_unmodified_on_the_emulated_npu(tmp_path, cuda_site):
    report = run_program(
        tmp_path,
        cuda_site,
        NPU_PLATFORM_EMULATE="1",
        NPU_PLATFORM_EMULATE_DEVICES="2",
        NPU_PLATFORM_PATCH_ONLY=CUDA_PROGRAM_PATCHES,
    )
    detail = json.dumps(report["workers"], indent=1) + report["stderr"][-3000:]
    assert report["returncode"] == 0, detail
    assert report["ok"], detail
    assert [w["rank"] for w in report["workers"]] == [0, 1]
    for worker in report["workers"]:
        assert worker["exitcode"] == 0, detail
        assert worker["steps"] == dict.fromkeys(STEPS, "ok"), detail
        assert worker["cuda_available"] is True  # transfer_to_npu answers for the NPU
        assert worker["backend"] == "hccl"  # asked for "nccl"
        # Every tensor the program put on "cuda" (or with .cuda()) is on its rank's NPU.
        assert worker["devices"] == dict.fromkeys(TENSOR_STEPS, f"npu:{worker['rank']}")
        assert worker["flash_attn_module"] == "npu_platform.patches.flash_attn"
        assert worker["memory_saver_module"] == "npu_platform.torch_memory_saver"
        assert max(worker["flash_attn_max_error"].values()) < 1e-2
    # Each spawned worker logs the active patches once, at WARNING (torch.cuda is redirected).
    active = [line for line in report["stderr"].splitlines() if ACTIVE_LINE in line]
    assert active == [ACTIVE_LINE + CUDA_PROGRAM_PATCHES.replace(",", ", ")] * 2, active


def test_default_patches_leave_torch_cuda_alone(tmp_path, cuda_site):
    """Without ``cuda`` in the selection the program's CUDA calls reach torch's own (CPU-only)
    torch.cuda, while the import and backend rewrites still act in both workers."""
    report = run_program(
        tmp_path,
        cuda_site,
        "--keep-going",
        NPU_PLATFORM_EMULATE="1",
        NPU_PLATFORM_EMULATE_DEVICES="2",
    )
    detail = json.dumps(report["workers"], indent=1) + report["stderr"][-3000:]
    assert report["returncode"] == 1 and not report["ok"], detail
    not_compiled = "AssertionError: Torch not compiled with CUDA enabled"
    for worker in report["workers"]:
        steps = worker["steps"]
        assert worker["cuda_available"] is False, detail
        assert worker["failed"] == "set_device", detail
        assert "_cuda_setDevice" in steps["set_device"], detail  # torch's CPU build has none
        # distributed: "nccl" became hccl, and the group works.
        assert steps["init_process_group"] == "ok" and worker["backend"] == "hccl", detail
        # Every step that needs a CUDA tensor fails as on a CPU-only torch.
        for name in (*TENSOR_STEPS, "shutdown"):
            assert steps[name] == not_compiled, (name, detail)
        assert worker["devices"] == {}
        # flash_attn and torch_memory_saver: npu_platform's, not the installed CUDA builds.
        assert worker["flash_attn_module"] == "npu_platform.patches.flash_attn"
        assert worker["memory_saver_module"] == "npu_platform.torch_memory_saver"
    assert ACTIVE_LINE not in report["stderr"]  # logged at INFO without cuda


def test_without_npu_fails_exactly_as_without_the_patches(tmp_path, cuda_site):
    inactive = run_program(tmp_path / "inactive", cuda_site, "--keep-going")
    disabled = run_program(
        tmp_path / "disabled", cuda_site, "--keep-going", NPU_PLATFORM_PATCHES="0"
    )
    assert inactive["returncode"] == disabled["returncode"] == 1
    assert not inactive["ok"]
    for a, b in zip(inactive["workers"], disabled["workers"], strict=True):
        assert a["exitcode"] == b["exitcode"] == 1
        assert a["steps"] == b["steps"], (a, b)
        assert a["failed"] == b["failed"] == "set_device"
    steps = inactive["workers"][0]["steps"]
    assert list(steps) == list(STEPS)
    assert all(outcome != "ok" for outcome in steps.values()), steps
    # The CUDA packages were imported, not npu_platform's replacements.
    for worker in (*inactive["workers"], *disabled["workers"]):
        assert worker["flash_attn_module"] == "flash_attn"
        assert worker["memory_saver_module"] == "torch_memory_saver"
    assert "has no attribute 'torch_memory_saver'" in steps["torch_memory_saver"]
    assert "NCCL" in steps["init_process_group"]


def test_program_text_is_cuda_only():
    """The program under test never names the NPU or the plugin (it is 'unmodified')."""
    text = PROGRAM.read_text()
    code = text.split('"""', 2)[2]  # after the module docstring
    for pattern in (r"\bnpu", r"npu_platform", r"\bhccl\b", r"\bgloo\b", r"emulat"):
        assert not re.search(pattern, code, re.IGNORECASE), pattern
    assert 'init_process_group("nccl"' in code
    assert code.count('get_context("spawn")') == 1
