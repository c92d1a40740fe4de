"""sglang's own memory-saver adapter on npu_platform's manager, on the emulated NPU.

The adapter is the one sglang creates (``TorchMemorySaverAdapter.create(enable=True)`` from
the unmodified ``sglang.srt.utils.torch_memory_saver_adapter``); behind it is
npu_platform's ``torch_memory_saver`` singleton on the host driver. Tensors are allocated
the way sglang's weight loader and KV pools do it, with plain ``torch.empty`` inside the
adapter's regions; the emulated NPU's CPU allocator hook puts them in manager memory. Sizes
are small multiples of the 2 MiB granularity.
"""

from __future__ import annotations

import functools
import gc
import sys
import types
from collections.abc import Iterator

import pytest

torch = pytest.importorskip("torch")

KV, WEIGHTS, GRAPH = "kv_cache", "weights", "cuda_graph"
MIB = 1 << 20


@pytest.fixture(scope="module")
def env() -> Iterator[types.SimpleNamespace]:
    from npu_platform import device
    from npu_platform.detect import detect
    from npu_platform.sglang import memory_saver

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("NPU_PLATFORM_EMULATE", "1")
        mp.delenv("LD_PRELOAD", raising=False)
        detect(refresh=True)
        device.reset_backend()
        assert memory_saver.install() is True
        import sglang.srt.utils.torch_memory_saver_adapter as adapter_module

        from npu_platform import torch_memory_saver as facade

        try:
            yield types.SimpleNamespace(
                adapter_module=adapter_module,
                adapter=adapter_module.TorchMemorySaverAdapter.create(enable=True),
                facade=facade,
                saver=facade.torch_memory_saver,
                memory_saver=memory_saver,
            )
        finally:
            gc.collect()
            memory_saver.uninstall()
    detect(refresh=True)
    device.reset_backend()


@pytest.fixture
def ms(env: types.SimpleNamespace) -> Iterator[types.SimpleNamespace]:
    """Per test: start and end with every allocation freed and nothing paused."""
    yield env
    gc.collect()
    manager = env.saver.manager
    leftovers = manager.allocations()
    manager.resume(None)
    assert leftovers == [], f"test left allocations behind: {leftovers}"
    assert manager.check_consistency() == []


def alloc(saver, nbytes: int, fill: int) -> torch.Tensor:
    """A tensor allocated as sglang does it (call inside a region); lands in the manager."""
    t = torch.empty(nbytes, dtype=torch.uint8)
    assert saver.manager.owns(t.data_ptr()), "the CPU allocator hook did not route it"
    t.fill_(fill)
    return t


def state(saver, tag: str) -> tuple[int, int]:
    row = saver.manager.stats().get(tag, {"active_bytes": 0, "paused_bytes": 0})
    return row["active_bytes"], row["paused_bytes"]


def mapped(saver, tensor: torch.Tensor) -> bool:
    return tensor.data_ptr() in saver.manager.driver.mapped_ranges()


def test_adapter_sglang_creates_is_backed_by_npu_platform(ms) -> None:
    adapter, mod = ms.adapter, ms.adapter_module
    assert type(adapter).__name__ == "_TorchMemorySaverAdapterReal"
    assert adapter.enabled is True
    assert ms.memory_saver.adapter_backed_by_manager(adapter)
    assert mod._memory_saver is ms.saver
    assert mod.import_error is None
    import torch_memory_saver

    assert torch_memory_saver is ms.facade
    assert sys.modules["torch_memory_saver"] is ms.facade
    assert ms.saver.manager.driver.name == "host"
    status = ms.memory_saver.status()
    assert status.redirect_installed and status.adapter_backed_by_npu_platform
    with adapter.configure_subprocess():  # sglang wraps scheduler start-up in it
        pass


def test_region_pause_resume(ms) -> None:
    adapter, saver = ms.adapter, ms.saver
    with adapter.region(KV):
        kv = alloc(saver, 8 * MIB, 1)
    outside = torch.empty(2 * MIB, dtype=torch.uint8)
    assert not saver.manager.owns(outside.data_ptr()), "outside regions: ordinary memory"
    assert state(saver, KV) == (8 * MIB, 0)
    assert mapped(saver, kv)
    adapter.pause(KV)
    assert state(saver, KV) == (0, 8 * MIB)
    assert not mapped(saver, kv), "pause must give the physical memory back"
    adapter.resume(KV)
    assert state(saver, KV) == (8 * MIB, 0)
    assert mapped(saver, kv)
    kv.fill_(2)  # usable again
    assert int(kv.sum()) == 2 * 8 * MIB


def test_tag_selectivity(ms) -> None:
    adapter, saver = ms.adapter, ms.saver
    with adapter.region(WEIGHTS):
        w = alloc(saver, 2 * MIB, 3)
    with adapter.region(KV):
        kv = alloc(saver, 4 * MIB, 4)
    adapter.pause(KV)
    assert state(saver, KV) == (0, 4 * MIB)
    assert not mapped(saver, kv)
    assert state(saver, WEIGHTS) == (2 * MIB, 0)
    assert bool((w == 3).all()), "weights stay readable while kv_cache is paused"
    adapter.resume(KV)
    adapter.pause(WEIGHTS)
    assert state(saver, WEIGHTS) == (0, 2 * MIB)
    assert state(saver, KV) == (4 * MIB, 0)
    adapter.resume(WEIGHTS)


def test_pause_all_with_none(ms) -> None:
    adapter, saver = ms.adapter, ms.saver
    tensors = []
    for tag in (WEIGHTS, KV, GRAPH):
        with adapter.region(tag):
            tensors.append(alloc(saver, 2 * MIB, 5))
    adapter.pause(None)
    assert all(state(saver, tag) == (0, 2 * MIB) for tag in (WEIGHTS, KV, GRAPH))
    adapter.resume(None)
    assert all(state(saver, tag) == (2 * MIB, 0) for tag in (WEIGHTS, KV, GRAPH))


def test_pause_and_resume_are_idempotent(ms) -> None:
    adapter, saver = ms.adapter, ms.saver
    with adapter.region(KV):
        kv = alloc(saver, 2 * MIB, 6)
    adapter.resume(KV)  # resuming what is active: no-op
    adapter.pause(KV)
    adapter.pause(KV)  # upstream torch_memory_saver exits the process here
    assert state(saver, KV) == (0, 2 * MIB)
    adapter.resume(KV)
    adapter.resume(KV)
    assert state(saver, KV) == (2 * MIB, 0)
    assert mapped(saver, kv)
    assert saver.manager.check_consistency() == []


def test_cpu_backup_keeps_weights_and_kv_cache_is_fresh(ms) -> None:
    adapter, saver = ms.adapter, ms.saver
    with adapter.region(WEIGHTS, enable_cpu_backup=True):
        w = torch.empty(2 * MIB // 4, dtype=torch.float32)
    w.copy_(torch.arange(w.numel(), dtype=torch.float32))
    expected = w.clone()
    with adapter.region(KV):
        kv = alloc(saver, 2 * MIB, 7)
    adapter.pause(None)
    assert saver.manager.stats()[WEIGHTS]["backup_bytes"] >= 2 * MIB
    adapter.resume(None)
    assert torch.equal(w, expected), "weights with CPU backup survive pause/resume"
    assert not bool((kv == 7).all()), "kv_cache without backup gets fresh memory"


def test_addresses_preserved(ms) -> None:
    adapter, saver = ms.adapter, ms.saver
    with adapter.region(WEIGHTS, enable_cpu_backup=True):
        w = alloc(saver, 2 * MIB, 8)
    with adapter.region(KV):
        kv = alloc(saver, 4 * MIB, 9)
    before = (w.data_ptr(), kv.data_ptr())
    for _ in range(3):
        adapter.pause(KV)
        adapter.pause(WEIGHTS)
        adapter.resume(WEIGHTS)
        adapter.resume(KV)
    assert (w.data_ptr(), kv.data_ptr()) == before


def test_graph_capture_call_of_sglangs_npu_backend(ms) -> None:
    """sglang's NPU graph backend: partial(adapter.cuda_graph, tag=...)(graph, pool=...,
    stream=..., auto_dispatch_capture=True). Our hook makes that call work."""
    assert ms.memory_saver.patch_adapter() is True
    adapter, saver = ms.adapter, ms.saver
    graph_ctx = functools.partial(adapter.cuda_graph, tag=GRAPH)
    with graph_ctx(object(), pool=None, stream=None, auto_dispatch_capture=True):
        g = alloc(saver, 2 * MIB, 1)
    assert state(saver, GRAPH) == (2 * MIB, 0)
    adapter.pause(GRAPH)
    assert state(saver, GRAPH) == (0, 2 * MIB)
    adapter.resume(GRAPH)
    assert mapped(saver, g)
    assert ms.memory_saver.patch_adapter() is True  # idempotent


def test_staged_release_in_sglangs_order(ms) -> None:
    """What sglang's release/resume_memory_occupation (Engine and the HTTP endpoints) do
    to the adapter, stage by stage: release kv_cache, then weights (CPU backup), then
    cuda_graph; resume all in sglang's order (cuda_graph, weights, kv_cache).

    sglang's ``SchedulerWeightUpdaterManager`` itself cannot be imported in this
    environment (its imports reach torchvision, which is not installed), so the calls are
    made here with sglang's tag constants.
    """
    from sglang.srt.constants import (
        GPU_MEMORY_ALL_TYPES,
        GPU_MEMORY_TYPE_CUDA_GRAPH,
        GPU_MEMORY_TYPE_KV_CACHE,
        GPU_MEMORY_TYPE_WEIGHTS,
    )

    assert (GPU_MEMORY_TYPE_KV_CACHE, GPU_MEMORY_TYPE_WEIGHTS, GPU_MEMORY_TYPE_CUDA_GRAPH) == (
        KV,
        WEIGHTS,
        GRAPH,
    )
    assert set(GPU_MEMORY_ALL_TYPES) == {KV, WEIGHTS, GRAPH}
    adapter, saver = ms.adapter, ms.saver
    with adapter.region(WEIGHTS, enable_cpu_backup=True):
        w = torch.empty(4 * MIB // 4, dtype=torch.float32)
    w.copy_(torch.randn(w.numel()))
    expected = w.clone()
    with adapter.region(KV):
        kv = alloc(saver, 8 * MIB, 1)
    ms.memory_saver.patch_adapter()
    with functools.partial(adapter.cuda_graph, tag=GRAPH)(object(), auto_dispatch_capture=True):
        graph_mem = alloc(saver, 2 * MIB, 1)
    ptrs = (w.data_ptr(), kv.data_ptr(), graph_mem.data_ptr())

    adapter.pause(KV)
    assert state(saver, KV) == (0, 8 * MIB)
    assert state(saver, WEIGHTS) == (4 * MIB, 0)
    assert torch.equal(w, expected), "weights serve while only kv_cache is released"
    adapter.pause(WEIGHTS)
    assert state(saver, WEIGHTS) == (0, 4 * MIB)
    assert state(saver, GRAPH) == (2 * MIB, 0)
    adapter.pause(GRAPH)
    assert state(saver, GRAPH) == (0, 2 * MIB)
    assert saver.manager.driver.mapped_ranges().keys().isdisjoint(ptrs)

    for tag in (GRAPH, WEIGHTS, KV):
        adapter.resume(tag)
    assert all(state(saver, tag)[1] == 0 for tag in (KV, WEIGHTS, GRAPH))
    assert torch.equal(w, expected)
    assert (w.data_ptr(), kv.data_ptr(), graph_mem.data_ptr()) == ptrs


# ------------------------------------------------------------------ server arguments


def test_server_arg_defaults_and_checks(ms, caplog: pytest.LogCaptureFixture) -> None:
    from npu_platform.sglang.server_args import UnsupportedSetting, apply_defaults

    cfg = types.SimpleNamespace(device=None, enable_memory_saver=True)
    apply_defaults(cfg, environ={})
    assert cfg.device == "npu"

    preload = {"LD_PRELOAD": "/opt/x/torch_memory_saver_hook_mode_preload.abi3.so"}
    with pytest.raises(UnsupportedSetting, match="preload"):
        apply_defaults(types.SimpleNamespace(device="npu", enable_memory_saver=True), preload)
    # Without the memory saver the preloaded library is none of our business.
    apply_defaults(types.SimpleNamespace(device="npu", enable_memory_saver=False), preload)

    with caplog.at_level("WARNING", logger="npu_platform.sglang"):
        apply_defaults(
            types.SimpleNamespace(
                device="npu", enable_memory_saver=False, enable_weights_cpu_backup=True
            ),
            {},
        )
    assert "--enable-weights-cpu-backup has no effect" in caplog.text

    # The facade refuses preload mode itself; "torch" (what sglang sets on XPU) is fine.
    from npu_platform.memory.errors import NotSupported

    with pytest.raises(NotSupported, match="preload"):
        ms.saver.hook_mode = "preload"
    ms.saver.hook_mode = "torch"


def test_server_args_refuse_a_foreign_memory_saver(monkeypatch: pytest.MonkeyPatch) -> None:
    """Where the redirect is not in force, --enable-memory-saver names the culprit."""
    from npu_platform.detect import detect
    from npu_platform.sglang.server_args import UnsupportedSetting, check_memory_saver

    monkeypatch.delenv("NPU_PLATFORM_EMULATE", raising=False)
    detect(refresh=True)
    try:
        cuda = types.ModuleType("torch_memory_saver")
        cuda.__file__ = "/site-packages/torch_memory_saver/__init__.py"
        monkeypatch.setitem(sys.modules, "torch_memory_saver", cuda)
        with pytest.raises(UnsupportedSetting, match="site-packages/torch_memory_saver"):
            check_memory_saver({})
    finally:
        monkeypatch.undo()
        detect(refresh=True)


def test_record_foreign_defaults_with_real_server_args(ms) -> None:
    from sglang.srt.arg_groups.overrides import record_foreign_defaults, resolving_view
    from sglang.srt.server_args import ServerArgs

    from npu_platform.sglang.platform import NPUPlatform

    args = ServerArgs(model_path="dummy", enable_memory_saver=True)
    record_foreign_defaults(args, "platform:npu", NPUPlatform().apply_server_args_defaults)
    assert resolving_view(args).device == "npu"


def test_emulated_npu_keeps_sglangs_platform(ms) -> None:
    from npu_platform.entry_points import sglang as ep

    assert ep.platform_plugin() is None  # the platform is for real NPUs only
    assert ms.memory_saver.installed()
