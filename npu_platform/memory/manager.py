"""The sleep/wake memory manager: hardware-agnostic, over one :class:`Driver`.

What it does
    ``malloc`` reserves a virtual address range, creates physical memory and maps it there,
    recording (address, size, device, tag, backup policy, state) in a table. ``pause(tag)``
    copies the bytes of backed-up allocations to host buffers, then unmaps and frees their
    physical memory; the address range stays reserved. ``resume(tag)`` creates fresh
    physical memory, maps it at the same address and copies the backups back, so pointers
    (and torch ``data_ptr()``) never change. ``pause(tag, discard_backup=True)`` releases
    without copying even where backups are enabled, and drops any backup still held, for
    callers that will rewrite the contents anyway (vLLM's sleep level 2 reloads weights).

Tags and backups come from thread-local *regions* (:meth:`MemoryManager.region`), which
nest; :meth:`MemoryManager.disable` inside a region routes allocations to ordinary memory.
An allocator hook (the C shim behind torch's pluggable allocator) asks
:meth:`MemoryManager.intercepting` whether to route an allocation here, then calls
:meth:`MemoryManager.malloc` / :meth:`MemoryManager.free` with plain integers.

Guarantees
    * Every error is an exception (see :mod:`npu_platform.memory.errors`); nothing exits.
    * The table is guarded by one lock: pause/resume/free/backup queries are serialised;
      ``malloc`` does its driver work outside the lock and only inserts under it, so
      allocating on one thread while another pauses or resumes is safe (a new allocation
      is ACTIVE, whatever state its tag is in).
    * Pausing what is paused or resuming what is active is a logged no-op; an unknown tag
      or a tag without allocations is a no-op.
    * ``pause`` copies an allocation's bytes to host and synchronises *before* unmapping
      it, so a failing copy loses nothing: that allocation and every later one stay ACTIVE.
    * ``resume`` that runs out of memory raises :class:`ResumeOutOfMemory` naming the tag,
      the bytes needed and the bytes free; allocations already resumed stay ACTIVE, the
      rest stay PAUSED with their backups, and calling ``resume`` again later finishes.
    * ``free`` of a paused allocation releases its address range and backup exactly once.
    * Memory is never shared across (tag, backup setting, device) keys: the manager keeps
      no cache of freed blocks at all, and the torch integration keys its pools that way
      (see :attr:`Allocation.pool_key`).
"""

from __future__ import annotations

import bisect
import contextlib
import ctypes
import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

from npu_platform.memory.driver import Driver, OutOfDeviceMemory
from npu_platform.memory.errors import (
    AllocationOutOfMemory,
    FreeError,
    MemorySaverError,
    NoCpuBackup,
    PauseError,
    ResumeError,
    ResumeOutOfMemory,
    UnknownAllocation,
    format_bytes,
)
from npu_platform.memory.regions import DEFAULT_TAG, RegionSettings, RegionStack
from npu_platform.memory.table import Allocation, AllocationInfo, HostBackup, PoolKey, State
from npu_platform.memory.units import round_up

if TYPE_CHECKING:
    import torch

__all__ = ["DEFAULT_TAG", "MemoryManager", "PoolKey", "State"]

logger = logging.getLogger("npu_platform.memory")


class MemoryManager:
    """Allocation table, regions and the pause/resume state machine over one driver.

    ``retain_cpu_backup``: keep host backups after ``resume`` (the next ``pause`` refreshes
    them in place instead of allocating new host memory; ``get_cpu_backup`` on an active
    allocation returns the snapshot of the last pause). ``memory_margin_bytes``: refuse an
    allocation or a resume that would leave less free device memory than this.
    """

    def __init__(
        self,
        driver: Driver,
        *,
        retain_cpu_backup: bool = False,
        memory_margin_bytes: int = 0,
    ) -> None:
        self.driver = driver
        self._lock = threading.RLock()
        # True while a pause/resume/... runs (on the thread holding the lock). A free that
        # arrives then comes from that very thread: the garbage collector running a tensor
        # finalizer mid-operation. It must not change the table under the operation, so
        # it is deferred until the operation ends.
        self._busy = False
        self._deferred: list[int] = []
        self._table: dict[int, Allocation] = {}
        self._starts: list[int] = []  # sorted keys of _table, for address look-ups
        self._tags_seen: set[str] = set()
        self._regions = RegionStack()
        self._retain = bool(retain_cpu_backup)
        self._margin = 0
        self.memory_margin_bytes = memory_margin_bytes
        self._granularity: dict[int, int] = {}

    # ------------------------------------------------------------------ configuration

    @property
    def retain_cpu_backup(self) -> bool:
        return self._retain

    @retain_cpu_backup.setter
    def retain_cpu_backup(self, value: bool) -> None:
        """Turning it off frees the retained backups of active allocations right away."""
        with self._operation():
            self._retain = bool(value)
            if not self._retain:
                for alloc in self._table.values():
                    if alloc.state is State.ACTIVE and alloc.backup is not None:
                        self._drop_backup(alloc)

    @property
    def memory_margin_bytes(self) -> int:
        return self._margin

    @memory_margin_bytes.setter
    def memory_margin_bytes(self, value: int) -> None:
        value = int(value)
        if value < 0:
            raise ValueError(f"memory_margin_bytes must be >= 0, got {value}")
        self._margin = value

    def granularity(self, device: int = 0) -> int:
        unit = self._granularity.get(device)
        if unit is None:
            unit = int(self.driver.granularity(device))
            if unit <= 0:
                raise MemorySaverError(
                    f"driver {self.driver.name!r} reported granularity {unit} for device "
                    f"{device}; it must be a positive number of bytes"
                )
            self._granularity[device] = unit
        return unit

    # ------------------------------------------------------------------ regions

    def region(
        self, tag: str = DEFAULT_TAG, enable_cpu_backup: bool = False
    ) -> AbstractContextManager[RegionSettings]:
        """Allocations made on this thread inside get ``tag`` and the backup policy."""
        return self._regions.region(tag, enable_cpu_backup)

    def disable(self) -> AbstractContextManager[RegionSettings]:
        """Inside a region: allocations on this thread go to ordinary memory."""
        return self._regions.disable()

    def current_region(self) -> RegionSettings:
        """This thread's settings (``intercepting`` is False outside regions)."""
        return self._regions.current()

    def intercepting(self) -> bool:
        """Should an allocator hook route this thread's allocations to :meth:`malloc`?"""
        return self._regions.current().intercepting

    def add_region_listener(self, listener: Callable[[RegionSettings], None]) -> None:
        """Call ``listener(settings)`` on a thread whenever its region settings change."""
        self._regions.listeners.append(listener)

    def remove_region_listener(self, listener: Callable[[RegionSettings], None]) -> None:
        self._regions.listeners.remove(listener)

    # ------------------------------------------------------------------ allocation

    def malloc(
        self,
        size: int,
        device: int = 0,
        *,
        tag: str | None = None,
        enable_cpu_backup: bool | None = None,
    ) -> int:
        """Allocate ``size`` bytes on ``device``; return the address (0 for ``size == 0``).

        ``tag`` / ``enable_cpu_backup`` default to this thread's region settings (tag
        ``"default"`` without backup outside regions). Raises
        :class:`AllocationOutOfMemory` when the device is out of memory or the allocation
        would leave less than ``memory_margin_bytes`` free.
        """
        size = int(size)
        if size < 0:
            raise ValueError(f"malloc size must be >= 0, got {size}")
        if size == 0:
            return 0
        settings = self._regions.current()
        tag = settings.tag if tag is None else tag
        backup = settings.enable_cpu_backup if enable_cpu_backup is None else enable_cpu_backup
        if not isinstance(tag, str) or not tag:
            raise ValueError(f"tag must be a non-empty string, got {tag!r}")
        rounded = round_up(size, self.granularity(device))
        self._check_margin(rounded, device, tag, AllocationOutOfMemory, "allocate")

        driver = self.driver
        va = driver.reserve(rounded, device)
        handle: object | None = None
        try:
            try:
                handle = driver.create(rounded, device)
            except OutOfDeviceMemory as exc:
                raise self._oom(
                    AllocationOutOfMemory, "allocate", tag=tag, device=device, needed=rounded
                ) from exc
            driver.map(va, rounded, handle, device)
        except BaseException:
            if handle is not None:
                self._quietly(driver.free, handle)
            self._quietly(driver.release, va, rounded)
            raise
        alloc = Allocation(va, rounded, size, device, tag, bool(backup), handle)
        with self._lock:
            self._table[va] = alloc
            bisect.insort(self._starts, va)
            self._tags_seen.add(tag)
        return va

    def free(self, address: int) -> None:
        """Free an allocation (active or paused): physical memory, address range, backup.

        Raises :class:`UnknownAllocation` for an address the manager does not hold.
        """
        if address == 0:
            return
        with self._lock:
            alloc = self._table.get(address)
            if alloc is None or address in self._deferred:
                raise UnknownAllocation(
                    f"free(0x{address:x}): no allocation of this memory manager starts at this "
                    "address (already freed, or allocated elsewhere); check owns() first"
                )
            if self._busy:
                self._deferred.append(address)
                return
            del self._table[address]
            self._starts.pop(bisect.bisect_left(self._starts, address))
            # Out of the table now: nothing else can reach it, so the driver calls below
            # happen exactly once and may run without the lock.
        problems: list[str] = []
        driver = self.driver
        unmapped = alloc.state is State.PAUSED
        if not unmapped:
            try:
                driver.synchronize(alloc.device)  # kernels may still use the memory
            except Exception as exc:
                problems.append(f"synchronize: {exc}")
            try:
                driver.unmap(alloc.va, alloc.size)
                unmapped = True
            except Exception as exc:  # still mapped: neither handle nor range can go
                problems.append(f"unmap: {exc}")
            if unmapped:
                handle, alloc.handle = alloc.handle, None
                try:
                    driver.free(handle)
                except Exception as exc:
                    problems.append(f"free: {exc}")
        if unmapped:
            try:
                driver.release(alloc.va, alloc.size)
            except Exception as exc:
                problems.append(f"release: {exc}")
        if alloc.backup is not None:
            try:
                self._drop_backup(alloc)
            except Exception as exc:
                problems.append(f"host_free: {exc}")
        if problems:
            raise FreeError(
                f"free(0x{address:x}) (tag {alloc.tag!r}, {format_bytes(alloc.size)}): the "
                f"allocation is forgotten but driver {driver.name!r} failed: "
                + "; ".join(problems)
                + ". Some memory may have leaked; check the driver's health."
            )

    def owns(self, address: int) -> bool:
        """Does an allocation of this manager start at ``address``?"""
        with self._lock:
            return address in self._table and address not in self._deferred

    def free_all(self) -> None:
        """Free every allocation (tests, shutdown). Raises the first :class:`FreeError`."""
        with self._lock:
            addresses = list(self._table)
        first: FreeError | None = None
        for address in addresses:
            try:
                self.free(address)
            except UnknownAllocation:
                continue  # freed meanwhile by another thread
            except FreeError as exc:
                first = first or exc
        if first is not None:
            raise first

    # ------------------------------------------------------------------ pause / resume

    def pause(self, tag: str | None = None, *, discard_backup: bool = False) -> int:
        """Release the physical memory of ``tag``'s active allocations (every tag for None).

        Backed-up allocations are copied to host memory first. Returns how many
        allocations were paused. Raises :class:`PauseError` if a driver call fails; the
        allocations it lists as ``still_active`` are untouched and readable.

        ``discard_backup=True``: the contents are not needed (the caller rewrites them
        after ``resume``). Nothing is copied to host, even for allocations made with
        ``enable_cpu_backup=True``, and every backup the selected allocations still hold
        is freed: a retained one (``retain_cpu_backup``) and that of an allocation that was
        already paused. ``resume`` then maps fresh memory for all of them (zeroed on the host
        driver; undefined on a device, as for allocations without backup), and until then
        :meth:`get_cpu_backup` raises :class:`NoCpuBackup` for them. The allocations keep
        their backup setting: a later plain ``pause`` backs them up again.
        """
        with self._operation():
            targets = self._select(tag, "pause")
            todo = [a for a in targets if a.state is State.ACTIVE]
            leaked: list[str] = []
            if discard_backup:
                dropped = self._discard_paused_backups(targets, leaked)
                if dropped and not todo:
                    logger.info(
                        "pause(tag=%r, discard_backup=True): every allocation was already "
                        "paused; dropped the host backups of %d of them",
                        tag,
                        dropped,
                    )
                    self._raise_leaks(tag, [], leaked)
                    return 0
            if not self._report_skips("pause", tag, targets, todo, State.PAUSED):
                return 0
            driver = self.driver
            for device in sorted({a.device for a in todo}):
                driver.synchronize(device)  # kernels still writing must finish first
            done: list[int] = []
            for i, alloc in enumerate(todo):
                try:
                    leak = self._pause_one(alloc, discard=discard_backup)
                except Exception as exc:
                    still = [a.va for a in todo[i:] if a.state is State.ACTIVE]
                    raise PauseError(
                        f"pause(tag={tag!r}) failed at the allocation at 0x{alloc.va:x} "
                        f"(tag {alloc.tag!r}, {format_bytes(alloc.size)}): {exc}. "
                        f"{len(done)} allocation(s) were paused; {len(still)} are still "
                        "active with their data in place (nothing was lost). Fix the cause "
                        "and call pause again to pause the rest.",
                        paused=done,
                        still_active=still,
                    ) from exc
                done.append(alloc.va)
                if leak:
                    leaked.append(leak)
            logger.debug(
                "pause(tag=%r%s): paused %d allocation(s), %s",
                tag,
                ", discard_backup=True" if discard_backup else "",
                len(done),
                format_bytes(sum(a.size for a in todo)),
            )
            self._raise_leaks(tag, done, leaked)
            return len(done)

    def _discard_paused_backups(self, targets: list[Allocation], leaked: list[str]) -> int:
        """``pause(discard_backup=True)`` on allocations already paused: drop their backups."""
        dropped = 0
        for alloc in targets:
            if alloc.state is not State.PAUSED:
                continue
            alloc.backup_discarded = alloc.enable_cpu_backup
            if alloc.backup is None:
                continue
            dropped += 1
            try:
                self._drop_backup(alloc)
            except Exception as exc:
                logger.error("pause: freeing the host backup of 0x%x failed: %s", alloc.va, exc)
                leaked.append(f"0x{alloc.va:x} (host backup): {exc}")
        return dropped

    def _raise_leaks(self, tag: str | None, done: list[int], leaked: list[str]) -> None:
        if leaked:
            raise PauseError(
                f"pause(tag={tag!r}): every allocation is paused, but driver "
                f"{self.driver.name!r} could not free the memory of {len(leaked)} of them, "
                "which is lost until the process exits: " + "; ".join(leaked),
                paused=done,
                still_active=[],
            )

    def resume(self, tag: str | None = None) -> int:
        """Map fresh physical memory under ``tag``'s paused allocations; restore backups.

        Returns how many allocations were resumed. Raises :class:`ResumeOutOfMemory` when
        device memory runs out (or would go below the margin) and :class:`ResumeError` on
        other driver failures; either way the allocations not yet resumed stay PAUSED with
        their backups, and calling ``resume`` again finishes the job.
        """
        with self._operation():
            targets = self._select(tag, "resume")
            todo = [a for a in targets if a.state is State.PAUSED]
            if not self._report_skips("resume", tag, targets, todo, State.ACTIVE):
                return 0
            done: list[int] = []
            for i, alloc in enumerate(todo):
                try:
                    self._resume_one(alloc, tag)
                except ResumeOutOfMemory as exc:
                    rest = todo[i:]
                    exc.resumed = list(done)
                    exc.still_paused = [a.va for a in rest]
                    exc.args = (self._resume_oom_message(exc, tag, done, rest),)
                    raise
                except Exception as exc:
                    rest = todo[i:]
                    raise ResumeError(
                        f"resume(tag={tag!r}) failed at the allocation at 0x{alloc.va:x} "
                        f"(tag {alloc.tag!r}, {format_bytes(alloc.size)}): {exc}. "
                        f"{len(done)} allocation(s) were resumed and are active; "
                        f"{len(rest)} remain paused with their backups intact. Fix the cause "
                        "and call resume again.",
                        resumed=done,
                        still_paused=[a.va for a in rest],
                    ) from exc
                done.append(alloc.va)
            logger.debug("resume(tag=%r): resumed %d allocation(s)", tag, len(done))
            return len(done)

    # ------------------------------------------------------------------ backups

    def backup_pointer(self, address: int, nbytes: int) -> int | None:
        """Host address of the backup of ``[address, address + nbytes)`` or ``None``.

        ``None`` for an active allocation without a (retained) backup. Raises
        :class:`UnknownAllocation` when no allocation holds the range and
        :class:`NoCpuBackup` for a paused allocation that has no backup.
        """
        with self._lock:
            alloc, backup = self._backup_of(address, nbytes)
            return None if backup is None else backup.ptr + (address - alloc.va)

    def get_cpu_backup(
        self,
        tensor_or_address: torch.Tensor | int,
        zero_copy: bool = False,
        *,
        nbytes: int | None = None,
    ) -> torch.Tensor | None:
        """The host copy of a tensor's (or an address range's) bytes, as a CPU tensor.

        For a tensor: same dtype and shape (it must be contiguous). For an address: a
        ``uint8`` tensor of ``nbytes`` (default: to the end of the allocation). Returns
        ``None`` for an active allocation without a retained backup; raises
        :class:`NoCpuBackup` for a paused allocation made without backup.
        ``zero_copy=True`` returns a view of the backup buffer itself instead of a copy: the
        buffer stays alive as long as the view does (even past ``resume``), and with
        ``retain_cpu_backup`` the next ``pause`` overwrites it in place.
        """
        from npu_platform.memory import tensors

        if isinstance(tensor_or_address, int):
            address = tensor_or_address
            shape: tuple[int, ...] | None = None
            dtype = None
        else:
            tensor = tensor_or_address
            if not tensor.is_contiguous():
                raise ValueError(
                    f"get_cpu_backup needs a contiguous tensor (shape {tuple(tensor.shape)}, "
                    f"stride {tensor.stride()}); pass the base tensor it was allocated as"
                )
            address = int(tensor.data_ptr())
            nbytes = int(tensor.nbytes)
            shape = tuple(tensor.shape)
            dtype = tensor.dtype
        with self._lock:
            if nbytes is None:
                alloc = self._containing(address, 1)
                if alloc is None:
                    raise self._unknown_range(address, 1)
                nbytes = alloc.va + alloc.requested - address
            alloc, backup = self._backup_of(address, nbytes)
            if backup is None:
                return None
            self._lease(backup)  # keeps the buffer alive while we copy or view it
        ptr = backup.ptr + (address - alloc.va)
        release = self._make_release(backup)
        try:
            if zero_copy:
                view = tensors.tensor_at(ptr, nbytes, on_release=release)
                release = None  # the view owns the lease now
                return tensors.reinterpret(view, dtype, shape)
            out = tensors.host_empty(nbytes)
            if nbytes:
                ctypes.memmove(out.data_ptr(), ptr, nbytes)
            return tensors.reinterpret(out, dtype, shape)
        finally:
            if release is not None:
                release()

    # ------------------------------------------------------------------ inspection

    def allocations(self, tag: str | None = None) -> list[AllocationInfo]:
        """Snapshot of the table (one tag, or all), ordered by address."""
        with self._lock:
            return [
                self._table[va].info()
                for va in self._starts
                if tag is None or self._table[va].tag == tag
            ]

    def info(self, address: int) -> AllocationInfo:
        with self._lock:
            alloc = self._containing(address, 1)
            if alloc is None:
                raise self._unknown_range(address, 1)
            return alloc.info()

    def pool_key(self, address: int) -> PoolKey:
        with self._lock:
            alloc = self._table.get(address)
            if alloc is None:
                raise self._unknown_range(address, 1)
            return alloc.pool_key

    def tags(self) -> set[str]:
        """Tags that currently have allocations."""
        with self._lock:
            return {a.tag for a in self._table.values()}

    def stats(self) -> dict[str, dict[str, int]]:
        """Per tag: ``count``, ``active_bytes``, ``paused_bytes``, ``backup_bytes``."""
        out: dict[str, dict[str, int]] = {}
        with self._lock:
            for alloc in self._table.values():
                row = out.setdefault(
                    alloc.tag,
                    {"count": 0, "active_bytes": 0, "paused_bytes": 0, "backup_bytes": 0},
                )
                row["count"] += 1
                key = "active_bytes" if alloc.state is State.ACTIVE else "paused_bytes"
                row[key] += alloc.size
                if alloc.backup is not None:
                    row["backup_bytes"] += alloc.backup.size
        return out

    def check_consistency(self) -> list[str]:
        """Internal invariants; returns the violations (empty when all is well)."""
        problems: list[str] = []
        with self._lock:
            if sorted(self._table) != self._starts:
                problems.append("address index out of sync with the table")
            end = -1
            for va in self._starts:
                alloc = self._table.get(va)
                if alloc is None:
                    continue
                if va < end:
                    problems.append(f"0x{va:x} overlaps the previous allocation")
                end = va + alloc.size
                if alloc.va != va:
                    problems.append(f"0x{va:x}: record says address 0x{alloc.va:x}")
                if alloc.state is State.ACTIVE and alloc.handle is None:
                    problems.append(f"0x{va:x}: active without physical memory")
                if alloc.state is State.PAUSED and alloc.handle is not None:
                    problems.append(f"0x{va:x}: paused but still holds physical memory")
                if (
                    alloc.state is State.PAUSED
                    and alloc.enable_cpu_backup
                    and not alloc.backup_discarded
                    and (alloc.backup is None or not alloc.backup_valid)
                ):
                    problems.append(f"0x{va:x}: paused with backup enabled but no backup")
                if alloc.backup_discarded and (
                    alloc.state is not State.PAUSED or alloc.backup is not None
                ):
                    problems.append(f"0x{va:x}: backup discarded but active or still backed up")
                if alloc.backup is not None and not alloc.enable_cpu_backup:
                    problems.append(f"0x{va:x}: has a backup but backup is disabled")
                if alloc.state is State.ACTIVE and alloc.backup is not None and not self._retain:
                    problems.append(f"0x{va:x}: active with an unretained backup")
        return problems

    def __len__(self) -> int:
        return len(self._table)

    def __iter__(self) -> Iterator[AllocationInfo]:
        return iter(self.allocations())

    def __repr__(self) -> str:
        return f"MemoryManager(driver={self.driver.name!r}, allocations={len(self._table)})"

    # ------------------------------------------------------------------ internals

    @contextlib.contextmanager
    def _operation(self) -> Iterator[None]:
        """Hold the lock for an operation that walks the table and calls the driver."""
        self._lock.acquire()
        if self._busy:  # nested on the same thread: the outer operation finishes up
            try:
                yield
            finally:
                self._lock.release()
            return
        self._busy = True
        try:
            yield
        finally:
            self._busy = False
            pending, self._deferred = self._deferred, []
            self._lock.release()
            for address in pending:
                try:
                    self.free(address)
                except MemorySaverError as exc:
                    logger.error("deferred free(0x%x) failed: %s", address, exc)

    def _select(self, tag: str | None, op: str) -> list[Allocation]:
        # Allocation order: pause and resume work through allocations oldest first.
        if tag is None:
            return list(self._table.values())
        if not isinstance(tag, str):
            raise TypeError(f"{op}(tag=...) takes a string or None, got {type(tag).__name__}")
        targets = [a for a in self._table.values() if a.tag == tag]
        if not targets:
            if tag in self._tags_seen:
                logger.debug("%s(tag=%r): the tag has no live allocations; nothing to do", op, tag)
            else:
                known = ", ".join(sorted(map(repr, self._tags_seen))) or "none yet"
                logger.warning(
                    "%s(tag=%r): no allocation was ever made with this tag (known tags: %s); "
                    "nothing to do",
                    op,
                    tag,
                    known,
                )
        return targets

    @staticmethod
    def _report_skips(
        op: str,
        tag: str | None,
        targets: list[Allocation],
        todo: list[Allocation],
        already: State,
    ) -> bool:
        skipped = len(targets) - len(todo)
        if not targets:
            if tag is None:
                logger.debug("%s(tag=None): no allocations; nothing to do", op)
            return False
        if not todo:
            logger.warning(
                "%s(tag=%r) is a no-op: all %d allocation(s) are already %s",
                op,
                tag,
                len(targets),
                already.value,
            )
            return False
        if skipped:
            logger.info(
                "%s(tag=%r): %d allocation(s) already %s are left as they are",
                op,
                tag,
                skipped,
                already.value,
            )
        return True

    def _pause_one(self, alloc: Allocation, *, discard: bool = False) -> str | None:
        """Back up (if enabled and not ``discard``), unmap, free. Returns a leak
        description or None."""
        driver = self.driver
        if alloc.enable_cpu_backup and not discard:
            fresh = alloc.backup is None
            if fresh:
                ptr, handle = driver.host_alloc(alloc.requested)
                alloc.backup = HostBackup(ptr, handle, alloc.requested)
            backup = alloc.backup
            assert backup is not None
            alloc.backup_valid = False  # being overwritten from here on
            try:
                driver.copy_to_host(backup.ptr, alloc.va, alloc.requested)
                driver.synchronize(alloc.device)
            except BaseException:
                # The device copy is untouched; the partly written buffer is useless.
                self._quietly(self._drop_backup, alloc)
                raise
            alloc.backup_valid = True
        try:
            driver.unmap(alloc.va, alloc.size)
        except BaseException:
            # Still mapped, so it stays ACTIVE; an active allocation keeps a backup only
            # when backups are retained.
            if alloc.backup is not None and not self._retain:
                self._quietly(self._drop_backup, alloc)
            raise
        handle, alloc.handle = alloc.handle, None
        alloc.state = State.PAUSED
        leaks: list[str] = []
        if discard:
            alloc.backup_discarded = alloc.enable_cpu_backup
            if alloc.backup is not None:  # a retained backup: stale from now on
                try:
                    self._drop_backup(alloc)
                except Exception as exc:
                    logger.error("pause: freeing the host backup of 0x%x failed: %s", alloc.va, exc)
                    leaks.append(f"0x{alloc.va:x} (host backup): {exc}")
        try:
            driver.free(handle)
        except Exception as exc:
            logger.error("pause: freeing the physical memory of 0x%x failed: %s", alloc.va, exc)
            leaks.append(f"0x{alloc.va:x}: {exc}")
        return "; ".join(leaks) or None

    def _resume_one(self, alloc: Allocation, tag: str | None) -> None:
        driver = self.driver
        self._check_margin(alloc.size, alloc.device, alloc.tag, ResumeOutOfMemory, "resume")
        try:
            handle = driver.create(alloc.size, alloc.device)
        except OutOfDeviceMemory as exc:
            raise self._oom(
                ResumeOutOfMemory, "resume", tag=alloc.tag, device=alloc.device, needed=alloc.size
            ) from exc
        try:
            driver.map(alloc.va, alloc.size, handle, alloc.device)
        except BaseException:
            self._quietly(driver.free, handle)
            raise
        backup = alloc.backup if alloc.backup_valid else None
        if backup is not None:
            try:
                driver.copy_from_host(alloc.va, backup.ptr, alloc.requested)
                driver.synchronize(alloc.device)
            except BaseException:
                self._quietly(driver.unmap, alloc.va, alloc.size)
                self._quietly(driver.free, handle)
                raise
        alloc.handle = handle
        alloc.state = State.ACTIVE
        alloc.backup_discarded = False
        if alloc.backup is not None and not self._retain:
            self._drop_backup(alloc)

    def _check_margin(self, size: int, device: int, tag: str, error: type, op: str) -> None:
        margin = self._margin
        if not margin:
            return
        free, total = self.driver.mem_info(device)
        if free - size < margin:
            raise self._oom(error, op, tag=tag, device=device, needed=size, info=(free, total))

    def _oom(
        self,
        error: type,
        op: str,
        *,
        tag: str,
        device: int,
        needed: int,
        info: tuple[int, int] | None = None,
    ) -> Any:
        """An :class:`OutOfMemory` of type ``error`` with the device's memory state."""
        if info is None:
            try:
                info = self.driver.mem_info(device)
            except Exception:
                info = None
        free, total = info if info is not None else (None, None)
        margin = self._margin
        if free is None:
            state = "the driver cannot tell how much is free"
        else:
            state = f"{format_bytes(free)} of {format_bytes(total or 0)} is free"
        if margin:
            state += f" and memory_margin_bytes keeps {format_bytes(margin)} in reserve"
        kwargs = {
            "tag": tag,
            "device": device,
            "needed_bytes": needed,
            "free_bytes": free,
            "total_bytes": total,
            "margin_bytes": margin,
        }
        if error is ResumeOutOfMemory:
            # resume() rewrites the message once it knows what was and was not resumed.
            return ResumeOutOfMemory(state, resumed=[], still_paused=[], **kwargs)
        hint = "lower memory_margin_bytes or " if margin else ""
        return error(
            f"cannot {op} {format_bytes(needed)} for tag {tag!r} on device {device}: {state}. "
            f"To continue, {hint}free device memory (delete tensors, pause a tag, empty "
            "caches) or allocate less.",
            **kwargs,
        )

    def _resume_oom_message(
        self,
        exc: ResumeOutOfMemory,
        tag: str | None,
        done: list[int],
        rest: list[Allocation],
    ) -> str:
        first = rest[0]
        rest_bytes = sum(a.size for a in rest)
        backed = sum(1 for a in rest if a.backup is not None and a.backup_valid)
        backups = f", {backed} of them with their CPU backups intact" if backed else ""
        hint = "lower memory_margin_bytes or " if exc.margin_bytes else ""
        return (
            f"resume(tag={tag!r}) ran out of device memory on device {exc.device}: the "
            f"allocation at 0x{first.va:x} (tag {first.tag!r}) needs "
            f"{format_bytes(exc.needed_bytes)} but {exc.args[0]}. {len(done)} allocation(s) "
            f"were resumed by this call and are active; {len(rest)} "
            f"({format_bytes(rest_bytes)}) remain paused{backups}. To continue, {hint}free "
            f"device memory (delete tensors, pause another tag, empty caches) and call "
            f"resume(tag={tag!r}) again to resume the rest."
        )

    def _containing(self, address: int, nbytes: int) -> Allocation | None:
        i = bisect.bisect_right(self._starts, address) - 1
        if i < 0:
            return None
        alloc = self._table[self._starts[i]]
        if address + max(nbytes, 1) <= alloc.va + max(alloc.requested, 1):
            return alloc
        return None

    def _unknown_range(self, address: int, nbytes: int) -> UnknownAllocation:
        return UnknownAllocation(
            f"no allocation of this memory manager holds [0x{address:x}, "
            f"0x{address + nbytes:x}); was the tensor allocated inside a region?"
        )

    def _backup_of(self, address: int, nbytes: int) -> tuple[Allocation, HostBackup | None]:
        alloc = self._containing(address, nbytes)
        if alloc is None:
            raise self._unknown_range(address, nbytes)
        backup = alloc.backup if alloc.backup_valid else None
        if alloc.state is State.PAUSED and backup is None and alloc.backup_discarded:
            raise NoCpuBackup(
                f"the allocation at 0x{alloc.va:x} (tag {alloc.tag!r}) is paused and has no "
                "CPU backup: it was paused with discard_backup=True, which drops the contents "
                "(resume maps fresh memory for the caller to fill)."
            )
        if alloc.state is State.PAUSED and backup is None:
            raise NoCpuBackup(
                f"the allocation at 0x{alloc.va:x} (tag {alloc.tag!r}) is paused and has no "
                "CPU backup: it was allocated without enable_cpu_backup=True, so its contents "
                "were discarded by pause. Allocate it inside region(..., "
                "enable_cpu_backup=True) to keep them."
            )
        return alloc, backup

    @staticmethod
    def _lease(backup: HostBackup) -> None:
        with backup._lock:
            backup.leases += 1

    def _make_release(self, backup: HostBackup) -> Callable[[], None]:
        driver = self.driver

        def release() -> None:
            with backup._lock:
                backup.leases -= 1
                free_now = backup.orphaned and backup.leases == 0
            if free_now:
                driver.host_free(backup.handle)

        return release

    def _drop_backup(self, alloc: Allocation) -> None:
        """Detach the backup from ``alloc``; free it now, or when its last view dies."""
        backup = alloc.backup
        assert backup is not None, "callers drop only a backup that exists"
        alloc.backup = None
        alloc.backup_valid = False
        with backup._lock:
            backup.orphaned = True
            free_now = backup.leases == 0
        if free_now:
            self.driver.host_free(backup.handle)

    @staticmethod
    def _quietly(call: Callable[..., object], *args: object) -> None:
        try:
            call(*args)
        except Exception as exc:  # clean-up after another error: report, do not mask it
            name = getattr(call, "__name__", repr(call))
            logger.error("clean-up call %s%r failed: %s", name, args, exc)
