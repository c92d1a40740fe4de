"""The one narrow protocol every memory driver (ACL, CUDA, host) implements.

A driver knows nothing about tags, regions or backups: it reserves virtual address ranges,
creates and frees physical memory, maps and unmaps, copies to and from host memory and
reports memory info. The manager (``npu_platform.memory.manager``) builds everything else on
top. Addresses are plain ``int``; physical handles are opaque objects owned by the driver.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from npu_platform.errors import NPUPlatformError


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
