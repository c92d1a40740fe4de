"""Real dInfer, unmodified (``../shared/fixtures/dInfer``), on the emulated NPU.

Two processes run :mod:`tests/dinfer_real/harness.py` side by side, each building the same
tiny random-weight LLaDA (2 layers, d_model 64) from dInfer's own ``configuration_llada`` /
``modeling_llada``:

* the reference, on plain CPU without the plugin (``NPU_PLATFORM_PATCHES=0``, no emulation,
  eager: ``TORCHDYNAMO_DISABLE=1``), decodes every variant;
* the CUDA program dInfer is, on the emulated NPU with the start-up patches dInfer needs
  (``NPU_PLATFORM_PATCH_ONLY=cuda,distributed,flash_attn,torch_memory_saver``), with
  ``torch.compile`` on: the model loaded the CUDA way (``config.flash_attention = True``,
  ``.cuda()``, ``torch.load(map_location="cuda")``) and decoded with
  ``ThresholdParallelDecoder`` through ``BlockWiseDiffusionLLM`` (no cache, prefix cache,
  dual cache) and ``VicinityCacheDiffusionLLM``; two spawned ranks running dInfer's own
  ``tests/test_wo_model.py`` distributed check and then tensor parallelism 2 as
  ``benchmarks/benchmark.py`` sets it up; ``DiffusionLLMServing`` with one worker.

Token lists are compared exactly. dInfer's own incompatibilities with vLLM 0.32 and
transformers 5 are worked around in the harness, one named function each.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
import tokenize
from pathlib import Path

import pytest

from tests.fakedist import REPO_ROOT, subprocess_env
from tests.test_patches_dinfer import CUDA_PROGRAM_PATCHES

HARNESS = Path(__file__).resolve().parent / "dinfer_real" / "harness.py"
DINFER = REPO_ROOT.parent / "shared" / "fixtures" / "dInfer"
TIMEOUT = 900  # seconds, for both runs (side by side)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not (DINFER / "python" / "dinfer").is_dir(),
        reason=f"dInfer's source is not at {DINFER} (see its SOURCE.md)",
    ),
]


def _start(mode: str, workdir: Path, **env: str) -> subprocess.Popen:
    workdir.mkdir(parents=True)
    return subprocess.Popen(
        [sys.executable, str(HARNESS), mode, str(workdir)],
        env=subprocess_env(DINFER_SOURCE=str(DINFER), **env),
        stdout=(workdir / "log.txt").open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its spawned workers go with it if it must be killed
    )


def _finish(proc: subprocess.Popen, deadline_s: float) -> int | str:
    try:
        return proc.wait(timeout=deadline_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        return f"killed after {TIMEOUT} s"


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("dinfer_real")
    procs = {
        "reference": _start(
            "reference", root / "reference", NPU_PLATFORM_PATCHES="0", TORCHDYNAMO_DISABLE="1"
        ),
        "emulated": _start(
            "emulated",
            root / "emulated",
            NPU_PLATFORM_EMULATE="1",
            NPU_PLATFORM_EMULATE_DEVICES="2",
            NPU_PLATFORM_PATCH_ONLY=CUDA_PROGRAM_PATCHES,
        ),
    }
    deadline = time.monotonic() + TIMEOUT
    out = {}
    for mode, proc in procs.items():
        status = _finish(proc, max(1.0, deadline - time.monotonic()))
        log = (root / mode / "log.txt").read_text(errors="replace")
        report_file = root / mode / f"{mode}.json"
        report = json.loads(report_file.read_text()) if report_file.exists() else {"steps": {}}
        out[mode] = {"status": status, "log": log[-6000:], **report}
    return out


def _result(runs: dict, mode: str, step: str):
    run = runs[mode]
    outcome = run["steps"].get(step)
    assert outcome is not None, f"{mode}: step {step!r} did not run ({run['status']})\n{run['log']}"
    assert "error" not in outcome, f"{mode}: {step} failed\n{outcome['error']}\n{run['log']}"
    return outcome["result"]


def test_decoders_on_the_npu_give_the_cpu_tokens(runs):
    reference = _result(runs, "reference", "decode")
    emulated = _result(runs, "emulated", "decode")
    assert emulated["weights"] == reference["weights"]  # both built the same model
    assert emulated["param_device"] == "npu:0"  # LLaDAModelLM(config) built on "cuda"
    assert emulated["flash_attn_module"] == "npu_platform.patches.flash_attn"
    assert set(emulated["variants"]) == {"blockwise", "prefix", "dual", "vicinity"}
    for kind, got in emulated["variants"].items():
        want = reference["variants"][kind]
        assert got["device"] == "npu:0" and want["device"] == "cpu", kind
        assert got["tokens"] == want["tokens"], kind
        assert got["forwards"] == want["forwards"], kind
        prompt_and_answer = got["tokens"][0]
        assert len(prompt_and_answer) > 11, kind  # something was generated after the prompt
    # Threshold decoding took several tokens in one step somewhere (24 tokens each).
    assert min(v["forwards"] for v in reference["variants"].values()) < 24
    # The variants decode differently (each path was taken, not one path four times).
    assert len({str(v["tokens"]) for v in reference["variants"].values()}) >= 3


def test_dinfer_test_wo_model_on_two_nccl_ranks(runs):
    parallel = _result(runs, "emulated", "parallel")
    assert parallel["exitcodes"] == [0, 0], parallel
    assert [r["rank"] for r in parallel["ranks"]] == [0, 1]
    for rank in parallel["ranks"]:
        assert Path(rank["test_wo_model"]) == DINFER / "tests" / "test_wo_model.py"
        assert rank["check_worker"] == "passed"


def test_tensor_parallel_two_ranks_give_the_cpu_tokens(runs):
    reference = _result(runs, "reference", "decode")["variants"]["benchmark"]
    parallel = _result(runs, "emulated", "parallel")
    assert len(parallel["ranks"]) == 2, parallel
    for rank in parallel["ranks"]:
        assert rank["backend"] == "hccl"  # asked for "nccl"
        assert rank["device"] == f"npu:{rank['rank']}"
        assert rank["q_proj"] == "ColumnParallelLinear(32, 64)"  # half the heads per rank
        assert rank["tokens"] == reference["tokens"], rank["rank"]


def test_serving_with_one_worker(runs):
    assert _result(runs, "emulated", "serving_start") == {"workers": 1}
    served = _result(runs, "emulated", "serving")
    assert served["worker_exitcodes"] == [0]  # stop_serving() ended the worker
    # The worker's decoding (bfloat16, compiled) done directly on the emulated NPU.
    direct = _result(runs, "emulated", "decode")["serving_direct"]["blockwise"]
    assert served["tokens"] == direct["tokens"]
    assert len(served["tokens"][0]) > 11


def test_runs_finished_cleanly(runs):
    for mode in ("reference", "emulated"):
        assert runs[mode]["status"] == 0 and runs[mode]["ok"], (mode, runs[mode]["log"])


def test_harness_is_a_cuda_program():
    """The harness's code (comments and strings aside) never names the NPU or the plugin."""
    names = [
        tok.string
        for tok in tokenize.generate_tokens(io.StringIO(HARNESS.read_text()).readline)
        if tok.type == tokenize.NAME
    ]
    for word in names:
        parts = word.lower().split("_")
        assert "npu" not in parts and "hccl" not in parts, word
    for call in ("set_device", "flash_attention", "cuda", "map_location", "tensor_parallel"):
        assert call in names, call
