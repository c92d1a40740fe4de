"""The general plugin's registrations, in this process: once per process (also when two
threads race), nothing when vLLM's platform is not ours, a custom op another plugin already
replaced is left alone, and an older vLLM without the sleep-mode backend factory is fine.
The Triton-kernel replacement is installed once per process in the same way.

vLLM's registries are restored after each test.
"""

from __future__ import annotations

import sys
import threading
import time

import pytest

from npu_platform.vllm import kernels, plugin
from npu_platform.vllm.platform import NPUPlatform


@pytest.fixture
def fresh(monkeypatch):
    """The plugin as in a new process (nothing registered yet), with vLLM's platform pinned
    for the test and its custom-op and sleep-backend registries restored afterwards."""
    import vllm.platforms
    from vllm.device_allocator.sleep_mode_backend import SleepModeBackendFactory
    from vllm.model_executor.custom_op import op_registry_oot

    monkeypatch.setattr(plugin, "_done", False)
    monkeypatch.setattr(plugin, "registered", [])
    monkeypatch.setattr(vllm.platforms, "_current_platform", vllm.platforms._current_platform)
    monkeypatch.setattr(
        SleepModeBackendFactory, "_registry", dict(SleepModeBackendFactory._registry)
    )
    saved = dict(op_registry_oot)
    yield monkeypatch
    op_registry_oot.clear()
    op_registry_oot.update(saved)


def test_nothing_is_registered_when_another_platform_won(fresh, vllm_plugin_log):
    import vllm.platforms
    from vllm.model_executor.custom_op import op_registry_oot
    from vllm.platforms.interface import UnspecifiedPlatform

    fresh.setattr(vllm.platforms, "_current_platform", UnspecifiedPlatform())
    before = dict(op_registry_oot)
    assert plugin.register_all() is False
    assert plugin.registered == []
    assert dict(op_registry_oot) == before
    assert (
        "DEBUG",
        "npu-platform: vLLM's platform is not ours; registering nothing",
    ) in vllm_plugin_log
    # Decided once: a later call (even with our platform current) does not register.
    fresh.setattr(vllm.platforms, "_current_platform", NPUPlatform())
    assert plugin.register_all() is False
    assert plugin.registered == []


def test_a_caller_waiting_on_the_first_one_registers_nothing(fresh):
    """Two threads race to register: the one that waited for the lock finds the work done."""
    import vllm.platforms

    fresh.setattr(vllm.platforms, "_current_platform", NPUPlatform())
    answers: list[bool] = []
    with plugin._lock:
        waiter = threading.Thread(target=lambda: answers.append(plugin.register_all()))
        waiter.start()
        time.sleep(0.3)  # the waiter is blocked on the lock, past the unlocked check
        assert answers == []
        plugin._done = True  # what the first caller leaves when it releases the lock
    waiter.join(timeout=30)
    assert answers == [False]
    assert plugin.registered == []


def test_custom_ops_replaced_by_another_plugin_are_left_alone(fresh, vllm_plugin_log):
    from vllm.model_executor.custom_op import op_registry_oot
    from vllm.model_executor.layers.activation import SiluAndMul

    from npu_platform.vllm.custom_ops import NPURMSNorm

    class OtherSiluAndMul(SiluAndMul):
        pass

    op_registry_oot["RMSNorm"] = NPURMSNorm  # ours already (an earlier call)
    op_registry_oot["SiluAndMul"] = OtherSiluAndMul  # another plugin's
    op_registry_oot.pop("RotaryEmbedding", None)
    plugin._register_custom_ops()
    assert plugin.registered == ["custom_op:RotaryEmbedding"]
    assert op_registry_oot["RMSNorm"] is NPURMSNorm
    assert op_registry_oot["SiluAndMul"] is OtherSiluAndMul
    assert op_registry_oot["RotaryEmbedding"].__name__ == "NPURotaryEmbedding"
    where = f"{OtherSiluAndMul.__module__}.{OtherSiluAndMul.__qualname__}"
    assert (
        "WARNING",
        f"npu-platform: custom op SiluAndMul is already replaced by {where}; leaving it.",
    ) in vllm_plugin_log


def test_sleep_backend_registered_once_and_skipped_on_older_vllm(fresh):
    from vllm.device_allocator.sleep_mode_backend import SleepModeBackendFactory

    SleepModeBackendFactory._registry.pop("npu", None)
    plugin._register_sleep_backend()
    plugin._register_sleep_backend()
    assert plugin.registered == ["sleep_backend:npu"]
    assert SleepModeBackendFactory.get_backend_class("npu").__name__ == "NPUSleepModeBackend"

    # vLLM before 0.32 has no sleep-mode backend factory (the import fails): nothing to do.
    SleepModeBackendFactory._registry.pop("npu")
    fresh.setitem(sys.modules, "vllm.device_allocator.sleep_mode_backend", None)
    plugin._register_sleep_backend()
    assert plugin.registered == ["sleep_backend:npu"]
    assert "npu" not in SleepModeBackendFactory._registry


# --------------------------------------------------------------------------- Triton kernels


@pytest.fixture
def dispatcher(monkeypatch):
    """vLLM's kernel-override registry, empty for the test; our kernels not yet installed."""
    from vllm.triton_utils import dispatcher

    monkeypatch.setattr(dispatcher, "_registry", {})
    monkeypatch.setattr(kernels, "_registered", False)
    return dispatcher


def test_kernels_are_installed_once_per_process(dispatcher, monkeypatch):
    monkeypatch.setattr(kernels, "_registered", True)  # an earlier call installed them
    kernels.register()
    assert dispatcher._registry == {}


def test_a_kernel_install_waiting_on_the_first_one_does_nothing(dispatcher):
    done: list[bool] = []
    with kernels._lock:
        waiter = threading.Thread(target=lambda: done.append(kernels.register() is None))
        waiter.start()
        time.sleep(0.3)
        assert done == []
        kernels._registered = True
    waiter.join(timeout=30)
    assert done == [True]
    assert dispatcher._registry == {}
