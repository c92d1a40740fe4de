"""``MemoryManager.pause(tag, discard_backup=True)``: release without a host copy.

vLLM's sleep level 2 throws the weights away (the caller reloads them), although they were
allocated with a CPU backup for level 1. ``discard_backup=True`` releases such allocations
without copying, drops any backup still held (a retained one, or that of an allocation
already paused), and ``resume`` then maps fresh, zeroed memory (host driver). Checked here:
the state and the driver calls, host-backup and RSS bytes, zeroed memory after resume, that
every driver object is released exactly once, failures, and a property test against a plain
model that mixes discarding and backed-up pauses.
"""

from __future__ import annotations

import gc

import pytest
import torch
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import consumes, rule

from npu_platform.memory import tensors
from npu_platform.memory.driver import DriverError
from npu_platform.memory.drivers.host import HostDriver
from npu_platform.memory.errors import NoCpuBackup, PauseError
from npu_platform.memory.manager import MemoryManager, State
from tests import test_memory_statemachine as statemachine
from tests.memory_scenarios import InstrumentedDriver, pattern, read, write

MIB = 1 << 20
GRAN = 64 << 10


def _manager(*, populate: bool = False, granularity: int = GRAN, **kwargs: object):
    driver = InstrumentedDriver(HostDriver(granularity=granularity, populate=populate))
    return MemoryManager(driver, **kwargs), driver  # type: ignore[arg-type]


def _alloc(mgr: MemoryManager, size: int, tag: str = "weights", backup: bool = True) -> int:
    with mgr.region(tag, enable_cpu_backup=backup):
        return mgr.malloc(size)


def _rss() -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("VmRSS missing from /proc/self/status")


def _finish(mgr: MemoryManager, driver: InstrumentedDriver) -> None:
    assert not mgr.check_consistency()
    mgr.free_all()
    assert not driver.balanced(), driver.balanced()  # everything released exactly once


# -- state and driver calls ---------------------------------------------------------------------


def test_discard_pauses_a_backed_up_allocation_without_copying() -> None:
    mgr, driver = _manager()
    va = _alloc(mgr, 3 * GRAN + 5)
    write(driver, va, pattern(1, 3 * GRAN + 5))
    driver.reset_counts()

    assert mgr.pause("weights", discard_backup=True) == 1
    info = mgr.info(va)
    assert info.state is State.PAUSED
    assert info.enable_cpu_backup, "the allocation keeps its backup setting"
    assert not info.has_backup
    assert driver.calls["host_alloc"] == 0 and driver.calls["copy_to_host"] == 0
    assert driver.calls["unmap"] == 1 and driver.calls["free"] == 1
    assert mgr.stats()["weights"] == {
        "count": 1,
        "active_bytes": 0,
        "paused_bytes": 4 * GRAN,
        "backup_bytes": 0,
    }
    assert not driver.live_host and not driver.live_mapped and not driver.live_handles
    assert not mgr.check_consistency()
    with pytest.raises(NoCpuBackup, match="discard_backup=True"):
        mgr.get_cpu_backup(va, nbytes=16)
    _finish(mgr, driver)


def test_resume_after_discard_gives_zeroed_memory_at_the_same_address() -> None:
    mgr, driver = _manager()
    size = 2 * GRAN + 123
    va = _alloc(mgr, size)
    view = tensors.tensor_at(va, size)
    view.fill_(0xAB)
    mgr.pause("weights", discard_backup=True)
    driver.reset_counts()

    assert mgr.resume("weights") == 1
    assert driver.calls["copy_from_host"] == 0
    assert mgr.info(va).state is State.ACTIVE
    assert view.data_ptr() == va
    assert int(view.count_nonzero()) == 0, "resume after a discard maps fresh (zeroed) memory"
    assert mgr.get_cpu_backup(va, nbytes=size) is None
    assert not mgr.check_consistency()

    # The backup setting is intact: a plain pause backs the new contents up again.
    view.copy_(torch.arange(size, dtype=torch.int64).to(torch.uint8))
    expected = view.clone()
    driver.reset_counts()
    assert mgr.pause("weights") == 1
    assert driver.calls["host_alloc"] == 1 and driver.calls["copy_to_host"] == 1
    assert torch.equal(mgr.get_cpu_backup(va, nbytes=size), expected)
    mgr.resume("weights")
    assert torch.equal(view, expected)
    del view
    _finish(mgr, driver)


def test_discard_drops_a_retained_backup() -> None:
    mgr, driver = _manager(retain_cpu_backup=True)
    va = _alloc(mgr, GRAN)
    write(driver, va, pattern(2, GRAN))
    mgr.pause("weights")
    mgr.resume("weights")
    assert mgr.stats()["weights"]["backup_bytes"] == GRAN, "retained after resume"
    assert read(driver, va, GRAN) == pattern(2, GRAN)
    driver.reset_counts()

    assert mgr.pause("weights", discard_backup=True) == 1
    assert driver.calls["host_free"] == 1 and driver.calls["copy_to_host"] == 0
    assert mgr.stats()["weights"]["backup_bytes"] == 0
    assert not driver.live_host
    mgr.resume("weights")
    assert read(driver, va, GRAN) == bytes(GRAN), "the stale retained snapshot must not return"
    assert mgr.get_cpu_backup(va, nbytes=GRAN) is None
    _finish(mgr, driver)


def test_discard_of_an_already_paused_allocation_drops_its_backup() -> None:
    mgr, driver = _manager()
    va = _alloc(mgr, GRAN)
    write(driver, va, pattern(3, GRAN))
    assert mgr.pause("weights") == 1
    assert mgr.stats()["weights"]["backup_bytes"] == GRAN
    driver.reset_counts()

    assert mgr.pause("weights", discard_backup=True) == 0, "nothing newly paused"
    assert driver.calls["host_free"] == 1
    assert driver.calls["unmap"] == 0 and driver.calls["free"] == 0
    assert mgr.stats()["weights"]["backup_bytes"] == 0
    assert not mgr.check_consistency()
    # Again: nothing left to drop, nothing to do.
    assert mgr.pause("weights", discard_backup=True) == 0
    assert driver.calls["host_free"] == 1
    mgr.resume("weights")
    assert read(driver, va, GRAN) == bytes(GRAN)
    _finish(mgr, driver)


def test_a_zero_copy_view_outlives_the_discarded_backup_and_it_is_freed_once() -> None:
    mgr, driver = _manager()
    va = _alloc(mgr, GRAN)
    write(driver, va, pattern(4, GRAN))
    mgr.pause("weights")
    view = mgr.get_cpu_backup(va, zero_copy=True, nbytes=GRAN)
    assert view is not None
    driver.reset_counts()

    mgr.pause("weights", discard_backup=True)
    assert driver.calls["host_free"] == 0, "the view still uses the buffer"
    assert mgr.stats()["weights"]["backup_bytes"] == 0
    assert view.numpy().tobytes() == pattern(4, GRAN)
    del view
    gc.collect()
    assert driver.calls["host_free"] == 1
    _finish(mgr, driver)


def test_free_of_a_discarded_allocation_releases_everything_once() -> None:
    mgr, driver = _manager(retain_cpu_backup=True)
    vas = [_alloc(mgr, GRAN * (i + 1)) for i in range(3)]
    mgr.pause("weights")
    mgr.resume("weights")  # retained backups now
    mgr.pause("weights", discard_backup=True)
    for va in vas:
        mgr.free(va)
    assert len(mgr) == 0
    assert not driver.balanced(), driver.balanced()
    assert driver.calls["release"] == 3 and driver.calls["host_free"] == 3
    assert driver.calls["free"] == driver.calls["create"] == 6


def test_discard_is_limited_to_the_tag_and_covers_every_tag_for_none() -> None:
    mgr, driver = _manager()
    weights = _alloc(mgr, GRAN, "weights")
    graph = _alloc(mgr, GRAN, "graph")
    kv = _alloc(mgr, GRAN, "kv_cache", backup=False)
    for seed, va in enumerate((weights, graph, kv)):
        write(driver, va, pattern(10 + seed, GRAN))

    assert mgr.pause("weights", discard_backup=True) == 1
    assert mgr.pause("graph") == 1
    stats = mgr.stats()
    assert stats["weights"]["backup_bytes"] == 0 and stats["graph"]["backup_bytes"] == GRAN
    assert stats["kv_cache"]["active_bytes"] == GRAN
    mgr.resume()
    assert read(driver, weights, GRAN) == bytes(GRAN)
    assert read(driver, graph, GRAN) == pattern(11, GRAN)
    assert read(driver, kv, GRAN) == pattern(12, GRAN)

    assert mgr.pause(None, discard_backup=True) == 3
    assert all(row["backup_bytes"] == 0 for row in mgr.stats().values())
    assert driver.calls["host_alloc"] == 1, "only the plain pause of 'graph' copied"
    mgr.resume()
    assert all(read(driver, va, GRAN) == bytes(GRAN) for va in (weights, graph, kv))
    _finish(mgr, driver)


# -- memory actually returned ------------------------------------------------------------------


def test_rss_and_host_bytes_discard_versus_backup() -> None:
    size = 64 * MIB
    mgr, driver = _manager(populate=True, granularity=2 * MIB)
    va = _alloc(mgr, size)
    tensors.tensor_at(va, size).fill_(7)  # every page touched

    before = _rss()
    mgr.pause("weights")  # backed up: the bytes move to a host buffer
    backed_up = _rss()
    assert mgr.stats()["weights"]["backup_bytes"] == size
    assert abs(backed_up - before) < 0.05 * size, (before, backed_up)
    mgr.resume("weights")

    before = _rss()
    mgr.pause("weights", discard_backup=True)
    discarded = _rss()
    assert mgr.stats()["weights"]["backup_bytes"] == 0
    assert not driver.live_host
    assert before - discarded >= 0.99 * size, (before, discarded)

    mgr.resume("weights")
    view = tensors.tensor_at(va, size)
    assert _rss() - discarded >= 0.99 * size, "resume maps (populated) memory again"
    assert int(view.count_nonzero()) == 0
    del view
    _finish(mgr, driver)


# -- failures -----------------------------------------------------------------------------------


def test_failed_unmap_during_discard_leaves_the_allocation_active_and_intact() -> None:
    mgr, driver = _manager(retain_cpu_backup=True)
    first = _alloc(mgr, GRAN)
    second = _alloc(mgr, GRAN)
    write(driver, first, pattern(5, GRAN))
    write(driver, second, pattern(6, GRAN))
    driver.fail_on("unmap", after=1)

    with pytest.raises(PauseError) as err:
        mgr.pause("weights", discard_backup=True)
    assert err.value.paused == [first] and err.value.still_active == [second]
    assert mgr.info(second).state is State.ACTIVE
    assert read(driver, second, GRAN) == pattern(6, GRAN)
    assert not mgr.check_consistency()
    driver.clear_faults()
    assert mgr.pause("weights", discard_backup=True) == 1
    mgr.resume("weights")
    assert read(driver, second, GRAN) == bytes(GRAN)
    _finish(mgr, driver)


def test_failed_host_free_while_discarding_is_reported_as_a_leak() -> None:
    mgr, driver = _manager()
    va = _alloc(mgr, GRAN)
    mgr.pause("weights")
    driver.fail_on("host_free", error=lambda: DriverError("injected host_free failure"))
    with pytest.raises(PauseError, match="host backup"):
        mgr.pause("weights", discard_backup=True)
    driver.clear_faults()
    assert mgr.info(va).state is State.PAUSED and not mgr.info(va).has_backup
    assert not mgr.check_consistency()
    mgr.resume("weights")
    mgr.free(va)
    assert driver.live_host, "the buffer whose free failed is the one leak"
    assert not driver.live_handles and not driver.live_mapped and not driver.live_reserved


# -- property test: discarding mixed into the manager's state machine -----------------------------


class DiscardMachine(statemachine.ManagerMachine):
    """The manager state machine with ``pause(tag, discard_backup=True)`` as a further rule.

    ``discarded`` holds the addresses paused by a discard since their last resume.
    """

    def __init__(self) -> None:
        super().__init__()
        self.discarded: set[int] = set()

    @rule(tag=st.none() | statemachine.TAGS)
    def pause_discarding(self, tag: str | None) -> None:
        expected = 0
        for va, entry in self.model.items():
            if tag is not None and entry.tag != tag:
                continue
            if entry.state is State.ACTIVE:
                expected += 1
                entry.state = State.PAUSED
            entry.snapshot = None
            self.discarded.add(va)
        assert self.mgr.pause(tag, discard_backup=True) == expected

    @rule(tag=st.none() | statemachine.TAGS)
    def resume(self, tag: str | None) -> None:
        expected = 0
        for va, entry in self.model.items():
            if tag is not None and entry.tag != tag:
                continue
            if entry.state is State.PAUSED:
                expected += 1
                entry.state = State.ACTIVE
                if not entry.backup or va in self.discarded:
                    entry.data = bytes(entry.size)
                if not self.retain:
                    entry.snapshot = None
                self.discarded.discard(va)
        assert self.mgr.resume(tag) == expected

    @rule(tag=st.none() | statemachine.TAGS)
    def pause(self, tag: str | None) -> None:
        expected = 0
        for va, entry in self.model.items():
            if tag is not None and entry.tag != tag:
                continue
            if entry.state is State.ACTIVE:
                expected += 1
                entry.state = State.PAUSED
                entry.snapshot = entry.data if entry.backup else None
                self.discarded.discard(va)
        assert self.mgr.pause(tag) == expected

    @rule(data=st.data())
    def query_backup(self, data: st.DataObject) -> None:
        if not self.model:
            return
        va = data.draw(st.sampled_from(sorted(self.model)))
        entry = self.model[va]
        if entry.state is State.PAUSED and (not entry.backup or va in self.discarded):
            with pytest.raises(NoCpuBackup):
                self.mgr.get_cpu_backup(va, nbytes=entry.size)
            return
        got = self.mgr.get_cpu_backup(va, zero_copy=data.draw(st.booleans()), nbytes=entry.size)
        if entry.snapshot is None:
            assert got is None
        else:
            assert got is not None and got.numpy().tobytes() == entry.snapshot

    @rule(va=consumes(statemachine.ManagerMachine.allocations))
    def free(self, va: int) -> None:
        # A later allocation may get the same address: it starts undiscarded.
        self.discarded.discard(va)
        super().free(va)


DiscardMachine.TestCase.settings = settings(
    max_examples=40,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestDiscardStateMachine = DiscardMachine.TestCase
