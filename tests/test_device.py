"""The device facade on the emulated NPU, and its refusal without any NPU."""

from __future__ import annotations

import threading

import pytest
import torch

from npu_platform import device
from npu_platform.detect import detect
from npu_platform.errors import EnvironmentProblem


def _meminfo_total() -> int:
    with open("/proc/meminfo") as fh:
        for line in fh:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no MemTotal in /proc/meminfo")


def test_no_npu_means_a_clear_error(monkeypatch):
    monkeypatch.delenv("NPU_PLATFORM_EMULATE", raising=False)
    detect(refresh=True)
    device.reset_backend()
    assert device.is_available() is False
    with pytest.raises(EnvironmentProblem, match="no NPU device is available.*doctor"):
        device.device_count()
    device.reset_backend()


def test_device_count_follows_the_variable(emulated, monkeypatch):
    monkeypatch.setenv("NPU_PLATFORM_EMULATE_DEVICES", "3")
    detect(refresh=True)
    device.reset_backend()
    assert device.is_available()
    assert device.device_count() == 3
    assert device.device_type() == "cpu"
    assert device.torch_device(2) == torch.device("cpu")


def test_set_device_is_per_thread_and_checked(emulated, monkeypatch):
    monkeypatch.setenv("NPU_PLATFORM_EMULATE_DEVICES", "2")
    detect(refresh=True)
    device.reset_backend()
    device.set_device(1)
    assert device.current_device() == 1
    seen = []
    worker = threading.Thread(target=lambda: seen.append(device.current_device()))
    worker.start()
    worker.join()
    assert seen == [0], "another thread keeps its own current device"
    device.set_device("npu:0")
    assert device.current_device() == 0
    with pytest.raises(ValueError, match=r"index 2 is out of range: 2 emulated device\(s\)"):
        device.set_device(2)
    with pytest.raises(ValueError, match="unknown device 'gpu:0'"):
        device.set_device("gpu:0")


def test_streams_and_events(emulated):
    default = device.current_stream()
    side = device.Stream()
    assert side is not default
    with device.stream(side):
        assert device.current_stream() is side
    assert device.current_stream() is default

    start, end = device.Event(enable_timing=True), device.Event(enable_timing=True)
    start.record()
    torch.ones(256, 256) @ torch.ones(256, 256)
    end.record(side)
    end.synchronize()
    assert end.query()
    assert end.elapsed_time(start) <= 0.0 <= start.elapsed_time(end)
    with pytest.raises(RuntimeError, match="enable_timing=True"):
        device.Event().elapsed_time(end)
    device.synchronize()


def test_memory_info_is_the_hosts(emulated):
    free, total = device.mem_get_info()
    assert total == _meminfo_total()
    assert 0 < free <= total
    device.empty_cache()
    device.manual_seed_all(7)
    a = torch.rand(4)
    device.manual_seed_all(7)
    assert torch.equal(a, torch.rand(4))
