"""The memory manager on a real Ascend NPU: the ACL driver, torch tensors on ``npu``.

As ``tests/test_memory_torch.py`` does on the emulated NPU, through the facade
(:class:`npu_platform.torch_memory_saver.TorchMemorySaver`) with its hardware route (the ACL
driver over CANN's ``libascendcl.so``; torch allocations through ``NPUPluggableAllocator`` +
``torch.npu.MemPool`` and the C shim):

* tensors made inside a region are the manager's, others are not;
* pausing returns the region's device memory to the device, by the device's own count
  (``torch.npu.mem_get_info``), and resuming takes it again;
* after resume the tensors keep their addresses and are writable; a region with CPU backup
  gets its contents back (and :meth:`get_cpu_backup` shows them while paused); ordinary
  ``npu`` memory is untouched.

Needs a real NPU (``npu`` marker, skipped elsewhere). torch is imported in the tests only, so
collecting this file elsewhere costs nothing.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

pytestmark = pytest.mark.npu

MIB = 1 << 20


def _free_bytes() -> int:
    import torch

    torch.npu.synchronize()
    return torch.npu.mem_get_info()[0]


@pytest.fixture(scope="module")
def saver() -> Iterator[object]:
    import torch
    import torch_npu  # noqa: F401  (loaded by torch's autoload already; explicit here)

    from npu_platform.memory.torch_route import PoolRoute
    from npu_platform.torch_memory_saver import TorchMemorySaver

    assert torch.npu.is_available()
    facade = TorchMemorySaver()
    assert facade.driver.name == "acl", facade.driver.name
    assert isinstance(facade._route, PoolRoute) and facade._route.kind == "npu"
    yield facade
    gc.collect()
    assert facade.manager.check_consistency() == []


def _owned(saver, tensor) -> bool:
    return saver.manager.owns(tensor.data_ptr())


def test_pause_returns_device_memory_and_resume_keeps_addresses(saver):
    import torch

    from npu_platform.memory.manager import State

    with saver.region("hw_kv_cache"):
        a = torch.empty(256 * MIB, dtype=torch.uint8, device="npu")
        b = torch.zeros(16 * MIB, dtype=torch.float32, device="npu")  # 64 MiB
        c = b + 1  # op outputs too
    outside = torch.ones(MIB, dtype=torch.float32, device="npu")
    assert all(t.device.type == "npu" for t in (a, b, c, outside))
    assert all(_owned(saver, t) for t in (a, b, c))
    assert not _owned(saver, outside)
    a.fill_(1)
    ptrs = [t.data_ptr() for t in (a, b, c)]
    tagged = saver.manager.stats()["hw_kv_cache"]["active_bytes"]
    assert tagged >= (256 + 64 + 64) * MIB

    held = _free_bytes()
    saver.pause("hw_kv_cache")
    paused = _free_bytes()
    states = {i.state for i in saver.manager.allocations() if i.tag == "hw_kv_cache"}
    assert states == {State.PAUSED}
    report = f"free {held / MIB:.1f} MiB -> paused {paused / MIB:.1f} MiB"
    assert paused - held >= 0.99 * tagged, (report, tagged)

    saver.resume("hw_kv_cache")
    resumed = _free_bytes()
    report += f" -> resumed {resumed / MIB:.1f} MiB"
    assert paused - resumed >= 0.99 * tagged, (report, tagged)
    assert [t.data_ptr() for t in (a, b, c)] == ptrs
    for t, value in ((a, 3), (b, 2.0), (c, 5.0)):  # writable again at the same addresses
        t.fill_(value)
    assert bool((a == 3).all()) and bool((b == 2).all()) and bool((c == 5).all())
    assert float(outside.sum()) == MIB, "ordinary npu memory is untouched"
    del a, b, c, outside


def test_cpu_backup_restores_contents(saver):
    import torch

    with saver.region("hw_weights", enable_cpu_backup=True):
        w = torch.randn(1024, 1024, device="npu")
    with saver.region("hw_scratch"):
        k = torch.full((4 * MIB,), 7, dtype=torch.uint8, device="npu")
    expected = w.cpu()
    ordinary = w.clone()
    assert not _owned(saver, ordinary)
    ptrs = (w.data_ptr(), k.data_ptr())

    saver.pause("hw_weights")
    saver.pause("hw_scratch")
    backup = saver.get_cpu_backup(w)
    assert backup is not None and backup.device.type == "cpu"
    assert torch.equal(backup, expected)
    saver.resume("hw_weights")
    saver.resume("hw_scratch")

    assert (w.data_ptr(), k.data_ptr()) == ptrs
    assert torch.equal(w.cpu(), expected), "backed-up weights survive pause/resume"
    assert torch.equal(ordinary.cpu(), expected), "ordinary npu memory is untouched"
    k.fill_(9)  # no backup: contents undefined after resume, but the memory is usable
    assert int(k.min()) == int(k.max()) == 9
    info = saver.manager.info(w.data_ptr())
    assert (info.tag, info.enable_cpu_backup) == ("hw_weights", True)
    del w, k, ordinary
