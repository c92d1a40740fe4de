"""sglang's own memory-saver adapter on npu_platform's manager, on the emulated NPU.

The adapter is the one sglang creates (``TorchMemorySaverAdapter.create(enable=True)`` from
the unmodified ``sglang.srt.utils.torch_memory_saver_adapter``); behind it is
npu_platform's ``torch_memory_saver`` singleton, on the hardware path as on Ascend: the ACL
driver over the emulated ``libascendcl.so`` and the pool route (``NPUPluggableAllocator`` +
``torch.npu.MemPool``). Tensors are allocated the way sglang's weight loader and KV pools do
it, with plain ``torch.empty(..., device="npu")`` inside the adapter's regions, and the
graph memory the way sglang's NPU graph backend captures it. Device memory is measured
through ``aclrtGetMemInfo``, above each test's baseline (ordinary ``npu`` tensors are not
ACL physical memory in the emulation, so the figure is the manager's alone); whether a
tensor's range is mapped is asked of the ACL runtime itself (``aclrtMemcpy`` refuses
unmapped device memory). Sizes are small multiples of the 2 MiB granularity.
"""

from __future__ import annotations

import ctypes
import functools
import gc
import sys
import types
from collections.abc import Iterator

import pytest

from tests.conftest import load_emulated_torch_npu

torch = pytest.importorskip("torch")

KV, WEIGHTS, GRAPH = "kv_cache", "weights", "cuda_graph"
MIB = 1 << 20


@pytest.fixture(scope="module")
def env() -> Iterator[types.SimpleNamespace]:
    from npu_platform import device
    from npu_platform import torch_memory_saver as facade
    from npu_platform.detect import detect
    from npu_platform.sglang import memory_saver

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("NPU_PLATFORM_EMULATE", "1")
        mp.delenv("LD_PRELOAD", raising=False)
        load_emulated_torch_npu()
        detect(refresh=True)
        device.reset_backend()
        # A singleton of its own for this module: earlier tests in the session may have
        # initialised the process's one on another driver, or left allocations in it.
        mp.setattr(facade, "torch_memory_saver", facade.TorchMemorySaver())
        assert memory_saver.install() is True
        import sglang.srt.utils.torch_memory_saver_adapter as adapter_module

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
    assert env.saver.manager.allocations() == []
    # Whatever else in this process holds, once garbage of earlier tests is gone (the
    # device's own allocator and the manager share one memory count, as on HBM).
    gc.collect()
    env.baseline = device_used(env.saver)
    yield env
    gc.collect()
    manager = env.saver.manager
    leftovers = manager.allocations()
    manager.resume(None)
    assert leftovers == [], f"test left allocations behind: {leftovers}"
    assert manager.check_consistency() == []
    assert device_used(env.saver) == env.baseline, "the manager's physical memory went back"


def alloc(saver, nbytes: int, fill: int) -> torch.Tensor:
    """A tensor allocated as sglang does it (call inside a region); lands in the manager."""
    t = torch.empty(nbytes, dtype=torch.uint8, device="npu")
    assert t.device.type == "npu"
    assert saver.manager.owns(t.data_ptr()), "the pool route did not take it to the manager"
    t.fill_(fill)
    return t


def state(saver, tag: str) -> tuple[int, int]:
    row = saver.manager.stats().get(tag, {"active_bytes": 0, "paused_bytes": 0})
    return row["active_bytes"], row["paused_bytes"]


def device_used(saver) -> int:
    """ACL physical memory in use on device 0, from ``aclrtGetMemInfo`` (total - free)."""
    free, total = saver.manager.driver.mem_info(0)
    return total - free


def used(ms) -> int:
    """Device memory this test holds: :func:`device_used` above the test's baseline."""
    return device_used(ms.saver) - ms.baseline


def mapped(saver, tensor: torch.Tensor) -> bool:
    """The ACL runtime has device memory mapped under every byte of ``tensor``: a
    device-to-host ``aclrtMemcpy`` of the whole range, which the runtime refuses otherwise."""
    from npu_platform.memory.driver import DriverError

    nbytes = tensor.numel() * tensor.element_size()
    host = ctypes.create_string_buffer(nbytes)
    try:
        saver.manager.driver.copy_to_host(ctypes.addressof(host), tensor.data_ptr(), nbytes)
    except DriverError:
        return False
    return True


def test_adapter_sglang_creates_is_backed_by_npu_platform(ms) -> None:
    from npu_platform.memory.torch_route import PoolRoute

    adapter, mod = ms.adapter, ms.adapter_module
    assert type(adapter).__name__ == "_TorchMemorySaverAdapterReal"
    assert adapter.enabled is True
    assert ms.memory_saver.adapter_backed_by_manager(adapter)
    assert mod._memory_saver is ms.saver
    assert mod.import_error is None
    import torch_memory_saver

    assert torch_memory_saver is ms.facade
    assert sys.modules["torch_memory_saver"] is ms.facade
    assert ms.saver.manager.driver.name == "acl"
    assert isinstance(ms.saver._route, PoolRoute) and ms.saver._route.kind == "npu"
    status = ms.memory_saver.status()
    assert status.redirect_installed and status.adapter_backed_by_npu_platform
    with adapter.configure_subprocess():  # sglang wraps scheduler start-up in it
        pass


def test_region_pause_resume(ms) -> None:
    adapter, saver = ms.adapter, ms.saver
    with adapter.region(KV):
        kv = alloc(saver, 8 * MIB, 1)
    outside = torch.empty(2 * MIB, dtype=torch.uint8, device="npu")
    assert not saver.manager.owns(outside.data_ptr()), "outside regions: ordinary memory"
    # Device memory in use counts the ordinary tensor too (one budget, as on the device).
    assert state(saver, KV) == (8 * MIB, 0)
    assert used(ms) == 8 * MIB + 2 * MIB
    assert mapped(saver, kv)
    adapter.pause(KV)
    assert state(saver, KV) == (0, 8 * MIB)
    assert used(ms) == 2 * MIB, "pause must give the region's physical memory back"
    assert not mapped(saver, kv)
    adapter.resume(KV)
    assert state(saver, KV) == (8 * MIB, 0)
    assert used(ms) == 8 * MIB + 2 * MIB
    assert mapped(saver, kv)
    kv.fill_(2)  # usable again
    assert int(kv.sum()) == 2 * 8 * MIB
    outside.fill_(1)  # ordinary npu memory was never touched
    assert int(outside.sum()) == 2 * MIB


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
    assert used(ms) == 2 * MIB
    assert mapped(saver, w)
    assert bool((w == 3).all()), "weights stay readable while kv_cache is paused"
    adapter.resume(KV)
    adapter.pause(WEIGHTS)
    assert state(saver, WEIGHTS) == (0, 2 * MIB)
    assert state(saver, KV) == (4 * MIB, 0)
    assert used(ms) == 4 * MIB
    assert not mapped(saver, w) and mapped(saver, kv)
    adapter.resume(WEIGHTS)


def test_pause_all_with_none(ms) -> None:
    adapter, saver = ms.adapter, ms.saver
    tensors = []
    for tag in (WEIGHTS, KV, GRAPH):
        with adapter.region(tag):
            tensors.append(alloc(saver, 2 * MIB, 5))
    assert used(ms) == 6 * MIB
    adapter.pause(None)
    assert all(state(saver, tag) == (0, 2 * MIB) for tag in (WEIGHTS, KV, GRAPH))
    assert used(ms) == 0
    assert not any(mapped(saver, t) for t in tensors)
    adapter.resume(None)
    assert all(state(saver, tag) == (2 * MIB, 0) for tag in (WEIGHTS, KV, GRAPH))
    assert used(ms) == 6 * MIB
    assert all(mapped(saver, t) for t in tensors)


def test_pause_and_resume_are_idempotent(ms) -> None:
    adapter, saver = ms.adapter, ms.saver
    with adapter.region(KV):
        kv = alloc(saver, 2 * MIB, 6)
    adapter.resume(KV)  # resuming what is active: no-op
    assert used(ms) == 2 * MIB
    adapter.pause(KV)
    adapter.pause(KV)  # upstream torch_memory_saver exits the process here
    assert state(saver, KV) == (0, 2 * MIB)
    assert used(ms) == 0
    adapter.resume(KV)
    adapter.resume(KV)
    assert state(saver, KV) == (2 * MIB, 0)
    assert used(ms) == 2 * MIB, "resumed once, not twice"
    assert mapped(saver, kv)
    assert saver.manager.check_consistency() == []


def test_cpu_backup_keeps_weights_and_kv_cache_is_fresh(ms) -> None:
    adapter, saver = ms.adapter, ms.saver
    with adapter.region(WEIGHTS, enable_cpu_backup=True):
        w = torch.empty(2 * MIB // 4, dtype=torch.float32, device="npu")
    assert saver.manager.owns(w.data_ptr())
    w.copy_(torch.arange(w.numel(), dtype=torch.float32))
    expected = w.cpu()
    with adapter.region(KV):
        kv = alloc(saver, 2 * MIB, 7)
    adapter.pause(None)
    assert saver.manager.stats()[WEIGHTS]["backup_bytes"] >= 2 * MIB
    assert used(ms) == 0, "the backup is host memory, not device memory"
    adapter.resume(None)
    assert torch.equal(w.cpu(), expected), "weights with CPU backup survive pause/resume"
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
        assert used(ms) == 0
        adapter.resume(WEIGHTS)
        adapter.resume(KV)
    assert (w.data_ptr(), kv.data_ptr()) == before
    assert mapped(saver, w) and mapped(saver, kv)
    assert bool((w == 8).all()), "backed-up contents at the same address"


def _capture(adapter, graph, static_in: torch.Tensor) -> torch.Tensor:
    """Capture as sglang's NPU graph backend does (``NPUCudaGraphBackend.capture``):
    ``partial(adapter.cuda_graph, tag=...)(graph, pool=..., stream=...,
    auto_dispatch_capture=True)``, the graph positional and sglang's own graph pool."""
    graph_ctx = functools.partial(adapter.cuda_graph, tag=GRAPH)
    pool = torch.npu.graph_pool_handle()
    stream = torch.npu.Stream()
    with graph_ctx(graph, pool=pool, stream=stream, auto_dispatch_capture=True):
        assert torch.npu.is_current_stream_capturing()
        out = static_in * 2  # one 2 MiB output: what the graph allocates
    assert not torch.npu.is_current_stream_capturing()
    return out


def test_graph_capture_call_of_sglangs_npu_backend(ms) -> None:
    """sglang's NPU graph backend passes the graph positionally, which sglang's adapter
    (keywords only) cannot take; our hook makes that call work, and the captured graph's
    memory is tagged and pausable."""
    assert ms.memory_saver.patch_adapter() is True
    adapter, saver = ms.adapter, ms.saver
    graph = torch.npu.NPUGraph()
    static_in = torch.ones(MIB // 2, dtype=torch.float32, device="npu")  # 2 MiB
    out = _capture(adapter, graph, static_in)
    assert saver.manager.info(out.data_ptr()).tag == GRAPH
    assert not saver.manager.owns(static_in.data_ptr()), "made outside: ordinary memory"
    assert state(saver, GRAPH) == (2 * MIB, 0)
    assert used(ms) == 2 * MIB + 2 * MIB  # the graph's output and the ordinary input
    ptr = out.data_ptr()
    adapter.pause(GRAPH)
    assert state(saver, GRAPH) == (0, 2 * MIB)
    assert used(ms) == 2 * MIB
    assert not mapped(saver, out)
    adapter.resume(GRAPH)
    assert out.data_ptr() == ptr and mapped(saver, out)
    static_in.fill_(3)
    graph.replay()  # the graph writes into the resumed memory at the same address
    assert bool((out == 6).all())
    assert ms.memory_saver.patch_adapter() is True  # idempotent
    del graph, out


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
        w = torch.empty(4 * MIB // 4, dtype=torch.float32, device="npu")
    w.copy_(torch.randn(w.numel()))
    expected = w.cpu()
    with adapter.region(KV):
        kv = alloc(saver, 8 * MIB, 1)
    ms.memory_saver.patch_adapter()
    graph = torch.npu.NPUGraph()
    static_in = torch.ones(MIB // 2, dtype=torch.float32, device="npu")
    graph_mem = _capture(adapter, graph, static_in)  # 2 MiB
    tensors = (w, kv, graph_mem)
    ptrs = tuple(t.data_ptr() for t in tensors)
    ordinary = 2 * MIB  # static_in: device memory outside every region
    assert used(ms) == 14 * MIB + ordinary

    adapter.pause(KV)
    assert state(saver, KV) == (0, 8 * MIB)
    assert state(saver, WEIGHTS) == (4 * MIB, 0)
    assert used(ms) == 6 * MIB + ordinary
    assert torch.equal(w.cpu(), expected), "weights serve while only kv_cache is released"
    adapter.pause(WEIGHTS)
    assert state(saver, WEIGHTS) == (0, 4 * MIB)
    assert state(saver, GRAPH) == (2 * MIB, 0)
    assert used(ms) == 2 * MIB + ordinary
    adapter.pause(GRAPH)
    assert state(saver, GRAPH) == (0, 2 * MIB)
    assert used(ms) == ordinary
    assert not any(mapped(saver, t) for t in tensors)

    for tag in (GRAPH, WEIGHTS, KV):
        adapter.resume(tag)
    assert all(state(saver, tag)[1] == 0 for tag in (KV, WEIGHTS, GRAPH))
    assert used(ms) == 14 * MIB + ordinary
    assert torch.equal(w.cpu(), expected)
    assert tuple(t.data_ptr() for t in tensors) == ptrs
    assert all(mapped(saver, t) for t in tensors)
    del graph, graph_mem


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
