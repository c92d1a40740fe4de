"""The device facade on the emulated NPU (tensors on ``npu``), and its refusal without any NPU.

This process has the emulated torch_npu loaded by the ``emulated`` fixture with the device
count and memory it had then, and keeps it; what depends on another count or memory size runs
in a child interpreter configured by the ``NPU_PLATFORM_EMULATE_*`` variables.
"""

from __future__ import annotations

import gc
import json
import subprocess
import sys
import textwrap
import threading
import time

import pytest
import torch

from npu_platform import device
from npu_platform.detect import detect
from npu_platform.errors import EnvironmentProblem
from tests.fakedist import subprocess_env

MIB = 1 << 20


def _child(script: str, **environ: str) -> dict:
    """Run ``script`` in a fresh interpreter on the emulated NPU; its last line is JSON."""
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)],
        env=subprocess_env(NPU_PLATFORM_EMULATE="1", **environ),
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_no_npu_means_a_clear_error(monkeypatch):
    monkeypatch.delenv("NPU_PLATFORM_EMULATE", raising=False)
    detect(refresh=True)
    device.reset_backend()
    assert device.is_available() is False
    with pytest.raises(EnvironmentProblem, match="no NPU device is available.*doctor"):
        device.device_count()
    device.reset_backend()


def test_tensors_live_on_the_npu_device(emulated):
    assert device.is_available()
    assert device.device_type() == "npu"
    assert device.torch_device(0) == torch.device("npu", 0)
    assert device.torch_device() == torch.device("npu", device.current_device())
    a = torch.arange(12, dtype=torch.float32).reshape(3, 4)
    on_npu = a.to(device.torch_device())
    assert on_npu.device == torch.device("npu", 0)
    assert on_npu.is_npu
    product = on_npu @ on_npu.T
    assert product.device.type == "npu"
    assert torch.equal(product.cpu(), a @ a.T)


# What a process with three emulated devices sees: the count, per-thread current devices, the
# device tensors land on, and the errors of bad indices.
THREE_DEVICES = """
    import json, threading, torch
    from npu_platform import device

    def error(fn):
        try:
            fn()
        except Exception as exc:
            return [type(exc).__name__, str(exc)]
        return None

    out = {
        "type": device.device_type(),
        "count": device.device_count(),
        "devices": [str(device.torch_device(i)) for i in range(device.device_count())],
        "start": device.current_device(),
    }
    device.set_device(2)
    out["main"] = device.current_device()
    out["main_default"] = str(device.torch_device())
    out["main_tensor"] = str(torch.ones(2, device="npu").device)
    seen = {}

    def worker():
        seen["start"] = device.current_device()
        device.set_device("npu:1")
        seen["after_set"] = device.current_device()
        seen["tensor"] = str(torch.empty(1, device="npu").device)

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join()
    out["worker"] = seen
    out["main_after_worker"] = device.current_device()
    out["errors"] = {
        "3": error(lambda: device.set_device(3)),
        "npu:7": error(lambda: device.set_device("npu:7")),
        "device(npu, 3)": error(lambda: device.set_device(torch.device("npu", 3))),
        "gpu:0": error(lambda: device.set_device("gpu:0")),
        "cpu": error(lambda: device.set_device("cpu")),
        "name(5)": error(lambda: device.get_device_name(5)),
    }
    out["after_errors"] = device.current_device()
    print(json.dumps(out))
"""


def test_device_count_and_per_thread_set_device():
    result = _child(THREE_DEVICES, NPU_PLATFORM_EMULATE_DEVICES="3")
    assert result["type"] == "npu"
    assert result["count"] == 3
    assert result["devices"] == ["npu:0", "npu:1", "npu:2"]
    assert result["start"] == 0
    assert result["main"] == 2
    assert result["main_default"] == "npu:2"
    assert result["main_tensor"] == "npu:2", "tensors land on the current device"
    # Another thread starts on device 0 and its set_device does not move the main thread.
    assert result["worker"] == {"start": 0, "after_set": 1, "tensor": "npu:1"}
    assert result["main_after_worker"] == 2

    errors = result["errors"]
    for bad in ("3", "npu:7", "device(npu, 3)"):
        kind, message = errors[bad]
        assert kind == "RuntimeError", (bad, errors[bad])
        assert "invalid npu device index" in message
        assert "3 device(s)" in message
    kind, message = errors["gpu:0"]
    assert kind == "RuntimeError" and "device string: gpu" in message
    kind, message = errors["cpu"]
    assert kind == "ValueError" and "Expected a npu device, but got: cpu" in message
    kind, message = errors["name(5)"]
    assert kind == "AssertionError" and "Invalid device id 5" in message
    assert result["after_errors"] == 2, "a refused set_device leaves the current device alone"


def test_default_count_is_one():
    result = _child("""
        import json
        from npu_platform import device
        print(json.dumps({"count": device.device_count()}))
    """)
    assert result == {"count": 1}


MEMORY = """
    import json, os, torch
    from npu_platform import device

    size = int(os.environ["NPU_PLATFORM_EMULATE_DEVICE_MEMORY"])
    out = {"before": [device.mem_get_info(0), device.mem_get_info(1)]}
    x = torch.empty(256 << 20, dtype=torch.uint8, device="npu:1")
    out["with_x"] = [device.mem_get_info(0), device.mem_get_info(1)]
    out["allocated"] = [device.memory_allocated(0), device.memory_allocated(1)]
    try:
        torch.empty(size - (128 << 20), dtype=torch.uint8, device="npu:1")
    except torch.OutOfMemoryError as exc:
        out["oom"] = str(exc)
    out["still"] = device.mem_get_info(1)
    del x
    out["after"] = device.mem_get_info(1)
    print(json.dumps(out))
"""


def test_mem_get_info_is_the_configured_memory_less_what_tensors_take():
    size = 3 << 29  # 1.5 GiB, not the default
    result = _child(
        MEMORY, NPU_PLATFORM_EMULATE_DEVICES="2", NPU_PLATFORM_EMULATE_DEVICE_MEMORY=str(size)
    )
    assert result["before"] == [[size, size], [size, size]]
    # 256 MiB on npu:1: its free memory falls by exactly that, npu:0's does not move.
    assert result["with_x"] == [[size, size], [size - (256 << 20), size]]
    assert result["allocated"] == [0, 256 << 20]
    # More than is left (but less than the total) does not fit.
    assert "out of memory" in result.get("oom", ""), result
    assert result["still"] == [size - (256 << 20), size], "a refused allocation takes nothing"
    assert result["after"] == [size, size]


@pytest.fixture
def quiet_gc():
    """No garbage collection during the test: a collection would free ``npu`` tensors left in
    reference cycles by earlier tests in this process and move the counts being checked."""
    gc.collect()
    gc.disable()
    yield
    gc.enable()


def test_memory_statistics(emulated, quiet_gc):
    device.reset_peak_memory_stats()
    base = device.memory_allocated()
    assert device.max_memory_allocated() == base
    free0, total = device.mem_get_info()
    assert 0 < free0 <= total

    x = torch.empty(3 * MIB, dtype=torch.uint8, device=device.torch_device())
    assert device.memory_allocated() - base == 3 * MIB
    free1, total1 = device.mem_get_info()
    assert total1 == total
    assert free0 - free1 == 3 * MIB
    assert device.memory_reserved() >= device.memory_allocated()

    y = torch.empty(MIB // 4, dtype=torch.float32, device=device.torch_device())  # 1 MiB
    del x
    assert device.memory_allocated() - base == MIB
    assert device.max_memory_allocated() - base == 4 * MIB, "the peak had both tensors"
    device.reset_peak_memory_stats()
    assert device.max_memory_allocated() == device.memory_allocated() == base + MIB
    del y
    assert device.memory_allocated() == base
    device.empty_cache()
    assert device.mem_get_info() == (free0, total)


def test_device_name_and_compute_units(emulated):
    props = torch.npu.get_device_properties(0)
    assert device.get_device_name() == device.get_device_name(0) == props.name
    # The emulated device is an Ascend 910B2: 24 AI (cube) cores, 48 vector cores.
    assert device.get_device_name() == "Ascend910B2"
    assert device.num_compute_units() == 24
    assert device.num_compute_units() == props.cube_core_num != props.vector_core_num


def test_streams_and_events(emulated):
    default = device.current_stream()
    side = device.Stream()
    assert side != default
    assert side.device == device.torch_device()
    in_other_thread = []
    with device.stream(side):
        assert device.current_stream() == side
        worker = threading.Thread(target=lambda: in_other_thread.append(device.current_stream()))
        worker.start()
        worker.join()
    assert in_other_thread == [default], "the current stream is per thread"
    assert device.current_stream() == default

    start, end = device.Event(enable_timing=True), device.Event(enable_timing=True)
    with pytest.raises(RuntimeError, match="recorded"):
        start.elapsed_time(end)
    ones = torch.ones(64, 64, device=device.torch_device())
    start.record()
    product = ones @ ones
    time.sleep(0.05)
    end.record(side)
    end.synchronize()
    assert end.query()
    assert torch.equal(product.cpu(), torch.full((64, 64), 64.0))
    elapsed = start.elapsed_time(end)
    assert elapsed >= 49.0, f"{elapsed} ms between records around a 50 ms sleep"
    assert end.elapsed_time(start) == pytest.approx(-elapsed)
    with pytest.raises(RuntimeError, match="enable_timing=True"):
        device.Event().elapsed_time(end)
    device.synchronize()
    device.synchronize(0)


def test_manual_seed_all_seeds_the_npu_generator(emulated):
    device.manual_seed_all(7)
    a = torch.rand(4, device=device.torch_device())
    b = torch.rand(4, device=device.torch_device())
    device.manual_seed_all(7)
    again = torch.rand(4, device=device.torch_device())
    assert a.device.type == "npu"
    assert torch.equal(a.cpu(), again.cpu())
    assert not torch.equal(a.cpu(), b.cpu())
