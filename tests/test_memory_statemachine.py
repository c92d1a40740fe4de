"""Property test: the manager on the host driver against a plain dict model."""

from __future__ import annotations

import dataclasses
import random

import torch
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    invariant,
    precondition,
    rule,
)

from npu_platform.memory import tensors
from npu_platform.memory.drivers.host import HostDriver
from npu_platform.memory.errors import NoCpuBackup
from npu_platform.memory.manager import MemoryManager, State
from tests.memory_scenarios import InstrumentedDriver

GRAN = 16 << 10
TAGS = st.sampled_from(["weights", "kv_cache", "graph"])


@dataclasses.dataclass
class Entry:
    tag: str
    backup: bool
    size: int
    tensor: torch.Tensor
    state: State = State.ACTIVE
    data: bytes = b""
    snapshot: bytes | None = None  # what get_cpu_backup should return (None: no backup)


def _bytes(seed: int, n: int) -> bytes:
    return random.Random(seed).randbytes(n)


class ManagerMachine(RuleBasedStateMachine):
    allocations = Bundle("allocations")

    def __init__(self) -> None:
        super().__init__()
        # Lazy pages keep each example cheap; the eager path is covered elsewhere.
        self.driver = InstrumentedDriver(HostDriver(granularity=GRAN, populate=False))
        self.mgr = MemoryManager(self.driver)  # type: ignore[arg-type]
        self.model: dict[int, Entry] = {}
        self.retain = False

    # -- rules ------------------------------------------------------------------------

    @rule(
        target=allocations,
        tag=TAGS,
        backup=st.booleans(),
        size=st.integers(1, 3 * GRAN),
        seed=st.integers(0, 2**32),
    )
    def alloc(self, tag: str, backup: bool, size: int, seed: int) -> int:
        with self.mgr.region(tag, enable_cpu_backup=backup):
            va = self.mgr.malloc(size)
        assert va not in self.model
        entry = Entry(tag, backup, size, tensors.tensor_at(va, size))
        self.model[va] = entry
        self._write(entry, seed)
        return va

    @rule(va=consumes(allocations))
    def free(self, va: int) -> None:
        entry = self.model.pop(va)
        del entry.tensor
        self.mgr.free(va)

    @rule(va=allocations, seed=st.integers(0, 2**32))
    def write(self, va: int, seed: int) -> None:
        entry = self.model[va]
        if entry.state is State.ACTIVE:
            self._write(entry, seed)

    @rule(tag=st.none() | TAGS)
    def pause(self, tag: str | None) -> None:
        expected = 0
        for entry in self._matching(tag):
            if entry.state is State.ACTIVE:
                expected += 1
                entry.state = State.PAUSED
                entry.snapshot = entry.data if entry.backup else None
        assert self.mgr.pause(tag) == expected

    @rule(tag=st.none() | TAGS)
    def resume(self, tag: str | None) -> None:
        expected = 0
        for entry in self._matching(tag):
            if entry.state is State.PAUSED:
                expected += 1
                entry.state = State.ACTIVE
                if not entry.backup:
                    entry.data = bytes(entry.size)  # fresh host-driver memory is zeroed
                if not self.retain:
                    entry.snapshot = None
        assert self.mgr.resume(tag) == expected

    @rule(value=st.booleans())
    def set_retain(self, value: bool) -> None:
        self.retain = value
        self.mgr.retain_cpu_backup = value
        if not value:
            for entry in self.model.values():
                if entry.state is State.ACTIVE:
                    entry.snapshot = None

    @precondition(lambda self: self.model)
    @rule(data=st.data())
    def query_backup(self, data: st.DataObject) -> None:
        va = data.draw(st.sampled_from(sorted(self.model)))
        entry = self.model[va]
        if entry.state is State.PAUSED and not entry.backup:
            try:
                self.mgr.get_cpu_backup(va, nbytes=entry.size)
            except NoCpuBackup:
                return
            raise AssertionError("paused without backup must raise NoCpuBackup")
        got = self.mgr.get_cpu_backup(va, zero_copy=data.draw(st.booleans()), nbytes=entry.size)
        if entry.snapshot is None:
            assert got is None
        else:
            assert got is not None and got.numpy().tobytes() == entry.snapshot

    # -- invariants -------------------------------------------------------------------

    @invariant()
    def table_matches_model(self) -> None:
        infos = {info.address: info for info in self.mgr.allocations()}
        assert set(infos) == set(self.model)
        for va, entry in self.model.items():
            info = infos[va]
            assert (info.tag, info.enable_cpu_backup, info.state, info.requested) == (
                entry.tag,
                entry.backup,
                entry.state,
                entry.size,
            )
        assert not self.mgr.check_consistency()
        active = {va for va, e in self.model.items() if e.state is State.ACTIVE}
        assert set(self.driver.live_mapped) == active
        assert len(self.driver.live_handles) == len(active)

    @invariant()
    def active_data_intact(self) -> None:
        for entry in self.model.values():
            if entry.state is State.ACTIVE:
                assert entry.tensor.numpy().tobytes() == entry.data

    def teardown(self) -> None:
        for entry in self.model.values():
            del entry.tensor
        self.model.clear()
        self.mgr.free_all()
        assert not self.driver.balanced(), self.driver.balanced()

    # -- helpers ----------------------------------------------------------------------

    def _matching(self, tag: str | None) -> list[Entry]:
        return [e for e in self.model.values() if tag is None or e.tag == tag]

    @staticmethod
    def _write(entry: Entry, seed: int) -> None:
        entry.data = _bytes(seed, entry.size)
        entry.tensor.copy_(torch.frombuffer(bytearray(entry.data), dtype=torch.uint8))


ManagerMachine.TestCase.settings = settings(
    max_examples=60,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestManagerStateMachine = ManagerMachine.TestCase
