"""Shared pytest configuration: the ``npu`` and ``cuda`` markers skip where no such device is."""

from __future__ import annotations

import os

import pytest


def _real_npu_present() -> bool:
    if os.environ.get("NPU_PLATFORM_EMULATE", "0") not in ("", "0"):
        return False
    from npu_platform.detect import Target, detect

    try:
        return detect(refresh=True).target is Target.REAL
    except Exception:
        return False


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not any(item.get_closest_marker("npu") for item in items):
        return
    if _real_npu_present():
        return
    skip = pytest.mark.skip(reason="needs a real Ascend NPU (torch_npu with at least one device)")
    for item in items:
        if item.get_closest_marker("npu"):
            item.add_marker(skip)


def load_emulated_torch_npu() -> None:
    """Load the emulated torch_npu into this process, as torch's autoload does at start-up
    when NPU_PLATFORM_EMULATE=1. Once loaded, ``torch.npu`` stays for the whole process."""
    from npu_platform.emulation import autoload

    autoload.autoload()


@pytest.fixture
def emulated(monkeypatch: pytest.MonkeyPatch):
    """Switch this process to the emulated NPU for one test, and back afterwards."""
    from npu_platform import device
    from npu_platform.detect import detect

    monkeypatch.setenv("NPU_PLATFORM_EMULATE", "1")
    load_emulated_torch_npu()
    detect(refresh=True)
    device.reset_backend()
    yield
    monkeypatch.delenv("NPU_PLATFORM_EMULATE", raising=False)
    monkeypatch.delenv("NPU_PLATFORM_EMULATE_DEVICES", raising=False)
    detect(refresh=True)
    device.reset_backend()
