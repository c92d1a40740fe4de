"""The NPU worker calls a KV connector's sleep hooks where vLLM's GPU worker does.

vLLM 0.33 added ``unregister_kv_caches`` / ``restore_kv_caches`` to the KV connector base
class; its GPU worker calls the first before the memory sleeps and the second once the KV
cache is awake again (a full wake-up, or one that names ``kv_cache``). vLLM 0.32's
connectors lack both hooks, and the worker must then work as before.

The connector here is a subclass of vLLM's own base class with only the recording added, set
as vLLM's process-wide KV transfer group (where ``ensure_kv_transfer_initialized`` puts the
configured one). The worker methods run on the emulated NPU with a recording sleep backend.
"""

from __future__ import annotations

import types

import pytest


class _SleepBackend:
    def __init__(self, calls: list[str]) -> None:
        self.calls = calls

    def suspend(self, level: int) -> None:
        self.calls.append(f"suspend({level})")

    def resume(self, tags) -> None:
        self.calls.append(f"resume({tags})")


@pytest.fixture
def worker_and_calls(emulated, monkeypatch):
    from vllm.distributed.kv_transfer import kv_transfer_state
    from vllm.distributed.kv_transfer.kv_connector.v1.base import KVConnectorBase_V1

    from npu_platform.vllm.worker import NPUWorker

    calls: list[str] = []
    base_has_hooks = hasattr(KVConnectorBase_V1, "unregister_kv_caches")

    class Recording(KVConnectorBase_V1):
        def __init__(self) -> None:  # the base needs a VllmConfig; these hooks do not
            pass

    # The transfer methods the base declares abstract are not called around sleep.
    Recording.__abstractmethods__ = frozenset()

    if base_has_hooks:
        Recording.unregister_kv_caches = lambda self: calls.append("unregister_kv_caches")
        Recording.restore_kv_caches = lambda self: calls.append("restore_kv_caches")

    monkeypatch.setattr(kv_transfer_state, "_KV_CONNECTOR_AGENT", Recording())
    worker = types.SimpleNamespace(
        sleep_mode_backend=_SleepBackend(calls),
        vllm_config=types.SimpleNamespace(
            model_config=types.SimpleNamespace(enable_nccl_comm_suspend=False)
        ),
        _sleep_saved_parameters={},
        _sleep_saved_buffers={},
    )
    bound = types.SimpleNamespace(
        sleep=lambda level=1: NPUWorker.sleep(worker, level),
        wake_up=lambda tags=None: NPUWorker.wake_up(worker, tags),
    )
    return bound, calls, base_has_hooks


def test_sleep_unregisters_before_suspending_and_full_wake_restores(worker_and_calls):
    worker, calls, base_has_hooks = worker_and_calls
    worker.sleep(1)
    worker.wake_up(None)
    if base_has_hooks:
        assert calls == ["unregister_kv_caches", "suspend(1)", "resume(None)", "restore_kv_caches"]
    else:  # vLLM 0.32: no hooks to call, sleep works as before
        assert calls == ["suspend(1)", "resume(None)"]


def test_restore_waits_for_the_kv_cache_to_wake(worker_and_calls):
    worker, calls, base_has_hooks = worker_and_calls
    worker.sleep(1)
    worker.wake_up(["weights"])
    assert "restore_kv_caches" not in calls
    worker.wake_up(["kv_cache"])
    if base_has_hooks:
        assert calls[-2:] == ["resume(['kv_cache'])", "restore_kv_caches"]
    else:
        assert calls[-1] == "resume(['kv_cache'])"


def test_no_connector_means_no_hook(emulated):
    from vllm.distributed.kv_transfer import has_kv_transfer_group

    from npu_platform.vllm.worker import _kv_connector_hook

    assert not has_kv_transfer_group()
    _kv_connector_hook("unregister_kv_caches")  # nothing configured: nothing to call
