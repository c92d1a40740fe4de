"""NPUWorker methods on the emulated NPU, each run on a stand-in ``self`` that holds only
what the method reads: sleep levels, level-2 sleep restoring preserved parameters and
buffers, a KV connector's hooks around sleep, the KV-cache budget refusal, and the device
index of a data-parallel rank. vLLM's own Worker helpers are used unchanged."""

from __future__ import annotations

import types

import pytest
import torch


@pytest.fixture
def worker_cls(emulated):
    from npu_platform.vllm.worker import NPUWorker

    return NPUWorker


class _ForgetfulBackend:
    """A sleep backend that, like discarded device memory, loses the tensors' contents."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model
        self.calls: list[str] = []

    def suspend(self, level: int) -> None:
        self.calls.append(f"suspend({level})")
        with torch.no_grad():
            for tensor in [*self.model.parameters(), *self.model.buffers()]:
                tensor.fill_(-1)

    def resume(self, tags) -> None:
        self.calls.append(f"resume({tags})")


class _Model(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.keep = torch.nn.Linear(4, 4, device="npu")
        self.drop = torch.nn.Linear(4, 4, device="npu")
        self.register_buffer("positions", torch.arange(8.0, device="npu"))


def _stand_in(worker_cls, model: torch.nn.Module, preserve: list[str]):
    from vllm.v1.worker.gpu_worker import Worker

    model_config = types.SimpleNamespace(
        enable_nccl_comm_suspend=False, sleep_preserve_parameter_names=preserve
    )
    ns = types.SimpleNamespace(
        model_runner=types.SimpleNamespace(model=model),
        model_config=model_config,
        vllm_config=types.SimpleNamespace(model_config=model_config),
        sleep_mode_backend=_ForgetfulBackend(model),
        _sleep_saved_parameters={},
        _sleep_saved_buffers={},
        get_draft_model=lambda: None,
    )
    for name in ("_get_sleep_parameters", "_save_sleep_parameters", "_restore_sleep_parameters"):
        setattr(ns, name, types.MethodType(getattr(Worker, name), ns))
    return ns


def test_sleep_level_3_is_refused(worker_cls) -> None:
    ns = _stand_in(worker_cls, _Model(), [])
    for level in (0, 3):
        with pytest.raises(ValueError, match=f"sleep level must be 1 or 2, got {level}"):
            worker_cls.sleep(ns, level)
    assert ns.sleep_mode_backend.calls == []


def test_level_2_sleep_restores_preserved_parameters_and_buffers(worker_cls) -> None:
    model = _Model()
    keep = model.keep.weight.detach().cpu().clone()
    ns = _stand_in(worker_cls, model, ["keep.*"])
    worker_cls.sleep(ns, 2)
    assert set(ns._sleep_saved_parameters) == {"keep.weight", "keep.bias"}
    assert bool((model.keep.weight == -1).all())  # the memory was lost
    worker_cls.wake_up(ns, None)
    assert torch.equal(model.keep.weight.cpu(), keep)
    assert torch.equal(model.positions.cpu(), torch.arange(8.0))
    assert bool((model.drop.weight == -1).all())  # not preserved: reloaded by vLLM, not us
    assert ns._sleep_saved_parameters == {} and ns._sleep_saved_buffers == {}
    assert ns.sleep_mode_backend.calls == ["suspend(2)", "resume(None)"]


def test_waking_only_the_kv_cache_leaves_weights_for_later(worker_cls) -> None:
    model = _Model()
    ns = _stand_in(worker_cls, model, ["keep.*"])
    worker_cls.sleep(ns, 2)
    worker_cls.wake_up(ns, ["kv_cache"])
    assert bool((model.positions == -1).all())
    assert set(ns._sleep_saved_parameters) == {"keep.weight", "keep.bias"}
    worker_cls.wake_up(ns, ["weights"])
    assert torch.equal(model.positions.cpu(), torch.arange(8.0))
    assert ns._sleep_saved_parameters == {}


def test_no_memory_left_for_the_kv_cache(worker_cls) -> None:
    ran = []
    ns = types.SimpleNamespace(
        cache_config=types.SimpleNamespace(
            kv_cache_memory_bytes=None, gpu_memory_utilization=1e-12
        ),
        model_runner=types.SimpleNamespace(profile_run=lambda: ran.append(True)),
    )
    with pytest.raises(ValueError, match="No memory left for the KV cache") as info:
        worker_cls.determine_available_memory(ns)
    assert ran == [True]
    message = str(info.value)
    assert "--gpu-memory-utilization 1e-12 allows 0.00 GiB" in message
    assert "Raise --gpu-memory-utilization or set --kv-cache-memory-bytes" in message


def test_data_parallel_rank_offsets_the_local_device(worker_cls) -> None:
    from vllm.platforms import current_platform

    parallel = types.SimpleNamespace(
        distributed_executor_backend="mp",
        data_parallel_backend="mp",
        nnodes_within_dp=1,
        data_parallel_rank_local=None,
        data_parallel_index=1,
        pipeline_parallel_size=1,
        prefill_context_parallel_size=1,
        tensor_parallel_size=2,
    )
    ns = types.SimpleNamespace(parallel_config=parallel, local_rank=1)
    device = worker_cls._local_device_index(ns)
    assert ns.local_rank == 3  # rank 1 of the second tensor-parallel pair
    assert device == current_platform.logical_device_id_to_visible_device_id(3)
    parallel.data_parallel_rank_local = 0
    ns.local_rank = 1
    assert worker_cls._local_device_index(ns) == (
        current_platform.logical_device_id_to_visible_device_id(1)
    )


# -- a KV connector's hooks around sleep ------------------------------------------------------
# vLLM 0.33 added ``unregister_kv_caches`` / ``restore_kv_caches`` to the KV connector base
# class; its GPU worker calls the first before the memory sleeps and the second once the KV
# cache is awake again (a full wake-up, or one that names ``kv_cache``). vLLM 0.32's
# connectors lack both hooks, and the worker must then work as before. The connector is a
# subclass of vLLM's own base class with only the recording added, set as vLLM's
# process-wide KV transfer group (where ``ensure_kv_transfer_initialized`` puts the
# configured one).


@pytest.fixture
def connector_worker(worker_cls, monkeypatch):
    """(stand-in worker, the calls of its sleep backend and KV connector, base has hooks)."""
    from vllm.distributed.kv_transfer import kv_transfer_state
    from vllm.distributed.kv_transfer.kv_connector.v1.base import KVConnectorBase_V1

    ns = _stand_in(worker_cls, _Model(), [])
    calls = ns.sleep_mode_backend.calls
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
    return ns, calls, base_has_hooks


def test_sleep_unregisters_before_suspending_and_full_wake_restores(
    worker_cls, connector_worker
) -> None:
    ns, calls, base_has_hooks = connector_worker
    worker_cls.sleep(ns, 1)
    worker_cls.wake_up(ns, None)
    if base_has_hooks:
        assert calls == ["unregister_kv_caches", "suspend(1)", "resume(None)", "restore_kv_caches"]
    else:  # vLLM 0.32: no hooks to call, sleep works as before
        assert calls == ["suspend(1)", "resume(None)"]


def test_restore_waits_for_the_kv_cache_to_wake(worker_cls, connector_worker) -> None:
    ns, calls, base_has_hooks = connector_worker
    worker_cls.sleep(ns, 1)
    worker_cls.wake_up(ns, ["weights"])
    assert "restore_kv_caches" not in calls
    worker_cls.wake_up(ns, ["kv_cache"])
    if base_has_hooks:
        assert calls[-2:] == ["resume(['kv_cache'])", "restore_kv_caches"]
    else:
        assert calls[-1] == "resume(['kv_cache'])"


def test_no_connector_means_no_hook(worker_cls) -> None:
    from vllm.distributed.kv_transfer import has_kv_transfer_group

    from npu_platform.vllm.worker import _kv_connector_hook

    assert not has_kv_transfer_group()
    _kv_connector_hook("unregister_kv_caches")  # nothing configured: nothing to call
