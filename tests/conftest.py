"""Shared pytest configuration: the ``npu`` and ``cuda`` markers skip where no such device is."""

from __future__ import annotations

import logging
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


def _slow_modules_first(items: list[pytest.Item]) -> None:
    """Put the modules that hold ``slow`` tests (real vLLM, sglang and dInfer processes)
    before the rest, keeping the order within each group. scripts/test.sh runs the suite on
    two pytest-xdist workers, one module per worker at a time, in this order
    (``--no-loadscope-reorder``): the long modules start first and the short ones fill in
    around them, instead of one long module starting last and running alone on a half-idle
    machine."""
    slow = {item.module for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.module not in slow)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    _slow_modules_first(items)
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


class _LogRecords(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[tuple[str, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append((record.levelname, record.getMessage()))


@pytest.fixture
def vllm_plugin_log():
    """(level, message) of what the vLLM integration logs on ``vllm.npu_platform`` (vLLM's
    logger tree, which need not propagate to the root logger)."""
    logger = logging.getLogger("vllm.npu_platform")
    handler = _LogRecords()
    logger.addHandler(handler)
    level = logger.level
    logger.setLevel(logging.DEBUG)
    yield handler.messages
    logger.setLevel(level)
    logger.removeHandler(handler)
