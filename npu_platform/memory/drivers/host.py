"""Host (CPU) memory driver: the driver Protocol on Linux virtual memory.

It stands in for a device driver in tests and benchmarks, with the same life cycle as
ACL's and CUDA's virtual memory API:

* physical memory is a ``memfd`` of the allocation's size (``create``), populated up front
  with ``fallocate`` so that creating it really takes memory and running out is reported at
  creation time, not as a ``SIGBUS`` on first touch;
* ``reserve`` is an inaccessible (``PROT_NONE``) anonymous mapping aligned to the
  granularity; ``map`` maps the memfd over (part of) it with ``MAP_FIXED | MAP_SHARED``;
  ``unmap`` puts an inaccessible anonymous mapping back over the range, so the range stays
  reserved and the pages are no longer referenced by this mapping; ``free`` closes the
  memfd, which hands its pages back to the kernel; ``release`` unmaps the reservation.

A memory limit can be set (constructor or :attr:`HostDriver.limit_bytes`) to make it behave
like a device with that much memory: ``create`` raises :class:`OutOfDeviceMemory` past it
and :meth:`mem_info` reports against it.

The driver checks the order of calls (map only inside a reservation, free only unmapped
memory, nothing twice) and raises :class:`DriverError` on misuse, which makes it a strict
partner for testing the manager. ``device`` arguments are accepted and ignored: every
device shares the host's memory (the limit is one budget for all of them).
"""

from __future__ import annotations

import bisect
import ctypes
import errno as errno_mod
import os
import threading

from npu_platform.hostinfo import host_memory
from npu_platform.memory.driver import DriverError, OutOfDeviceMemory
from npu_platform.memory.units import round_up

__all__ = ["HostDriver"]

_PROT_NONE = 0x0
_PROT_READ = 0x1
_PROT_WRITE = 0x2
_MAP_SHARED = 0x01
_MAP_PRIVATE = 0x02
_MAP_FIXED = 0x10
_MAP_ANONYMOUS = 0x20
_MAP_NORESERVE = 0x4000
_MADV_HUGEPAGE = 14
_MADV_POPULATE_READ = 22  # Linux 5.14+
_MFD_CLOEXEC = 0x0001
_MAP_FAILED = ctypes.c_void_p(-1).value

_THP_SIZE = 2 << 20
DEFAULT_GRANULARITY = 2 << 20  # the same unit as ACL's physical memory


def _load_libc() -> ctypes.CDLL:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [
        ctypes.c_void_p,
        ctypes.c_size_t,
        ctypes.c_int,
        ctypes.c_int,
        ctypes.c_int,
        ctypes.c_long,
    ]
    libc.munmap.restype = ctypes.c_int
    libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    libc.madvise.restype = ctypes.c_int
    libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    libc.memfd_create.restype = ctypes.c_int
    libc.memfd_create.argtypes = [ctypes.c_char_p, ctypes.c_uint]
    libc.ftruncate.restype = ctypes.c_int
    libc.ftruncate.argtypes = [ctypes.c_int, ctypes.c_long]
    libc.fallocate.restype = ctypes.c_int
    libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_long, ctypes.c_long]
    libc.close.restype = ctypes.c_int
    libc.close.argtypes = [ctypes.c_int]
    return libc


_libc = _load_libc()


def _errno_text(err: int) -> str:
    name = errno_mod.errorcode.get(err, str(err))
    return f"{name}: {os.strerror(err)}"


def _fail(call: str, what: str) -> DriverError:
    err = ctypes.get_errno()
    return DriverError(f"host driver: {call} failed {what} ({_errno_text(err)})", code=err)


class _Physical:
    """One piece of physical memory: a memfd and its size."""

    __slots__ = ("fd", "mapped_at", "size")

    def __init__(self, fd: int, size: int) -> None:
        self.fd = fd
        self.size = size
        self.mapped_at: set[int] = set()

    def __repr__(self) -> str:
        return f"<host physical fd={self.fd} size={self.size}>"


class _HostBuffer:
    """Host memory for backups: an anonymous private mapping (huge pages where allowed)."""

    __slots__ = ("base", "length", "ptr", "size")

    def __init__(self, base: int, length: int, ptr: int, size: int) -> None:
        self.base = base
        self.length = length
        self.ptr = ptr
        self.size = size

    def __repr__(self) -> str:
        return f"<host buffer 0x{self.ptr:x} size={self.size}>"


class HostDriver:
    """Linux host-memory implementation of :class:`npu_platform.memory.driver.Driver`.

    ``limit_bytes``: make the "device" this big (``None``: the machine's memory).
    ``granularity``: size and alignment unit (a multiple of the page size; default 2 MiB).
    ``populate``: allocate pages at ``create`` and enter them into the page tables at ``map``
    (default); with
    ``False`` pages are taken lazily on first touch, which is faster but means RSS only
    grows when memory is written and running out of memory shows up as ``SIGBUS``.
    """

    name = "host"

    def __init__(
        self,
        *,
        limit_bytes: int | None = None,
        granularity: int = DEFAULT_GRANULARITY,
        populate: bool = True,
    ) -> None:
        page = os.sysconf("SC_PAGE_SIZE")
        if granularity <= 0 or granularity % page:
            raise ValueError(
                f"host driver granularity must be a positive multiple of the page size "
                f"({page}); got {granularity}"
            )
        self._granularity = granularity
        self._page = page
        self._populate = populate
        self._lock = threading.Lock()
        self._limit: int | None = None
        self._used = 0
        self._reserved: dict[int, int] = {}  # start -> size
        self._mapped: dict[int, tuple[int, _Physical]] = {}  # va -> (size, physical)
        self._mapped_starts: list[int] = []  # sorted keys of _mapped
        self._physical: set[_Physical] = set()  # live physical memory
        self._host_buffers: dict[int, _HostBuffer] = {}  # ptr -> buffer
        self.limit_bytes = limit_bytes

    # -- configuration ---------------------------------------------------------------

    @property
    def limit_bytes(self) -> int | None:
        """The simulated device size in bytes, or ``None`` for the machine's memory."""
        return self._limit

    @limit_bytes.setter
    def limit_bytes(self, value: int | None) -> None:
        if value is not None and value < 0:
            raise ValueError(f"limit_bytes must be >= 0 or None, got {value}")
        with self._lock:
            self._limit = value

    @property
    def used_bytes(self) -> int:
        """Bytes of physical memory created and not yet freed."""
        return self._used

    @property
    def reserved_bytes(self) -> int:
        return sum(self._reserved.values())

    @property
    def host_bytes(self) -> int:
        """Bytes of host (backup) memory handed out by :meth:`host_alloc` and not freed."""
        return sum(b.size for b in self._host_buffers.values())

    # -- Protocol --------------------------------------------------------------------

    def granularity(self, device: int) -> int:
        return self._granularity

    def reserve(self, size: int, device: int) -> int:
        self._check_size("reserve", size)
        align = self._granularity
        span = size + align
        base = _libc.mmap(
            None, span, _PROT_NONE, _MAP_PRIVATE | _MAP_ANONYMOUS | _MAP_NORESERVE, -1, 0
        )
        if base in (None, _MAP_FAILED):
            raise _fail("mmap(PROT_NONE)", f"reserving {size} bytes of address space")
        start = round_up(base, align)
        head = start - base
        tail = span - head - size
        if head:
            _libc.munmap(base, head)
        if tail:
            _libc.munmap(start + size, tail)
        with self._lock:
            self._reserved[start] = size
        return start

    def release(self, va: int, size: int) -> None:
        with self._lock:
            reserved = self._reserved.get(va)
            if reserved is None:
                raise DriverError(
                    f"host driver: release(0x{va:x}) of a range that is not reserved "
                    "(released twice, or never reserved)"
                )
            if reserved != size:
                raise DriverError(
                    f"host driver: release(0x{va:x}, {size}) but {reserved} bytes were reserved"
                )
            for mapped_va, (mapped_size, _) in self._mapped.items():
                if va <= mapped_va < va + reserved:
                    raise DriverError(
                        f"host driver: release(0x{va:x}) while 0x{mapped_va:x} "
                        f"({mapped_size} bytes) is still mapped; unmap first"
                    )
            del self._reserved[va]
        if _libc.munmap(va, size) != 0:
            raise _fail("munmap", f"releasing the reservation at 0x{va:x}")

    def create(self, size: int, device: int) -> object:
        self._check_size("create", size)
        with self._lock:
            if self._limit is not None and self._used + size > self._limit:
                free = max(self._limit - self._used, 0)
                raise OutOfDeviceMemory(
                    f"host driver: cannot create {size} bytes of physical memory on device "
                    f"{device}: {free} of the {self._limit}-byte limit is free",
                    code=errno_mod.ENOMEM,
                )
            self._used += size
        try:
            fd = _libc.memfd_create(b"npu_platform", _MFD_CLOEXEC)
            if fd < 0:
                raise _fail("memfd_create", f"creating {size} bytes of physical memory")
            try:
                if _libc.ftruncate(fd, size) != 0:
                    raise _fail("ftruncate", f"sizing physical memory to {size} bytes")
                if self._populate and _libc.fallocate(fd, 0, 0, size) != 0:
                    err = ctypes.get_errno()
                    if err in (errno_mod.ENOSPC, errno_mod.ENOMEM):
                        raise OutOfDeviceMemory(
                            f"host driver: the kernel has no memory for {size} bytes "
                            f"({_errno_text(err)})",
                            code=err,
                        )
                    raise _fail("fallocate", f"allocating {size} bytes")
            except BaseException:
                _libc.close(fd)
                raise
        except BaseException:
            with self._lock:
                self._used -= size
            raise
        handle = _Physical(fd, size)
        with self._lock:
            self._physical.add(handle)
        return handle

    def free(self, handle: object) -> None:
        phys = self._physical_of(handle, "free")
        with self._lock:
            if phys not in self._physical:
                raise DriverError(f"host driver: free({phys!r}) of memory already freed")
            if phys.mapped_at:
                where = ", ".join(f"0x{va:x}" for va in sorted(phys.mapped_at))
                raise DriverError(
                    f"host driver: free({phys!r}) while it is still mapped at {where}; unmap first"
                )
            self._physical.discard(phys)
            self._used -= phys.size
        if _libc.close(phys.fd) != 0:
            raise _fail("close", f"freeing physical memory fd {phys.fd}")
        phys.fd = -1

    def map(self, va: int, size: int, handle: object, device: int) -> None:
        phys = self._physical_of(handle, "map")
        self._check_size("map", size)
        with self._lock:
            if phys not in self._physical:
                raise DriverError(f"host driver: map of freed memory {phys!r}")
            if size > phys.size:
                raise DriverError(
                    f"host driver: map of {size} bytes from {phys!r}, which has {phys.size}"
                )
            if not self._inside_reservation(va, size):
                raise DriverError(
                    f"host driver: map at 0x{va:x} ({size} bytes) outside any reserved range"
                )
            for mapped_va, (mapped_size, _) in self._mapped.items():
                if mapped_va < va + size and va < mapped_va + mapped_size:
                    raise DriverError(
                        f"host driver: map at 0x{va:x} overlaps the mapping at 0x{mapped_va:x}"
                    )
            flags = _MAP_SHARED | _MAP_FIXED
            got = _libc.mmap(va, size, _PROT_READ | _PROT_WRITE, flags, phys.fd, 0)
            if got in (None, _MAP_FAILED) or got != va:
                raise _fail("mmap(MAP_FIXED|MAP_SHARED)", f"mapping {size} bytes at 0x{va:x}")
            self._mapped[va] = (size, phys)
            bisect.insort(self._mapped_starts, va)
            phys.mapped_at.add(va)
        if self._populate:
            # Enter the (already allocated) pages into the page tables now, so the mapping
            # shows in RSS like device memory in use. Several times faster than
            # MAP_POPULATE here; shmem mappings need no write faults for dirty tracking.
            # Failure (kernels before 5.14) only means pages get mapped on first touch.
            _libc.madvise(va, size, _MADV_POPULATE_READ)

    def unmap(self, va: int, size: int) -> None:
        with self._lock:
            entry = self._mapped.get(va)
            if entry is None:
                raise DriverError(f"host driver: unmap(0x{va:x}) of a range that is not mapped")
            mapped_size, phys = entry
            if mapped_size != size:
                raise DriverError(
                    f"host driver: unmap(0x{va:x}, {size}) but {mapped_size} bytes are mapped"
                )
            got = _libc.mmap(
                va,
                size,
                _PROT_NONE,
                _MAP_PRIVATE | _MAP_ANONYMOUS | _MAP_FIXED | _MAP_NORESERVE,
                -1,
                0,
            )
            if got in (None, _MAP_FAILED) or got != va:
                raise _fail("mmap(PROT_NONE, MAP_FIXED)", f"unmapping 0x{va:x}")
            del self._mapped[va]
            self._mapped_starts.pop(bisect.bisect_left(self._mapped_starts, va))
            phys.mapped_at.discard(va)

    def copy_to_host(self, host_ptr: int, va: int, size: int) -> None:
        if size:
            self._check_mapped("copy_to_host", va, size)
            ctypes.memmove(host_ptr, va, size)

    def copy_from_host(self, va: int, host_ptr: int, size: int) -> None:
        if size:
            self._check_mapped("copy_from_host", va, size)
            ctypes.memmove(va, host_ptr, size)

    def host_alloc(self, size: int) -> tuple[int, object]:
        if size <= 0:
            raise DriverError(f"host driver: host_alloc of {size} bytes")
        # Align to the huge-page size and ask for transparent huge pages: first touch of
        # fresh memory is then one fault per 2 MiB instead of one per 4 KiB.
        length = round_up(size, self._page)
        huge = length >= _THP_SIZE
        span = length + (_THP_SIZE if huge else 0)
        base = _libc.mmap(
            None, span, _PROT_READ | _PROT_WRITE, _MAP_PRIVATE | _MAP_ANONYMOUS, -1, 0
        )
        if base in (None, _MAP_FAILED):
            err = ctypes.get_errno()
            if err == errno_mod.ENOMEM:
                raise OutOfDeviceMemory(
                    f"host driver: no host memory for a {size}-byte backup buffer "
                    f"({_errno_text(err)})",
                    code=err,
                )
            raise _fail("mmap", f"allocating a {size}-byte host buffer")
        ptr = round_up(base, _THP_SIZE) if huge else base
        if huge:
            _libc.madvise(ptr, length, _MADV_HUGEPAGE)  # advisory; failure is harmless
        buf = _HostBuffer(base, span, ptr, size)
        with self._lock:
            self._host_buffers[ptr] = buf
        return ptr, buf

    def host_free(self, handle: object) -> None:
        if not isinstance(handle, _HostBuffer):
            raise DriverError(f"host driver: host_free of {handle!r}, not a host_alloc handle")
        with self._lock:
            if self._host_buffers.get(handle.ptr) is not handle:
                raise DriverError(f"host driver: host_free({handle!r}) twice")
            del self._host_buffers[handle.ptr]
        if _libc.munmap(handle.base, handle.length) != 0:
            raise _fail("munmap", f"freeing host buffer 0x{handle.ptr:x}")

    def synchronize(self, device: int) -> None:
        return None  # every copy is synchronous

    def mem_info(self, device: int) -> tuple[int, int]:
        limit = self._limit
        if limit is not None:
            return max(limit - self._used, 0), limit
        return host_memory()

    # -- introspection (tests) -------------------------------------------------------

    def mapped_ranges(self) -> dict[int, int]:
        """``{va: size}`` of every live mapping."""
        with self._lock:
            return {va: size for va, (size, _) in self._mapped.items()}

    def reserved_ranges(self) -> dict[int, int]:
        with self._lock:
            return dict(self._reserved)

    # -- helpers ---------------------------------------------------------------------

    def _check_size(self, call: str, size: int) -> None:
        if size <= 0 or size % self._granularity:
            raise DriverError(
                f"host driver: {call} of {size} bytes; sizes must be positive multiples of "
                f"the granularity ({self._granularity})"
            )

    def _check_mapped(self, call: str, va: int, size: int) -> None:
        """Device ranges must be mapped: a DriverError here beats a segfault in memmove."""
        with self._lock:
            i = bisect.bisect_right(self._mapped_starts, va) - 1
            if i >= 0:
                start = self._mapped_starts[i]
                if va + size <= start + self._mapped[start][0]:
                    return
        raise DriverError(
            f"host driver: {call} of {size} bytes at 0x{va:x}, which is not (entirely) "
            "mapped device memory (paused, freed, or not from this driver)"
        )

    def _inside_reservation(self, va: int, size: int) -> bool:
        return any(
            start <= va and va + size <= start + length for start, length in self._reserved.items()
        )

    @staticmethod
    def _physical_of(handle: object, call: str) -> _Physical:
        if not isinstance(handle, _Physical):
            raise DriverError(f"host driver: {call} of {handle!r}, not a handle from create()")
        return handle

    def __repr__(self) -> str:
        limit = "none" if self._limit is None else str(self._limit)
        return (
            f"HostDriver(granularity={self._granularity}, limit={limit}, used={self._used}, "
            f"populate={self._populate})"
        )
