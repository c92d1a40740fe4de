"""Errors raised by the memory manager and the torch_memory_saver facade.

Every error says what went wrong and what to do; none of them is fatal to the process, and
each leaves the allocation table in a consistent, documented state.
"""

from __future__ import annotations

from npu_platform.errors import NPUPlatformError


def format_bytes(n: int) -> str:
    """``1536`` -> ``'1.50 KiB (1536 bytes)'``; plain bytes below 1 KiB."""
    if n < 1024:
        return f"{n} bytes"
    value = n / 1024
    units = ["KiB", "MiB", "GiB"]
    unit = units.pop(0)
    while value >= 1024 and units:
        value /= 1024
        unit = units.pop(0)
    return f"{value:.2f} {unit} ({n} bytes)"


class MemorySaverError(NPUPlatformError):
    """Base class of the memory manager's errors."""


class UnknownAllocation(MemorySaverError, LookupError):
    """An address that the manager did not allocate (or has already freed)."""


class OutOfMemory(MemorySaverError, MemoryError):
    """Device memory ran out (or would drop below ``memory_margin_bytes``).

    Attributes: ``tag``, ``device``, ``needed_bytes``, ``free_bytes`` (``None`` when the
    driver could not tell), ``total_bytes``, ``margin_bytes``.
    """

    def __init__(
        self,
        message: str,
        *,
        tag: str | None,
        device: int,
        needed_bytes: int,
        free_bytes: int | None,
        total_bytes: int | None,
        margin_bytes: int,
    ) -> None:
        super().__init__(message)
        self.tag = tag
        self.device = device
        self.needed_bytes = needed_bytes
        self.free_bytes = free_bytes
        self.total_bytes = total_bytes
        self.margin_bytes = margin_bytes


class AllocationOutOfMemory(OutOfMemory):
    """``malloc`` could not get device memory."""


class ResumeOutOfMemory(OutOfMemory):
    """``resume`` ran out of device memory part-way.

    ``resumed``: addresses resumed by this call (ACTIVE now); ``still_paused``: addresses
    of the request still PAUSED, backups intact. Free memory and call ``resume`` again.
    """

    def __init__(self, message: str, *, resumed: list[int], still_paused: list[int], **kw):
        super().__init__(message, **kw)
        self.resumed = resumed
        self.still_paused = still_paused


class PauseError(MemorySaverError, RuntimeError):
    """``pause`` failed part-way; ``paused`` and ``still_active`` list the addresses."""

    def __init__(self, message: str, *, paused: list[int], still_active: list[int]) -> None:
        super().__init__(message)
        self.paused = paused
        self.still_active = still_active


class ResumeError(MemorySaverError, RuntimeError):
    """``resume`` failed part-way for a reason other than memory running out."""

    def __init__(self, message: str, *, resumed: list[int], still_paused: list[int]) -> None:
        super().__init__(message)
        self.resumed = resumed
        self.still_paused = still_paused


class FreeError(MemorySaverError, RuntimeError):
    """A driver call failed while freeing; the allocation is gone from the table."""


class NoCpuBackup(MemorySaverError, ValueError):
    """A CPU backup was asked for where there is none (allocation made without backup)."""


class NotSupported(MemorySaverError, NotImplementedError):
    """A torch_memory_saver feature that npu_platform does not provide (yet)."""
