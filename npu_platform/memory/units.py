"""Size arithmetic shared by the memory manager and its drivers (standard library only)."""

from __future__ import annotations

__all__ = ["round_up", "round_up_size"]


def round_up(value: int, unit: int) -> int:
    """The smallest multiple of ``unit`` (a positive integer) that is ``>= value``."""
    return -(-value // unit) * unit


def round_up_size(size: int, unit: int) -> int:
    """:func:`round_up` for the size of an allocation, which must be positive.

    Raises ``ValueError`` naming the size when it is zero or negative.
    """
    if size <= 0:
        raise ValueError(f"size must be positive, got {size}")
    return round_up(size, unit)
