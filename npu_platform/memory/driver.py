"""The one narrow protocol every memory driver (ACL, CUDA, host) implements.

A driver knows nothing about tags, regions or backups: it reserves virtual address ranges,
creates and frees physical memory, maps and unmaps, copies to and from host memory and
reports memory info. The manager (``npu_platform.memory.manager``) builds everything else on
top. Addresses are plain ``int``; physical handles are opaque objects owned by the driver.

:class:`LibraryDriver` is the common base of the drivers that reach a vendor library's
virtual-memory API through ctypes (ACL and CUDA); the host driver stands alone.
"""

from __future__ import annotations

import abc
import bisect
import contextlib
import ctypes
import threading
from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

from npu_platform.errors import NPUPlatformError
from npu_platform.memory.units import round_up_size


class DriverError(NPUPlatformError, RuntimeError):
    """A driver call failed; the message names the call and its error code."""

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


class OutOfDeviceMemory(DriverError, MemoryError):
    """Physical memory could not be created because the device is out of memory."""


@runtime_checkable
class Driver(Protocol):
    name: str

    def granularity(self, device: int) -> int:
        """Size and alignment unit of physical allocations and mappings, in bytes."""

    def reserve(self, size: int, device: int) -> int:
        """Reserve ``size`` bytes (a granularity multiple) of addresses; return the start."""

    def release(self, va: int, size: int) -> None:
        """Give back a reserved range; everything in it must be unmapped first."""

    def create(self, size: int, device: int) -> object:
        """Create physical memory; raise :class:`OutOfDeviceMemory` when there is none."""

    def free(self, handle: object) -> None:
        """Free physical memory created by :meth:`create` (it must be unmapped)."""

    def map(self, va: int, size: int, handle: object, device: int) -> None:
        """Map ``handle`` at ``va`` and make it readable and writable from ``device``."""

    def unmap(self, va: int, size: int) -> None:
        """Unmap the range mapped at ``va``."""

    def copy_to_host(self, host_ptr: int, va: int, size: int) -> None:
        """Copy ``size`` bytes from device address ``va`` to host address ``host_ptr``."""

    def copy_from_host(self, va: int, host_ptr: int, size: int) -> None:
        """Copy ``size`` bytes from host address ``host_ptr`` to device address ``va``."""

    def host_alloc(self, size: int) -> tuple[int, object]:
        """Host memory for backups, pinned where the device has pinning: (address, handle)."""

    def host_free(self, handle: object) -> None:
        """Free host memory from :meth:`host_alloc`."""

    def synchronize(self, device: int) -> None:
        """Wait until every copy issued to ``device`` has finished."""

    def mem_info(self, device: int) -> tuple[int, int]:
        """(free, total) bytes of physical memory on ``device``."""


# --------------------------------------------------------------------------- library drivers


def declare(
    lib: ctypes.CDLL,
    name: str,
    signature: tuple[str, tuple[str, ...]],
    c_types: Mapping[str, Any],
) -> Any:
    """``lib.name`` with restype and argtypes set from a C signature.

    ``signature`` is ``(return type, parameter types)`` spelled as in the C header; each
    spelling is looked up in ``c_types``. Raises ``AttributeError`` when ``lib`` does not
    export ``name``.
    """
    fn = getattr(lib, name)
    restype, params = signature
    fn.restype = c_types[restype]
    fn.argtypes = [c_types[p] for p in params]
    return fn


class PhysicalMemory:
    """Physical memory from :meth:`LibraryDriver.create`: the library's handle (an integer),
    its size (rounded to the granularity) and device. Each driver has its own subclass."""

    __slots__ = ("device", "freed", "handle", "size")

    def __init__(self, handle: int, size: int, device: int) -> None:
        self.handle = handle
        self.size = size
        self.device = device
        self.freed = False

    def __repr__(self) -> str:
        state = " freed" if self.freed else ""
        return (
            f"<{type(self).__name__} {self.handle:#x} {self.size} bytes device {self.device}"
            f"{state}>"
        )


class HostMemory:
    """Host memory from :meth:`LibraryDriver.host_alloc`: its address and size."""

    __slots__ = ("freed", "ptr", "size")

    def __init__(self, ptr: int, size: int) -> None:
        self.ptr = ptr
        self.size = size
        self.freed = False

    def __repr__(self) -> str:
        return f"<HostMemory {self.ptr:#x} {self.size} bytes{' freed' if self.freed else ''}>"


class RangeIndex:
    """Address ranges ``[start, start + size)``, one value each; finds the range of an address."""

    def __init__(self) -> None:
        self._starts: list[int] = []
        self._items: dict[int, tuple[int, int]] = {}
        self._lock = threading.Lock()

    def add(self, start: int, size: int, value: int) -> None:
        with self._lock:
            if start not in self._items:
                bisect.insort(self._starts, start)
            self._items[start] = (size, value)

    def pop(self, start: int) -> tuple[int, int] | None:
        with self._lock:
            item = self._items.pop(start, None)
            if item is not None:
                del self._starts[bisect.bisect_left(self._starts, start)]
            return item

    def get(self, start: int) -> tuple[int, int] | None:
        return self._items.get(start)

    def find(self, address: int) -> int | None:
        """The value of the range holding ``address``, or ``None``."""
        with self._lock:
            i = bisect.bisect_right(self._starts, address) - 1
            if i < 0:
                return None
            start = self._starts[i]
            size, value = self._items[start]
            return value if address < start + size else None

    def __len__(self) -> int:
        return len(self._items)


class LibraryDriver(abc.ABC):
    """A :class:`Driver` over a vendor library's virtual-memory API, called through ctypes.

    The ACL (``libascendcl.so``) and CUDA (``libcuda.so.1``) drivers share everything but
    the calls themselves: loading the library and declaring its prototypes, error checking,
    granularity caching, rounding sizes up to the granularity, remembering which device
    each reserved and mapped range belongs to (so that calls naming no device run on the
    right one), the checks on physical and host handles, and running every call with the
    right device current. A subclass supplies:

    * class attributes: :attr:`name`, :attr:`api` (for messages), :attr:`SIGNATURES` /
      :attr:`OPTIONAL_SIGNATURES` and :attr:`C_TYPES` (prototypes as spelled in the C
      header), :attr:`physical_type` (the :class:`PhysicalMemory` subclass that
      :meth:`create` returns), :attr:`LOAD_FAILURE` / :attr:`MISSING_SYMBOL` (message
      templates), :attr:`GRANULARITY_CALL` / :attr:`HOST_ALLOC_CALL` (call names for
      messages about bad results);
    * :meth:`_error` (a return code as an exception) and :meth:`_on` (a context manager
      making a device current);
    * the ``_do_*`` methods: one library call each, run with the right device already
      current, raising through :meth:`_call`.
    """

    name: str
    api: str
    SUCCESS = 0
    SIGNATURES: dict[str, tuple[str, tuple[str, ...]]]
    OPTIONAL_SIGNATURES: dict[str, tuple[str, tuple[str, ...]]] = {}
    C_TYPES: dict[str, Any]
    physical_type: type[PhysicalMemory]
    #: ``str.format`` templates with ``library`` and ``error`` / ``symbol``.
    LOAD_FAILURE: str
    MISSING_SYMBOL: str
    GRANULARITY_CALL: str
    HOST_ALLOC_CALL: str

    def __init__(self, library: str, *, default_device: int = 0) -> None:
        """Load ``library`` and declare :attr:`SIGNATURES` (all required) and
        :attr:`OPTIONAL_SIGNATURES` (used when present); raise :class:`DriverError` when the
        library cannot be loaded or lacks a required call."""
        self.library = library
        try:
            self._lib = ctypes.CDLL(library)
        except OSError as exc:
            raise DriverError(self.LOAD_FAILURE.format(library=library, error=exc)) from exc
        self._fn: dict[str, Any] = {}
        for fname, signature in self.SIGNATURES.items():
            try:
                self._fn[fname] = declare(self._lib, fname, signature, self.C_TYPES)
            except AttributeError as exc:
                raise DriverError(
                    self.MISSING_SYMBOL.format(library=library, symbol=fname)
                ) from exc
        for fname, signature in self.OPTIONAL_SIGNATURES.items():
            with contextlib.suppress(AttributeError):
                self._fn[fname] = declare(self._lib, fname, signature, self.C_TYPES)
        self.default_device = default_device
        self._granularity: dict[int, int] = {}
        self._reserved = RangeIndex()  # va -> (size, device)
        self._mapped = RangeIndex()  # va -> (size, device)

    # -- what a subclass supplies -----------------------------------------------------------

    @abc.abstractmethod
    def _error(self, call: str, rc: int) -> DriverError:
        """The exception for ``call`` returning ``rc`` (:class:`OutOfDeviceMemory` for OOM)."""

    @abc.abstractmethod
    def _on(self, device: int | None) -> contextlib.AbstractContextManager[None]:
        """Run the body with ``device`` current (``None``: any device, else the default)."""

    @abc.abstractmethod
    def _do_granularity(self, device: int) -> int: ...

    @abc.abstractmethod
    def _do_reserve(self, size: int) -> int: ...

    @abc.abstractmethod
    def _do_release(self, va: int, size: int) -> None: ...

    @abc.abstractmethod
    def _do_create(self, size: int, device: int) -> Any: ...

    @abc.abstractmethod
    def _do_free(self, handle: Any) -> None: ...

    @abc.abstractmethod
    def _do_map(self, va: int, size: int, handle: Any, device: int) -> None: ...

    @abc.abstractmethod
    def _do_unmap(self, va: int, size: int) -> None: ...

    @abc.abstractmethod
    def _do_copy_to_host(self, host_ptr: int, va: int, size: int) -> None: ...

    @abc.abstractmethod
    def _do_copy_from_host(self, va: int, host_ptr: int, size: int) -> None: ...

    @abc.abstractmethod
    def _do_host_alloc(self, size: int) -> int: ...

    @abc.abstractmethod
    def _do_host_free(self, ptr: int) -> None: ...

    @abc.abstractmethod
    def _do_synchronize(self) -> None: ...

    @abc.abstractmethod
    def _do_mem_info(self) -> tuple[int, int]: ...

    def _unrecorded_size(self, size: int) -> int:
        """The size :meth:`release` passes for a range :meth:`reserve` did not record."""
        return size

    # -- helpers ---------------------------------------------------------------------------

    def _call(self, call: str, *args: object) -> None:
        rc = self._fn[call](*args)
        if rc != self.SUCCESS:
            raise self._error(call, rc)

    def _round(self, size: int, device: int) -> int:
        return round_up_size(size, self.granularity(device))

    # -- Driver protocol -------------------------------------------------------------------

    def granularity(self, device: int) -> int:
        cached = self._granularity.get(device)
        if cached is not None:
            return cached
        with self._on(device):
            value = self._do_granularity(device)
        if value <= 0:
            raise DriverError(f"{self.GRANULARITY_CALL} returned {value}")
        self._granularity[device] = value
        return value

    def reserve(self, size: int, device: int) -> int:
        size = self._round(size, device)
        with self._on(device):
            va = self._do_reserve(size)
        self._reserved.add(va, size, device)
        return va

    def release(self, va: int, size: int) -> None:
        entry = self._reserved.get(va)
        device = entry[1] if entry is not None else None
        size = entry[0] if entry is not None else self._unrecorded_size(size)
        with self._on(device):
            self._do_release(va, size)
        self._reserved.pop(va)

    def create(self, size: int, device: int) -> Any:
        size = self._round(size, device)
        with self._on(device):
            return self._do_create(size, device)

    def free(self, handle: object) -> None:
        if not isinstance(handle, self.physical_type):
            raise DriverError(
                f"not {_article(self.api)} {self.api} physical allocation: {handle!r}"
            )
        if handle.freed:
            raise DriverError(f"{handle!r} was already freed")
        with self._on(handle.device):
            self._do_free(handle)
        handle.freed = True

    def map(self, va: int, size: int, handle: object, device: int) -> None:
        if not isinstance(handle, self.physical_type) or handle.freed:
            raise DriverError(f"not a live {self.api} physical allocation: {handle!r}")
        size = self._round(size, device)
        with self._on(device):
            self._do_map(va, size, handle, device)
        self._mapped.add(va, size, device)

    def unmap(self, va: int, size: int) -> None:
        entry = self._mapped.get(va)
        device = entry[1] if entry is not None else None
        if entry is not None:
            size = entry[0]
        with self._on(device):
            self._do_unmap(va, size)
        self._mapped.pop(va)

    def copy_to_host(self, host_ptr: int, va: int, size: int) -> None:
        with self._on(self._mapped.find(va)):
            self._do_copy_to_host(host_ptr, va, size)

    def copy_from_host(self, va: int, host_ptr: int, size: int) -> None:
        with self._on(self._mapped.find(va)):
            self._do_copy_from_host(va, host_ptr, size)

    def host_alloc(self, size: int) -> tuple[int, object]:
        if size <= 0:
            raise ValueError(f"size must be positive, got {size}")
        with self._on(None):
            ptr = self._do_host_alloc(size)
        if not ptr:
            raise DriverError(f"{self.HOST_ALLOC_CALL} returned NULL")
        return ptr, HostMemory(ptr, size)

    def host_free(self, handle: object) -> None:
        if not isinstance(handle, HostMemory):
            raise DriverError(f"not host memory from {type(self).__name__}.host_alloc: {handle!r}")
        if handle.freed:
            raise DriverError(f"{handle!r} was already freed")
        with self._on(None):
            self._do_host_free(handle.ptr)
        handle.freed = True

    def synchronize(self, device: int) -> None:
        with self._on(device):
            self._do_synchronize()

    def mem_info(self, device: int) -> tuple[int, int]:
        with self._on(device):
            return self._do_mem_info()


def _article(word: str) -> str:
    """``"an"`` before a vowel sound as spelled (``ACL``), else ``"a"`` (``CUDA``)."""
    return "an" if word[:1].upper() in "AEIOU" else "a"
