"""``npu-platform conformance`` as a user runs it: a child process, JSON out, exit status."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.fakedist import subprocess_env


def conformance(*args: str, **environ: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "npu_platform", "conformance", *args],
        env=subprocess_env(**environ),
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )


def test_memory_group_passes_on_the_emulated_npu():
    run = conformance("--json", "--only", "memory", NPU_PLATFORM_EMULATE="1")
    report = json.loads(run.stdout.strip().splitlines()[-1])
    assert run.returncode == 0, report
    assert report["ok"] is True
    assert report["detect"]["target"] == "emulated"
    names = {check["name"]: check["status"] for check in report["checks"]}
    assert names["pause(tag) pauses only that tag"] == "pass"
    assert names["CPU backup restores the contents"] == "pass"
    assert names["resume keeps the addresses"] == "pass"
    assert all(status == "pass" for status in names.values())


def test_without_an_npu_it_fails_and_says_why():
    run = conformance("--only", "memory")
    assert run.returncode == 1
    assert "conformance needs an NPU, real or emulated" in run.stdout
    assert "NPU_PLATFORM_EMULATE=1" in run.stdout


def test_unknown_group_is_a_usage_error():
    run = conformance("--only", "memory,tensorflow", NPU_PLATFORM_EMULATE="1")
    assert run.returncode == 2
    assert "unknown group(s) tensorflow" in run.stdout


def test_every_group_passes_on_the_emulated_npu():
    """All groups, vLLM's and sglang's included: every check runs here and passes (the vLLM
    group generates greedily through ``vllm.LLM`` on a tiny local model in a child)."""
    run = conformance("--json", NPU_PLATFORM_EMULATE="1")
    report = json.loads(run.stdout.strip().splitlines()[-1])
    assert run.returncode == 0, report
    assert report["ok"] is True
    assert report["detect"]["target"] == "emulated"
    by_group: dict[str, dict[str, str]] = {}
    for check in report["checks"]:
        by_group.setdefault(check["group"], {})[check["name"]] = check["status"]
    assert set(by_group) == {"memory", "vllm", "sglang"}
    failing = [
        (c["group"], c["name"], c["status"], c["detail"])
        for c in report["checks"]
        if c["status"] != "pass"
    ]
    assert failing == [], "every check must run and pass (none skipped) in emulation"
    assert set(by_group["vllm"]) == {
        "vllm entry points registered",
        "vllm platform class resolves to ours",
        "vllm platform methods implemented",
        "vllm attention backend contract",
        "vllm custom ops registered",
        "vllm greedy generation on a tiny model",
    }
    assert len(by_group["sglang"]) >= 4
    generation = next(c for c in report["checks"] if c["name"].startswith("vllm greedy"))
    # The production configuration, not float32 with small blocks.
    assert "bfloat16, block size 128, head size 128" in generation["detail"]
