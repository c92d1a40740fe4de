"""The allocation table: one record per live allocation, keyed by its start address.

The table itself is a plain dict; :class:`npu_platform.memory.manager.MemoryManager` owns it
and guards every access with its lock. Records are mutable and only changed under it.
"""

from __future__ import annotations

import enum
import threading
from typing import NamedTuple


class State(str, enum.Enum):
    ACTIVE = "active"  # physical memory mapped at the address
    PAUSED = "paused"  # address range reserved, no physical memory; data in backup if any


class PoolKey(NamedTuple):
    """Memory is pooled per (tag, backup setting, device); never shared across keys."""

    tag: str
    enable_cpu_backup: bool
    device: int


class HostBackup:
    """A host buffer holding an allocation's bytes while it is paused (or retained).

    ``leases`` counts zero-copy views handed out by ``get_cpu_backup(zero_copy=True)``; a
    buffer the manager no longer needs is only freed once the last view is gone.
    """

    __slots__ = ("_lock", "handle", "leases", "orphaned", "ptr", "size")

    def __init__(self, ptr: int, handle: object, size: int) -> None:
        self.ptr = ptr
        self.handle = handle
        self.size = size
        self.leases = 0
        self.orphaned = False
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"<HostBackup 0x{self.ptr:x} size={self.size} leases={self.leases}>"


class Allocation:
    """One allocation made by the manager."""

    __slots__ = (
        "backup",
        "backup_discarded",
        "backup_valid",
        "device",
        "enable_cpu_backup",
        "handle",
        "requested",
        "size",
        "state",
        "tag",
        "va",
    )

    def __init__(
        self,
        va: int,
        size: int,
        requested: int,
        device: int,
        tag: str,
        enable_cpu_backup: bool,
        handle: object,
    ) -> None:
        self.va = va
        self.size = size  # rounded up to the granularity; what is reserved and mapped
        self.requested = requested  # what the caller asked for
        self.device = device
        self.tag = tag
        self.enable_cpu_backup = enable_cpu_backup
        self.handle: object | None = handle  # physical memory while ACTIVE
        self.state = State.ACTIVE
        self.backup: HostBackup | None = None
        # True when ``backup`` holds the allocation's current bytes (set by pause; stays
        # True for a retained backup after resume: it is then the snapshot of that pause).
        self.backup_valid = False
        # True while PAUSED by ``pause(..., discard_backup=True)``: backup is enabled but the
        # contents were dropped on purpose, so resume maps fresh memory instead.
        self.backup_discarded = False

    @property
    def pool_key(self) -> PoolKey:
        return PoolKey(self.tag, self.enable_cpu_backup, self.device)

    def info(self) -> AllocationInfo:
        return AllocationInfo(
            self.va,
            self.size,
            self.requested,
            self.device,
            self.tag,
            self.enable_cpu_backup,
            self.state,
            self.backup is not None and self.backup_valid,
        )

    def __repr__(self) -> str:
        return (
            f"<Allocation 0x{self.va:x} size={self.size} tag={self.tag!r} "
            f"device={self.device} {self.state.value} backup={self.enable_cpu_backup}>"
        )


class AllocationInfo(NamedTuple):
    """A read-only snapshot of one allocation, for callers and tests."""

    address: int
    size: int
    requested: int
    device: int
    tag: str
    enable_cpu_backup: bool
    state: State
    has_backup: bool
