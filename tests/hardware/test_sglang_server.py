"""End to end on a real Ascend NPU: an unmodified sglang server with the memory saver.

Launches ``python -m sglang.launch_server --device npu --enable-memory-saver`` (weights with
CPU backup, graph memory pausable), releases memory in stages through the HTTP endpoints
(kv_cache, then weights, then cuda_graph), measures free device memory with
``npu_platform.device.mem_get_info`` after each stage, resumes in sglang's order and checks
that greedy outputs are the same before and after.

Needs a real NPU (``npu`` marker, skipped elsewhere) and a small model:
``NPU_TEST_SGLANG_MODEL`` (a local path or a hub id reachable from the machine).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest

pytestmark = [pytest.mark.npu, pytest.mark.slow]

MIB = 1 << 20
PROMPTS = ["The capital of France is", "1, 2, 3, 4,"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _post(url: str, payload: dict | None = None, timeout: float = 300) -> object:
    data = json.dumps(payload or {}).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        body = resp.read()
    return json.loads(body) if body else None


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    model = os.environ.get("NPU_TEST_SGLANG_MODEL")
    if not model:
        pytest.skip("set NPU_TEST_SGLANG_MODEL to a small model (path or hub id)")
    port = _free_port()
    env = dict(os.environ, SGLANG_MEMORY_SAVER_CUDA_GRAPH="1")
    cmd = [
        sys.executable,
        "-m",
        "sglang.launch_server",
        "--model-path",
        model,
        "--device",
        "npu",
        "--enable-memory-saver",
        "--enable-weights-cpu-backup",
        "--mem-fraction-static",
        "0.5",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    proc = subprocess.Popen(cmd, env=env, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 900
        while True:
            if proc.poll() is not None:
                pytest.fail(f"sglang server exited with {proc.returncode} during start-up")
            try:
                with urllib.request.urlopen(f"{base}/health_generate", timeout=10) as resp:
                    if resp.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            if time.monotonic() > deadline:
                pytest.fail("sglang server did not become healthy in 15 minutes")
            time.sleep(2)
        yield base
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def _generate(base: str) -> list[str]:
    out = []
    for prompt in PROMPTS:
        result = _post(
            f"{base}/generate",
            {"text": prompt, "sampling_params": {"temperature": 0, "max_new_tokens": 24}},
        )
        out.append(result["text"])  # type: ignore[index]
    return out


def _free_bytes() -> int:
    from npu_platform import device

    device.synchronize(0)
    return device.mem_get_info(0)[0]


def test_staged_release_and_resume_on_npu(server: str) -> None:
    from npu_platform.detect import Target, detect

    assert detect().target is Target.REAL
    before = _generate(server)
    free = {"start": _free_bytes()}

    for tag in ("kv_cache", "weights", "cuda_graph"):
        _post(f"{server}/release_memory_occupation", {"tags": [tag]})
        free[f"released {tag}"] = _free_bytes()
    for tag in ("cuda_graph", "weights", "kv_cache"):
        _post(f"{server}/resume_memory_occupation", {"tags": [tag]})
        free[f"resumed {tag}"] = _free_bytes()
    report = ", ".join(f"{k}: {v / MIB:.0f} MiB free" for k, v in free.items())

    # Each release hands memory back to the device; a model's weights and a KV cache
    # are each far above 100 MiB. Graph memory may be small, but must not grow.
    assert free["released kv_cache"] - free["start"] > 100 * MIB, report
    assert free["released weights"] - free["released kv_cache"] > 100 * MIB, report
    assert free["released cuda_graph"] >= free["released weights"] - 16 * MIB, report
    # Resuming takes it back (within what allocator caches may keep).
    assert abs(free["resumed kv_cache"] - free["start"]) < 512 * MIB, report

    after = _generate(server)
    assert after == before, f"outputs changed after release/resume: {before!r} -> {after!r}"

    # Everything at once (tags=None) works too, and outputs stay the same.
    _post(f"{server}/release_memory_occupation", {})
    _post(f"{server}/resume_memory_occupation", {})
    assert _generate(server) == before
