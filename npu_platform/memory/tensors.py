"""CPU torch tensors over raw addresses: manager memory, backups.

With the host driver the memory the manager hands out is host memory, so a tensor can be
put directly over it: :func:`tensor_at` builds a CPU tensor whose ``data_ptr()`` is the
given address, and :func:`empty` allocates manager memory (in the caller's region, or with an
explicit tag) and frees it when the tensor's storage dies, the way an allocator would.
torch is imported on first use only.
"""

from __future__ import annotations

import ctypes
import math
import weakref
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

    from npu_platform.memory.manager import MemoryManager

__all__ = ["empty", "host_empty", "reinterpret", "tensor_at"]


def tensor_at(
    address: int,
    nbytes: int,
    *,
    on_release: Callable[[], None] | None = None,
) -> torch.Tensor:
    """A 1-D ``uint8`` CPU tensor over ``[address, address + nbytes)`` (no copy).

    ``data_ptr()`` equals ``address``. ``on_release`` runs once, when the tensor's storage
    (every view of it) is gone. The memory must stay valid that long; touching memory that
    is paused faults like an illegal device access would.
    """
    import torch

    if nbytes <= 0:
        if on_release is not None:
            on_release()
        return torch.empty(0, dtype=torch.uint8)
    array = (ctypes.c_uint8 * nbytes).from_address(address)
    if on_release is not None:
        finalizer = weakref.finalize(array, on_release)
        finalizer.atexit = False  # at interpreter exit the OS takes the memory back anyway
    return torch.frombuffer(array, dtype=torch.uint8)


def reinterpret(
    raw: torch.Tensor, dtype: torch.dtype | None, shape: Sequence[int] | None
) -> torch.Tensor:
    """View a 1-D ``uint8`` tensor as ``dtype`` with ``shape`` (each optional)."""
    out = raw
    if dtype is not None and dtype != out.dtype:
        out = out.view(dtype)
    if shape is not None:
        out = out.view(tuple(shape))
    return out


def host_empty(nbytes: int) -> torch.Tensor:
    """An ordinary (torch-allocated) CPU ``uint8`` tensor of ``nbytes``."""
    import torch

    return torch.empty(nbytes, dtype=torch.uint8)


def empty(
    manager: MemoryManager,
    shape: int | Sequence[int],
    dtype: torch.dtype | None = None,
    *,
    device: int = 0,
    tag: str | None = None,
    enable_cpu_backup: bool | None = None,
) -> torch.Tensor:
    """A CPU tensor in manager memory, freed (``manager.free``) when its storage dies.

    Tag and backup default to the calling thread's region settings. Only meaningful with a
    driver whose device memory is host-addressable (the host driver).
    """
    import torch

    dtype = torch.float32 if dtype is None else dtype
    dims = (shape,) if isinstance(shape, int) else tuple(shape)
    numel = math.prod(dims)
    nbytes = numel * torch.empty((), dtype=dtype).element_size()
    if nbytes == 0:
        return torch.empty(dims, dtype=dtype)
    address = manager.malloc(nbytes, device, tag=tag, enable_cpu_backup=enable_cpu_backup)
    try:
        raw = tensor_at(address, nbytes, on_release=_freer(manager, address))
    except BaseException:
        manager.free(address)
        raise
    return reinterpret(raw, dtype, dims)


def _freer(manager: MemoryManager, address: int) -> Callable[[], None]:
    def release() -> None:
        try:
            manager.free(address)
        except Exception as exc:  # runs from a finalizer: report, never raise
            import logging

            logging.getLogger("npu_platform.memory").error(
                "freeing 0x%x when its tensor died failed: %s", address, exc
            )

    return release
