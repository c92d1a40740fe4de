"""The host driver, and the manager on it with real torch tensors and real RSS."""

from __future__ import annotations

import ctypes
import gc
import logging
import os
import threading

import pytest
import torch

from npu_platform.memory import tensors
from npu_platform.memory.driver import Driver, DriverError, OutOfDeviceMemory
from npu_platform.memory.drivers import default_driver_name, load_driver
from npu_platform.memory.drivers.host import HostDriver
from npu_platform.memory.errors import NoCpuBackup, UnknownAllocation
from npu_platform.memory.manager import MemoryManager, State
from tests.memory_scenarios import InstrumentedDriver, capture_logs

GIB = 1 << 30
MIB = 1 << 20
KIB = 1 << 10


def status_kib(field: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise AssertionError(f"{field} missing from /proc/self/status")


def rss() -> int:
    return status_kib("VmRSS") * KIB


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def map_count(needle: str = "") -> int:
    """Lines of /proc/self/maps (containing ``needle``)."""
    with open("/proc/self/maps") as fh:
        return sum(1 for line in fh if needle in line)


# -- the driver on its own ------------------------------------------------------------------


def test_host_driver_implements_the_protocol() -> None:
    drv = HostDriver()
    assert isinstance(drv, Driver)
    assert drv.name == "host" and drv.granularity(0) == 2 * MIB
    assert isinstance(load_driver("host"), HostDriver)
    with pytest.raises(ValueError, match="unknown memory driver"):
        load_driver("nope")


def test_default_driver_on_an_npu_is_acl(monkeypatch: pytest.MonkeyPatch) -> None:
    """On an NPU (the emulated one included) the manager runs the ACL driver; on the
    emulated NPU libascendcl is the emulation's."""
    from npu_platform import detect

    monkeypatch.setenv("NPU_PLATFORM_EMULATE", "1")
    detect.detect(refresh=True)
    try:
        assert default_driver_name() == "acl"
    finally:
        monkeypatch.delenv("NPU_PLATFORM_EMULATE")
        detect.detect(refresh=True)


def test_life_cycle_and_rss() -> None:
    drv = HostDriver()
    size = 64 * MIB
    va = drv.reserve(size, 0)
    assert va % (2 * MIB) == 0
    handle = drv.create(size, 0)
    before = rss()
    drv.map(va, size, handle, 0)
    assert rss() - before > 0.95 * size, "populated mapping shows in RSS"
    ctypes.memset(va, 0x5A, size)
    assert ctypes.string_at(va + size - 4, 4) == b"\x5a" * 4
    mapped = rss()
    drv.unmap(va, size)
    drv.free(handle)
    assert mapped - rss() > 0.95 * size, "unmap + free gives the memory back"
    assert drv.used_bytes == 0
    assert drv.reserved_ranges() == {va: size}, "the range stays reserved"
    drv.release(va, size)
    assert drv.reserved_ranges() == {}


def test_misuse_is_reported() -> None:
    drv = HostDriver(granularity=64 * KIB)
    g = drv.granularity(0)
    va = drv.reserve(2 * g, 0)
    h = drv.create(g, 0)
    with pytest.raises(DriverError, match="outside any reserved range"):
        drv.map(va + 4 * g, g, h, 0)
    with pytest.raises(DriverError, match="multiples of the granularity"):
        drv.create(g + 1, 0)
    drv.map(va, g, h, 0)
    with pytest.raises(DriverError, match="overlaps"):
        drv.map(va, g, drv.create(g, 0), 0)
    with pytest.raises(DriverError, match="still mapped"):
        drv.free(h)
    with pytest.raises(DriverError, match="still mapped"):
        drv.release(va, 2 * g)
    with pytest.raises(DriverError, match="not mapped"):
        drv.unmap(va + g, g)
    drv.unmap(va, g)
    drv.free(h)
    with pytest.raises(DriverError, match="already freed"):
        drv.free(h)
    drv.release(va, 2 * g)
    with pytest.raises(DriverError, match="not reserved"):
        drv.release(va, 2 * g)
    ptr, buf = drv.host_alloc(100)
    drv.host_free(buf)
    with pytest.raises(DriverError, match="twice"):
        drv.host_free(buf)


def test_errno_text_in_driver_errors() -> None:
    drv = HostDriver()
    with pytest.raises(DriverError, match="ENOMEM") as info:
        drv.reserve(1 << 62, 0)  # more address space than exists
    assert info.value.code == 12


def test_limit_and_mem_info() -> None:
    drv = HostDriver(granularity=64 * KIB, limit_bytes=256 * KIB)
    assert drv.mem_info(0) == (256 * KIB, 256 * KIB)
    handles = [drv.create(64 * KIB, 0) for _ in range(3)]
    assert drv.mem_info(0) == (64 * KIB, 256 * KIB)
    with pytest.raises(OutOfDeviceMemory, match="64 KiB|65536"):
        drv.create(128 * KIB, 0)
    drv.limit_bytes = None
    free, total = drv.mem_info(0)
    assert 0 < free <= total
    for h in handles:
        drv.free(h)
    assert drv.used_bytes == 0


# -- the manager with torch tensors ---------------------------------------------------------


def test_one_gib_region_tensor_is_released_and_retaken() -> None:
    """torch_memory_saver's `simple` example, measured with RSS."""
    mgr = MemoryManager(HostDriver())
    with mgr.region():
        x = tensors.empty(mgr, (GIB,), torch.uint8)
    with mgr.region("small"):
        normal = tensors.empty(mgr, (1000,), torch.int32)
    x.fill_(100)
    normal.fill_(7)
    ptr = x.data_ptr()
    before = rss()
    mgr.pause("default")
    paused = rss()
    assert before - paused > 0.99 * GIB, f"released {(before - paused) / GIB:.3f} GiB"
    assert int(normal.sum()) == 7000, "other tags stay readable"
    mgr.resume("default")
    resumed = rss()
    assert resumed - paused > 0.99 * GIB, f"re-took {(resumed - paused) / GIB:.3f} GiB"
    assert x.data_ptr() == ptr
    assert int(x[::4096].sum()) == 0, "no backup: fresh (zeroed) memory"
    x.fill_(3)
    assert int(x[-1]) == 3
    del x
    gc.collect()
    assert [info.tag for info in mgr.allocations()] == ["small"], "freed with the tensor"
    del normal
    gc.collect()
    assert len(mgr) == 0


def test_cpu_backup_example_with_tensors() -> None:
    """torch_memory_saver's `cpu_backup` example: backed-up tensors survive, others do not."""
    mgr = MemoryManager(HostDriver(granularity=64 * KIB))
    with mgr.region("w", enable_cpu_backup=True):
        kept = tensors.empty(mgr, (64, 33), torch.float32)
        kept_bf = tensors.empty(mgr, (1000,), torch.bfloat16)
    with mgr.region("w"):
        lost = tensors.empty(mgr, (64, 33), torch.float32)
    kept.copy_(torch.arange(64 * 33, dtype=torch.float32).view(64, 33))
    kept_bf.fill_(1.5)
    lost.fill_(9)
    expected = kept.clone()
    assert mgr.get_cpu_backup(kept) is None, "active, nothing retained"
    mgr.pause("w")
    backup = mgr.get_cpu_backup(kept)
    assert backup is not None
    assert backup.dtype == torch.float32 and backup.shape == (64, 33)
    assert torch.equal(backup, expected)
    assert backup.data_ptr() != kept.data_ptr()
    view = mgr.get_cpu_backup(kept_bf, zero_copy=True)
    assert view is not None and view.dtype == torch.bfloat16 and bool((view == 1.5).all())
    with pytest.raises(NoCpuBackup):
        mgr.get_cpu_backup(lost)
    raw = mgr.get_cpu_backup(kept.data_ptr() + 4, nbytes=8)
    assert raw is not None and torch.equal(raw.view(torch.float32), expected.view(-1)[1:3])
    mgr.resume("w")
    assert torch.equal(kept, expected)
    assert bool((kept_bf == 1.5).all())
    assert not bool((lost == 9).any()), "no backup: contents gone"
    # The zero-copy view kept its buffer alive past resume.
    assert bool((view == 1.5).all())
    assert mgr.get_cpu_backup(kept_bf) is None
    host_before = mgr.driver.host_bytes  # type: ignore[attr-defined]
    del view
    gc.collect()
    assert mgr.driver.host_bytes < host_before, "buffer freed with its last view"  # type: ignore[attr-defined]
    with pytest.raises(ValueError, match="contiguous"):
        mgr.get_cpu_backup(kept.t())
    with pytest.raises(UnknownAllocation):
        mgr.get_cpu_backup(torch.zeros(4))
    del kept, kept_bf, lost, backup, raw
    gc.collect()
    assert len(mgr) == 0 and mgr.driver.host_bytes == 0  # type: ignore[attr-defined]


def test_weights_and_kv_cache_rl_flow() -> None:
    """torch_memory_saver's `rl_example`: addresses unchanged; kv_cache paused alone."""
    mgr = MemoryManager(HostDriver(granularity=64 * KIB))
    with mgr.region("weights", enable_cpu_backup=True):
        weights = tensors.empty(mgr, (256, 256), torch.float16)
    with mgr.region("kv_cache"):
        kv = tensors.empty(mgr, (4, 128, 64), torch.float32)
    weights.normal_()
    ref = weights.clone()
    ptrs = (weights.data_ptr(), kv.data_ptr())
    for _ in range(3):
        kv.fill_(1)
        mgr.pause("kv_cache")
        assert torch.equal(weights @ weights.t(), ref @ ref.t()), "weights stay usable"
        mgr.pause("weights")
        mgr.resume("weights")
        mgr.resume("kv_cache")
        assert (weights.data_ptr(), kv.data_ptr()) == ptrs
        assert torch.equal(weights, ref)
        assert float(kv.abs().sum()) == 0.0


def test_tensor_helper_basics() -> None:
    mgr = MemoryManager(HostDriver(granularity=64 * KIB))
    with mgr.region("t"):
        t = tensors.empty(mgr, (3, 5), torch.int64)
        z = tensors.empty(mgr, (0, 5))
    assert t.shape == (3, 5) and t.dtype == torch.int64 and z.numel() == 0
    assert mgr.owns(t.data_ptr()) and mgr.info(t.data_ptr()).tag == "t"
    view = t[1:]
    del t
    gc.collect()
    assert len(mgr) == 1, "a view keeps the memory"
    del view
    gc.collect()
    assert len(mgr) == 0
    raw = tensors.tensor_at(mgr.malloc(10, tag="r"), 10)
    assert raw.shape == (10,) and raw.dtype == torch.uint8
    mgr.free(raw.data_ptr())


def test_disable_routes_to_ordinary_memory() -> None:
    mgr = MemoryManager(HostDriver(granularity=64 * KIB))
    seen: list[tuple[str, bool, bool]] = []
    mgr.add_region_listener(lambda s: seen.append(tuple(s)))
    with mgr.region("kv"), mgr.disable():
        assert not mgr.intercepting()
    assert seen == [("kv", False, True), ("kv", False, False), ("kv", False, True)] + [
        ("default", False, False)
    ]


def test_thread_safety_with_tensors() -> None:
    """Allocate/free/compute on one thread while another pauses and resumes in a loop."""
    mgr = MemoryManager(HostDriver(granularity=64 * KIB))
    with mgr.region("b", enable_cpu_backup=True):
        fixed = tensors.empty(mgr, (4096,), torch.float32)
    fixed.copy_(torch.arange(4096, dtype=torch.float32))
    stop = threading.Event()
    errors: list[BaseException] = []
    cycles = [0]

    def worker() -> None:
        try:
            for i in range(300):
                with mgr.region("a"):
                    t = tensors.empty(mgr, (1024,), torch.float64)
                t.fill_(i)
                assert float(t.sum()) == 1024.0 * i
                with mgr.region("b"):
                    u = tensors.empty(mgr, (10,), torch.float32)
                del t, u  # freed while "b" may be paused
        except BaseException as exc:
            errors.append(exc)
        finally:
            stop.set()

    def pauser() -> None:
        try:
            while not stop.is_set():
                mgr.pause("b")
                mgr.resume("b")
                cycles[0] += 1
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker), threading.Thread(target=pauser)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    assert cycles[0] > 0
    gc.collect()
    assert not mgr.check_consistency()
    assert len(mgr) == 1 and mgr.info(fixed.data_ptr()).state is State.ACTIVE
    assert torch.equal(fixed, torch.arange(4096, dtype=torch.float32))


def test_thousand_cycles_do_not_leak() -> None:
    drv = InstrumentedDriver(HostDriver(granularity=64 * KIB))
    mgr = MemoryManager(drv)  # type: ignore[arg-type]
    with mgr.region("w", enable_cpu_backup=True):
        w = [tensors.empty(mgr, (64 * KIB // 4,), torch.float32) for _ in range(3)]
    with mgr.region("kv"):
        kv = tensors.empty(mgr, (128 * KIB,), torch.uint8)
    for i, t in enumerate(w):
        t.fill_(i + 1)
    kv.fill_(1)

    def cycle(n: int) -> None:
        for _ in range(n):
            mgr.pause()
            mgr.resume()

    def snapshot() -> tuple[int, int, int, int]:
        gc.collect()
        return rss(), open_fds(), map_count(), map_count("memfd:npu_platform")

    cycle(20)  # warm up: interpreter caches, allocator arenas
    start = snapshot()
    samples = []
    for _ in range(4):
        cycle(250)
        samples.append(snapshot())
    end = samples[-1]
    assert all(s[1] == start[1] for s in samples), f"file descriptors {start[1]} -> {samples}"
    assert all(s[3] == start[3] == 4 for s in samples), "one memfd mapping per allocation"
    # Reserved ranges: the driver's own books, and the process's mappings (small jitter
    # from VMA merging next to the malloc arenas is allowed; a leak would add 1000s).
    assert len(drv.inner.reserved_ranges()) == 4  # type: ignore[attr-defined]
    assert max(s[2] for s in samples) - start[2] <= 4, f"mappings {start[2]} -> {samples}"
    assert end[0] - start[0] < 8 * MIB, f"RSS grew by {(end[0] - start[0]) / MIB:.1f} MiB"
    assert [float(t[0]) for t in w] == [1.0, 2.0, 3.0]
    assert drv.calls["create"] == 1020 * 4 + 4
    assert len(drv.live_handles) == 4 and not drv.live_host
    del w, kv, t
    gc.collect()
    assert not drv.balanced()


def test_manager_logs_to_npu_platform_memory(caplog: pytest.LogCaptureFixture) -> None:
    mgr = MemoryManager(HostDriver(granularity=64 * KIB))
    with mgr.region("x"):
        t = tensors.empty(mgr, (10,))
    mgr.pause("x")
    with caplog.at_level(logging.INFO, logger="npu_platform.memory"):
        mgr.pause("x")
        mgr.resume("x")
        mgr.resume("x")
    messages = [r.getMessage() for r in caplog.records if r.name == "npu_platform.memory"]
    assert any("pause(tag='x') is a no-op" in m for m in messages), messages
    assert any("resume(tag='x') is a no-op" in m for m in messages), messages
    del t
    with capture_logs():
        gc.collect()


def test_copies_of_unmapped_memory_raise_instead_of_crashing() -> None:
    drv = HostDriver(granularity=64 * KIB)
    mgr = MemoryManager(drv)
    va = mgr.malloc(100, tag="x")
    buf = ctypes.create_string_buffer(100)
    drv.copy_to_host(ctypes.addressof(buf), va, 100)
    mgr.pause("x")
    with pytest.raises(DriverError, match="not \\(entirely\\) mapped"):
        drv.copy_to_host(ctypes.addressof(buf), va, 100)
    with pytest.raises(DriverError, match="copy_from_host"):
        drv.copy_from_host(va, ctypes.addressof(buf), 100)
    mgr.resume("x")
    with pytest.raises(DriverError):
        drv.copy_to_host(ctypes.addressof(buf), va + 64 * KIB - 10, 20)
    mgr.free(va)
