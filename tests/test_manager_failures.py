"""MemoryManager on the host driver when the driver fails, when it is misused and when its
records are corrupted: every failure is an exception that names what went wrong, and what
could not be released is reported (and really left behind) rather than silently dropped.

Failures are injected with :class:`tests.memory_scenarios.InstrumentedDriver` over a real
:class:`HostDriver`; each test ends with nothing left in the driver.
"""

from __future__ import annotations

import gc
import logging

import pytest
import torch

from npu_platform.memory import tensors
from npu_platform.memory.driver import DriverError
from npu_platform.memory.drivers.host import HostDriver
from npu_platform.memory.errors import (
    AllocationOutOfMemory,
    FreeError,
    MemorySaverError,
    PauseError,
    UnknownAllocation,
)
from npu_platform.memory.manager import MemoryManager, State
from npu_platform.memory.regions import RegionSettings, RegionStack
from npu_platform.memory.table import Allocation, HostBackup, PoolKey
from npu_platform.memory.units import round_up, round_up_size
from tests.memory_scenarios import InstrumentedDriver, capture_logs, pattern, read, write

GRAN = 64 << 10


def _reclaim(host: HostDriver) -> None:
    """Give back whatever a failed manager call left in ``host`` (mappings first)."""
    for va, size in host.mapped_ranges().items():
        host.unmap(va, size)
    for phys in list(host._physical):
        host.free(phys)
    for va, size in host.reserved_ranges().items():
        host.release(va, size)
    for buf in list(host._host_buffers.values()):
        host.host_free(buf)
    assert host.used_bytes == 0 and host.reserved_bytes == 0 and host.host_bytes == 0


@pytest.fixture
def md():
    host = HostDriver(granularity=GRAN, populate=False)
    drv = InstrumentedDriver(host)
    mgr = MemoryManager(drv)  # type: ignore[arg-type]
    yield mgr, drv
    drv.clear_faults()
    try:
        mgr.free_all()
    finally:
        _reclaim(host)


# -- argument and driver checks --------------------------------------------------------------------


def test_bad_malloc_arguments_are_value_errors(md) -> None:
    mgr, drv = md
    with pytest.raises(ValueError, match="malloc size must be >= 0, got -1"):
        mgr.malloc(-1)
    with pytest.raises(ValueError, match="tag must be a non-empty string, got ''"):
        mgr.malloc(16, tag="")
    with pytest.raises(ValueError, match="tag must be a non-empty string, got 7"):
        mgr.malloc(16, tag=7)  # type: ignore[arg-type]
    assert mgr.malloc(0) == 0 and len(mgr) == 0
    for op in (mgr.pause, mgr.resume):
        with pytest.raises(TypeError, match=r"\(tag=\.\.\.\) takes a string or None, got int"):
            op(3)  # type: ignore[arg-type]
    assert drv.calls["reserve"] == 0, "nothing reached the driver"


def test_a_driver_reporting_a_useless_granularity_is_refused() -> None:
    class ZeroGranularity(HostDriver):
        def granularity(self, device: int) -> int:
            return 0

    mgr = MemoryManager(ZeroGranularity(granularity=GRAN))
    with pytest.raises(MemorySaverError, match=r"reported granularity 0 for device 3; it must be"):
        mgr.malloc(100, 3)
    assert len(mgr) == 0


def test_region_listeners_can_be_removed(md) -> None:
    mgr, _ = md
    seen: list[RegionSettings] = []
    mgr.add_region_listener(seen.append)
    with mgr.region("kv", enable_cpu_backup=True):
        pass
    assert seen == [RegionSettings("kv", True, True), RegionSettings("default", False, False)]
    mgr.remove_region_listener(seen.append)
    with mgr.region("kv"):
        pass
    assert len(seen) == 2
    with pytest.raises(ValueError):
        mgr.remove_region_listener(seen.append)


# -- allocation failures leave nothing behind ------------------------------------------------------


def test_map_failure_in_malloc_frees_the_memory_and_the_range(md) -> None:
    mgr, drv = md
    drv.fail_on("map")
    with pytest.raises(DriverError, match="injected failure of map"):
        mgr.malloc(GRAN)
    assert drv.calls["create"] == drv.calls["free"] == 1
    assert drv.calls["reserve"] == drv.calls["release"] == 1
    assert drv.balanced() == [] and len(mgr) == 0


def test_a_failing_cleanup_is_logged_and_does_not_hide_the_error(md) -> None:
    mgr, drv = md
    drv.fail_on("map")
    drv.fail_on("free")
    with capture_logs() as logs, pytest.raises(DriverError, match="injected failure of map"):
        mgr.malloc(GRAN)
    errors = [r.getMessage() for r in logs if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "clean-up call free" in errors[0]
    assert "injected failure of free" in errors[0]
    assert drv.balanced() == ["1 physical handle(s) not freed"]  # _reclaim gives it back
    assert len(mgr) == 0


def test_oom_when_the_driver_cannot_tell_what_is_free(md) -> None:
    mgr, drv = md
    drv.inner.limit_bytes = 2 * GRAN
    drv.fail_on("mem_info")
    with pytest.raises(AllocationOutOfMemory) as info:
        mgr.malloc(3 * GRAN, tag="kv")
    exc = info.value
    assert "cannot allocate" in str(exc) and "tag 'kv'" in str(exc)
    assert "the driver cannot tell how much is free" in str(exc)
    assert (exc.needed_bytes, exc.free_bytes, exc.total_bytes) == (3 * GRAN, None, None)
    assert drv.balanced() == [] and len(mgr) == 0


# -- free ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "left_behind"),
    [
        ("synchronize", []),
        ("unmap", ["1 reserved range(s) not released", "1 mapping(s) not unmapped"]),
        ("free", ["1 physical handle(s) not freed"]),
        ("release", ["1 reserved range(s) not released"]),
        ("host_free", ["1 host buffer(s) not freed"]),
    ],
)
def test_free_reports_each_failing_driver_call(md, method: str, left_behind: list[str]) -> None:
    mgr, drv = md
    mgr.retain_cpu_backup = True  # an active allocation that still holds a host backup
    va = mgr.malloc(GRAN, tag="weights", enable_cpu_backup=True)
    mgr.pause("weights")
    mgr.resume("weights")
    assert mgr.info(va).has_backup
    drv.reset_counts()
    drv.fail_on(method)
    with pytest.raises(FreeError) as info:
        mgr.free(va)
    message = str(info.value)
    assert f"free(0x{va:x}) (tag 'weights', 64.00 KiB (65536 bytes))" in message
    assert f"{method}: injected failure of {method}" in message
    assert "Some memory may have leaked" in message
    assert not mgr.owns(va) and len(mgr) == 0, "forgotten even though the driver failed"
    if method == "unmap":
        # still mapped: neither the physical memory nor the range may be given back
        assert drv.calls["free"] == drv.calls["release"] == 0
        left_behind = [*left_behind, "1 physical handle(s) not freed"]
    assert sorted(drv.balanced()) == sorted(left_behind)
    with pytest.raises(UnknownAllocation, match="already freed"):
        mgr.free(va)


def test_free_all_skips_what_was_freed_meanwhile_and_raises_the_first_error(md) -> None:
    mgr, drv = md
    a, b, c = (mgr.malloc(GRAN) for _ in range(3))

    def free_b_first(args: tuple[object, ...]) -> None:
        del drv.before["synchronize"]
        mgr.free(b)  # e.g. another thread, or a finalizer, got there first

    drv.before["synchronize"] = free_b_first
    mgr.free_all()
    assert len(mgr) == 0 and drv.calls["release"] == 3 and drv.balanced() == []

    a, b, c = (mgr.malloc(GRAN) for _ in range(3))
    drv.fail_on("release")
    with pytest.raises(FreeError, match=f"free\\(0x{a:x}\\).*release: injected") as info:
        mgr.free_all()
    assert f"0x{b:x}" not in str(info.value)
    assert len(mgr) == 0, "every allocation was attempted"
    assert drv.balanced() == ["3 reserved range(s) not released"]


# -- pause and its leaks ---------------------------------------------------------------------------


def test_pause_that_cannot_free_physical_memory_reports_the_leak(md) -> None:
    mgr, drv = md
    keep = mgr.malloc(GRAN, tag="kv")
    leak = mgr.malloc(GRAN, tag="kv")
    drv.fail_on("free", after=1)
    with capture_logs() as logs, pytest.raises(PauseError) as info:
        mgr.pause("kv")
    exc = info.value
    assert "every allocation is paused" in str(exc)
    assert "could not free the memory of 1 of them" in str(exc) and f"0x{leak:x}" in str(exc)
    assert exc.paused == [keep, leak] and exc.still_active == []
    assert {i.state for i in mgr.allocations()} == {State.PAUSED}
    assert any("freeing the physical memory" in r.getMessage() for r in logs)
    drv.clear_faults()
    assert mgr.resume("kv") == 2 and mgr.check_consistency() == []


def test_discarding_a_retained_backup_that_cannot_be_freed_is_reported(md) -> None:
    mgr, drv = md
    mgr.retain_cpu_backup = True
    va = mgr.malloc(GRAN, tag="weights", enable_cpu_backup=True)
    write(drv, va, pattern(1, GRAN))
    mgr.pause("weights")
    mgr.resume("weights")
    drv.fail_on("host_free")
    with pytest.raises(PauseError, match=r"\(host backup\): injected failure of host_free") as info:
        mgr.pause("weights", discard_backup=True)
    assert info.value.paused == [va] and info.value.still_active == []
    assert mgr.info(va).state is State.PAUSED and not mgr.info(va).has_backup
    drv.clear_faults()
    assert drv.balanced() == [
        "1 reserved range(s) not released",
        "1 host buffer(s) not freed",  # the leaked one, reclaimed by the fixture
    ]


# -- re-entrancy -----------------------------------------------------------------------------------


def test_an_operation_nested_on_the_same_thread_runs_inside_the_outer_one(md) -> None:
    mgr, drv = md
    a = mgr.malloc(GRAN, tag="a", enable_cpu_backup=True)
    b = mgr.malloc(GRAN, tag="b", enable_cpu_backup=True)
    write(drv, a, pattern(2, GRAN))
    write(drv, b, pattern(3, GRAN))
    nested: list[int] = []

    def pause_b(args: tuple[object, ...]) -> None:
        if args[1] == a and not nested:
            nested.append(mgr.pause("b"))  # same thread, lock already held: no deadlock
            mgr.free(b)  # the outer operation is still running: deferred
            assert not mgr.owns(b)

    drv.before["copy_to_host"] = pause_b
    assert mgr.pause("a") == 1
    drv.clear_faults()
    assert nested == [1]
    assert [i.address for i in mgr.allocations()] == [a], "b was freed once pause ended"
    assert mgr.resume("a") == 1 and read(drv, a, GRAN) == pattern(2, GRAN)


def test_a_deferred_free_that_fails_is_logged(md) -> None:
    mgr, drv = md
    a = mgr.malloc(GRAN, tag="a")
    b = mgr.malloc(GRAN, tag="b")

    def free_b(args: tuple[object, ...]) -> None:
        del drv.before["synchronize"]
        mgr.free(b)  # like a finalizer mid-pause: deferred
        drv.fail_on("release")

    drv.before["synchronize"] = free_b
    with capture_logs() as logs:
        assert mgr.pause("a") == 1
    errors = [r.getMessage() for r in logs if r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert errors[0].startswith(f"deferred free(0x{b:x}) failed") and "release" in errors[0]
    assert mgr.owns(a) and not mgr.owns(b)
    drv.clear_faults()


# -- queries ---------------------------------------------------------------------------------------


def test_backup_by_address_and_lookups_of_unknown_addresses(md) -> None:
    mgr, drv = md
    requested = GRAN + 100
    va = mgr.malloc(requested, tag="weights", enable_cpu_backup=True)
    other = mgr.malloc(10, tag="kv")
    data = pattern(4, requested)
    write(drv, va, data)
    assert mgr.tags() == {"weights", "kv"}
    assert [i.address for i in mgr] == sorted([va, other])
    assert mgr.pool_key(va) == PoolKey("weights", True, 0)
    mgr.pause("weights")
    whole = mgr.get_cpu_backup(va)  # an address: to the end of what was requested
    assert whole.dtype == torch.uint8 and bytes(whole.numpy()) == data
    tail = mgr.get_cpu_backup(va + GRAN)
    assert bytes(tail.numpy()) == data[GRAN:]
    assert mgr.backup_pointer(va + 5, 10) is not None
    unknown = max(va, other) + 16 * GRAN
    for call in (mgr.get_cpu_backup, mgr.info):
        with pytest.raises(UnknownAllocation, match=f"holds \\[0x{unknown:x}"):
            call(unknown)
    with pytest.raises(UnknownAllocation, match="allocated inside a region"):
        mgr.pool_key(va + 1)  # inside an allocation, but not where one starts
    with pytest.raises(UnknownAllocation):
        mgr.get_cpu_backup(va + requested)  # past what was requested
    mgr.free(va)
    assert mgr.tags() == {"kv"}


# -- consistency checks detect each kind of corrupted record ---------------------------------------


def test_check_consistency_names_each_violation(md) -> None:
    mgr, drv = md
    a = mgr.malloc(GRAN, tag="x", enable_cpu_backup=True)
    b = mgr.malloc(GRAN, tag="x")
    assert mgr.check_consistency() == []
    rec_a, rec_b = mgr._table[a], mgr._table[b]

    def problems_with(record: Allocation, **fields: object) -> list[str]:
        saved = {name: getattr(record, name) for name in fields}
        for name, value in fields.items():
            setattr(record, name, value)
        try:
            return mgr.check_consistency()
        finally:
            for name, value in saved.items():
                setattr(record, name, value)

    lo, hi = sorted([a, b])
    assert problems_with(mgr._table[lo], size=4 * abs(b - a)) == [
        f"0x{hi:x} overlaps the previous allocation"
    ]
    assert problems_with(rec_a, va=a + 1) == [f"0x{a:x}: record says address 0x{a + 1:x}"]
    assert problems_with(rec_a, handle=None) == [f"0x{a:x}: active without physical memory"]
    assert problems_with(rec_a, state=State.PAUSED) == [
        f"0x{a:x}: paused but still holds physical memory",
        f"0x{a:x}: paused with backup enabled but no backup",
    ]
    assert problems_with(rec_a, backup_discarded=True) == [
        f"0x{a:x}: backup discarded but active or still backed up"
    ]
    fake_backup = HostBackup(0x1000, None, 16)
    assert problems_with(rec_b, backup=fake_backup) == [
        f"0x{b:x}: has a backup but backup is disabled",
        f"0x{b:x}: active with an unretained backup",
    ]
    mgr._starts.append(max(a, b) + (1 << 20))  # an index entry without a record
    try:
        assert mgr.check_consistency() == ["address index out of sync with the table"]
    finally:
        mgr._starts.pop()
    assert mgr.check_consistency() == []


# -- small pieces: regions, records, units, tensors ------------------------------------------------


def test_region_stack_depth_and_tag_check() -> None:
    stack = RegionStack()
    assert stack.depth() == 0
    with stack.region("a", False), stack.disable():
        assert stack.depth() == 2
        assert stack.current() == RegionSettings("a", False, False)
    assert stack.depth() == 0
    for bad in ("", None):
        refused = pytest.raises(ValueError, match="a region tag must be a non-empty string")
        with refused, stack.region(bad, False):  # type: ignore[arg-type]
            pass
    assert stack.depth() == 0


def test_records_describe_themselves() -> None:
    alloc = Allocation(0x20000, GRAN, 100, 1, "kv", True, object())
    assert repr(alloc) == "<Allocation 0x20000 size=65536 tag='kv' device=1 active backup=True>"
    backup = HostBackup(0xABC000, None, 100)
    assert repr(backup) == "<HostBackup 0xabc000 size=100 leases=0>"
    assert alloc.info().has_backup is False and alloc.pool_key == PoolKey("kv", True, 1)


def test_round_up_size_refuses_empty_sizes() -> None:
    assert round_up_size(1, GRAN) == GRAN == round_up(GRAN, GRAN)
    for size in (0, -5):
        with pytest.raises(ValueError, match=f"size must be positive, got {size}"):
            round_up_size(size, GRAN)


def test_tensor_at_zero_bytes_releases_at_once() -> None:
    released: list[bool] = []
    t = tensors.tensor_at(0xDEAD0000, 0, on_release=lambda: released.append(True))
    assert released == [True] and t.numel() == 0 and t.dtype == torch.uint8


def test_tensor_whose_memory_was_freed_first_logs_when_it_dies(md) -> None:
    mgr, _ = md
    t = tensors.empty(mgr, (4, 4), torch.float32, tag="kv")
    address = t.data_ptr()
    mgr.free(address)  # the allocation goes before its tensor
    with capture_logs() as logs:
        del t
        gc.collect()
    messages = [r.getMessage() for r in logs if r.levelno == logging.ERROR]
    assert messages == [
        f"freeing 0x{address:x} when its tensor died failed: free(0x{address:x}): no "
        "allocation of this memory manager starts at this address (already freed, or "
        "allocated elsewhere); check owns() first"
    ]


def test_empty_gives_the_memory_back_when_wrapping_it_fails(md, monkeypatch) -> None:
    mgr, drv = md

    def no_tensor(address: int, nbytes: int, **kwargs: object) -> torch.Tensor:
        raise MemoryError("cannot wrap")

    monkeypatch.setattr(tensors, "tensor_at", no_tensor)
    with pytest.raises(MemoryError, match="cannot wrap"):
        tensors.empty(mgr, 1000, torch.uint8)
    assert len(mgr) == 0 and drv.balanced() == []
