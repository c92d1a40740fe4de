"""``torch.npu`` memory management (torch_npu/npu/memory.py) on the emulated NPU.

The native device allocates host memory, accounted per device against the emulated
capacity, with no cache: every allocation is its own segment, so the "reserved" statistics
equal the "allocated" ones and ``empty_cache`` has nothing to give back. Pluggable C
allocators and memory pools are the native device's (``register_allocator``,
``create_pool``, ``begin_allocate_to_pool`` ...).
"""

import collections
import contextlib
import ctypes
import threading
import warnings
import weakref

import torch

import torch_npu
from torch_npu import _emulated

from . import _get_device_index, _lazy_init, is_initialized

__all__ = [
    "empty_cache",
    "memory_stats",
    "memory_stats_as_nested_dict",
    "reset_accumulated_memory_stats",
    "reset_peak_memory_stats",
    "reset_max_memory_allocated",
    "memory_allocated",
    "max_memory_allocated",
    "memory_reserved",
    "max_memory_reserved",
    "memory_summary",
    "get_allocator_backend",
    "NPUPluggableAllocator",
    "change_current_allocator",
    "MemPool",
    "use_mem_pool",
    "host_empty_cache",
]


def empty_cache():
    r"""Releases all unoccupied cached memory (the emulated NPU caches none)."""
    if is_initialized():
        torch._C._accelerator_emptyCache()


def host_empty_cache():
    r"""Releases all unoccupied cached pinned host memory (none is cached here)."""
    torch._C._accelerator_emptyHostCache()


def memory_stats(device=None):
    """Returns a dictionary of NPU memory allocator statistics for a given device.

    The keys are torch's (``"allocated_bytes.all.current"``, ``"reserved_bytes.all.peak"``,
    ``"allocation.large_pool.allocated"``, ``"num_ooms"`` ...), flattened from
    :func:`memory_stats_as_nested_dict` and sorted. On the emulated NPU every allocation is
    its own segment, so the segment, active and reserved statistics equal the allocation
    ones.
    """
    result = []

    def _recurse_add_to_result(prefix, obj):
        if isinstance(obj, dict):
            if len(prefix) > 0:
                prefix += "."
            for k, v in obj.items():
                _recurse_add_to_result(prefix + k, v)
        else:
            result.append((prefix, obj))

    stats = memory_stats_as_nested_dict(device=device)
    _recurse_add_to_result("", stats)
    result.sort()
    return collections.OrderedDict(result)


def memory_stats_as_nested_dict(device=None):
    r"""Returns the result of :func:`memory_stats` as a nested dictionary."""
    if not is_initialized():
        return {}
    device = _get_device_index(device, optional=True)
    return torch._C._accelerator_getDeviceStats(device)


def reset_accumulated_memory_stats(device=None):
    r"""Resets the "accumulated" (historical) stats tracked by the NPU memory allocator."""
    device = _get_device_index(device, optional=True)
    return torch._C._accelerator_resetAccumulatedStats(device)


def reset_peak_memory_stats(device=None):
    r"""Resets the "peak" stats tracked by the NPU memory allocator."""
    device = _get_device_index(device, optional=True)
    return torch._C._accelerator_resetPeakStats(device)


def reset_max_memory_allocated(device=None):
    r"""Resets the starting point in tracking maximum NPU memory occupied by tensors.

    This calls :func:`reset_peak_memory_stats`, which resets /all/ peak memory stats.
    """
    warnings.warn(
        "torch_npu.npu.reset_max_memory_allocated now calls "
        "torch_npu.npu.reset_peak_memory_stats, which resets /all/ peak memory stats.",
        DeprecationWarning,
        stacklevel=2,
    )
    return reset_peak_memory_stats(device=device)


def memory_allocated(device=None):
    r"""Returns the current NPU memory occupied by tensors in bytes for a given device."""
    return memory_stats(device=device).get("allocated_bytes.all.current", 0)


def max_memory_allocated(device=None):
    r"""Returns the maximum NPU memory occupied by tensors in bytes (since the last reset)."""
    return memory_stats(device=device).get("allocated_bytes.all.peak", 0)


def memory_reserved(device=None):
    r"""Returns the current NPU memory managed by the allocator in bytes for a given device."""
    return memory_stats(device=device).get("reserved_bytes.all.current", 0)


def max_memory_reserved(device=None):
    r"""Returns the maximum NPU memory managed by the allocator in bytes (since the last reset)."""
    return memory_stats(device=device).get("reserved_bytes.all.peak", 0)


def _format_size(sz, pref_sz):
    prefixes = ["B ", "KB", "MB", "GB", "TB", "PB"]
    prefix = prefixes[0]
    for new_prefix in prefixes[1:]:
        if pref_sz < 768 * 1024:
            break
        prefix = new_prefix
        sz //= 1024
        pref_sz /= 1024
    return f"{sz:7d} {prefix}"


def _format_count(cnt, pref_cnt):
    prefixes = [" ", "K", "M"]
    prefix = prefixes[0]
    for new_prefix in prefixes[1:]:
        if pref_cnt < 750 * 1000:
            break
        prefix = new_prefix
        cnt //= 1000
        pref_cnt /= 1000
    return f"{cnt:7d} {prefix} "


def memory_summary(device=None, abbreviated=False):
    r"""Returns a human-readable printout of the current memory allocator statistics."""
    device = _get_device_index(device, optional=True)
    stats = memory_stats(device=device)
    if not stats:
        return "NPU memory summary: the NPU is not initialized in this process.\n"
    rule, thin = "=" * 75, "-" * 75
    lines = [
        rule,
        f" {'':16} PyTorch NPU memory summary, device ID {device:<18d} ",
        thin,
        f"  {'':9} NPU OOMs: {stats['num_ooms']:<13d} | {'':6} npuMalloc retries: "
        f"{stats['num_alloc_retries']:<9d}  ",
        rule,
        "        Metric         | Cur Usage  | Peak Usage | Tot Alloc  | Tot Freed  ",
    ]
    metrics = [
        ("allocated_bytes", "Allocated memory", _format_size),
        ("active_bytes", "Active memory", _format_size),
        ("reserved_bytes", "NPU reserved memory", _format_size),
        ("inactive_split_bytes", "Non-releasable memory", _format_size),
        ("allocation", "Allocations", _format_count),
        ("active", "Active allocs", _format_count),
        ("segment", "NPU reserved segments", _format_count),
        ("inactive_split", "Non-releasable allocs", _format_count),
    ]
    kinds = ("current", "peak", "allocated", "freed")
    for key, title, fmt in metrics:
        lines.append(thin)
        pools = [("all", title)]
        if not abbreviated:
            pools += [
                ("large_pool", "      from large pool"),
                ("small_pool", "      from small pool"),
            ]
        reference = None
        for pool, name in pools:
            values = [stats[f"{key}.{pool}.{kind}"] for kind in kinds]
            if reference is None:
                reference = values
            cells = " | ".join(fmt(v, r) for v, r in zip(values, reference, strict=True))
            lines.append(f" {name:<21} | {cells} ")
    for key, title in (
        ("oversize_allocations", "Oversize allocations"),
        ("oversize_segments", "Oversize NPU segments"),
    ):
        lines.append(thin)
        values = [stats[f"{key}.{kind}"] for kind in kinds]
        cells = " | ".join(_format_count(v, v) for v in values)
        lines.append(f" {title:<21} | {cells} ")
    lines.append(rule)
    return "|" + "|\n|".join(lines) + "|\n"


def get_allocator_backend() -> str:
    r"""The active allocator backend: ``native`` (the emulated device's allocator)."""
    return "native"


class _npu_NPUAllocator:  # noqa: N801  (torch_npu._C._npu_NPUAllocator)
    """A native allocator of the emulated device, by id (0: the built-in host allocator)."""

    __slots__ = ("_library", "id")

    def __init__(self, allocator_id: int, library=None) -> None:
        self.id = int(allocator_id)
        self._library = library  # keeps the .so loaded while the allocator may be used

    def __repr__(self) -> str:
        return f"<torch_npu._C._npu_NPUAllocator id={self.id}>"


class _NPUAllocator:
    r"""Wrapper over internal NPU memory allocators."""

    def __init__(self, allocator: _npu_NPUAllocator):
        self._allocator = allocator

    def allocator(self):
        return self._allocator


class NPUPluggableAllocator(_NPUAllocator):
    r"""NPU memory allocator loaded from a so file."""

    def __init__(self, path_to_so_file: str, alloc_fn_name: str, free_fn_name: str):
        r"""Memory allocators are compiled in .so files and loaded dynamically using ctypes.

        Args:
            path_to_so_file(str): Path in the filesystem to the `.so` file containing
                the allocator functions
            alloc_fn_name(str): Name of the function to perform the memory allocation
                in the so file. The signature must be:
                void* alloc_fn_name(ssize_t size, int device, aclrtStream stream);
            free_fn_name(str): Name of the function to perform the memory release
                in the so file. The signature must be:
                void free_fn_name(void* ptr, size_t size, int device, aclrtStream stream);
        """
        allocator = ctypes.CDLL(path_to_so_file)
        alloc_fn = ctypes.cast(getattr(allocator, alloc_fn_name), ctypes.c_void_p).value
        free_fn = ctypes.cast(getattr(allocator, free_fn_name), ctypes.c_void_p).value
        if alloc_fn is None:
            raise RuntimeError(f"alloc_fn is None: {alloc_fn_name} in {path_to_so_file}")
        if free_fn is None:
            raise RuntimeError(f"free_fn is None: {free_fn_name} in {path_to_so_file}")
        allocator_id = _emulated.lib().register_allocator(alloc_fn, free_fn)
        self._allocator = _npu_NPUAllocator(allocator_id, allocator)


_current_allocator = _npu_NPUAllocator(0)
_allocator_lock = threading.Lock()
_pools: "weakref.WeakValueDictionary[tuple, MemPool]" = weakref.WeakValueDictionary()


def _pool_by_id(pool_id) -> "MemPool | None":
    """The live MemPool whose ``id`` is ``pool_id`` (a graph capture's ``pool`` token)."""
    try:
        return _pools.get(tuple(pool_id))
    except TypeError:
        return None


def change_current_allocator(allocator: _NPUAllocator) -> None:
    r"""Change the currently used memory allocator to be the one provided.

    As on torch_npu, this must happen before the NPU is initialized in this process (before
    the first npu tensor or device call); afterwards it raises ``RuntimeError``.
    """
    global _current_allocator
    handle = allocator.allocator()
    if not isinstance(handle, _npu_NPUAllocator):
        raise TypeError(
            "change_current_allocator expects a torch_npu.npu.memory._NPUAllocator such as "
            f"NPUPluggableAllocator(...), got {type(allocator).__name__}"
        )
    with _allocator_lock:
        if is_initialized():
            raise RuntimeError(
                "Can't swap an already initialized allocator: call "
                "torch.npu.memory.change_current_allocator before the first npu tensor or "
                "device call of this process"
            )
        _emulated.lib().change_current_allocator(handle.id)
        _current_allocator = handle


def _get_current_allocator() -> _NPUAllocator:
    r"""Return the allocator being currently used."""
    return _NPUAllocator(_current_allocator)


class MemPool:
    r"""MemPool represents a pool of memory in the NPU allocator.

    Args:
        allocator(torch_npu._C._npu_NPUAllocator, optional): the allocator the pool's memory
            comes from (``NPUPluggableAllocator(...).allocator()``). If ``None`` (default),
            the current allocator.
        use_on_oom(bool): whether this pool can be used as a last resort if an allocation
            outside of it fails due to Out Of Memory (not supported by the emulated NPU).
        no_split(bool): whether this pool should not split a segment (every allocation is
            its own segment on the emulated NPU).
    """

    def __init__(
        self,
        allocator: _npu_NPUAllocator | None = None,
        use_on_oom: bool = False,
        no_split: bool = False,
    ):
        if allocator is not None and not isinstance(allocator, _npu_NPUAllocator):
            raise TypeError(
                "MemPool(allocator=...) expects the allocator() of an "
                f"NPUPluggableAllocator (or None), got {type(allocator).__name__}"
            )
        if use_on_oom:
            raise NotImplementedError(
                "MemPool(use_on_oom=True) is not supported by the emulated NPU; leave it False"
            )
        self._allocator = allocator
        handle = allocator if allocator is not None else _current_allocator
        self._pool_id = int(_emulated.lib().create_pool(handle.id))
        self._uses = 1
        self._lock = threading.Lock()
        self._no_split = no_split
        _pools[self.id] = self

    @property
    def id(self) -> tuple[int, int]:
        r"""Returns the ID of this pool as a tuple of two ints."""
        return (0, self._pool_id)

    @property
    def allocator(self) -> _npu_NPUAllocator | None:
        r"""The allocator this pool was created with (``None``: the current allocator)."""
        return self._allocator

    def use_count(self) -> int:
        r"""Returns the reference count of this pool (1, plus one per active use)."""
        return self._uses

    def _allocated(self) -> int:
        return int(_emulated.lib().pool_allocated(self._pool_id))

    def __del__(self):
        pool_id = getattr(self, "_pool_id", None)
        if pool_id is None:
            return
        try:
            _emulated.lib().release_pool(pool_id)
        except Exception:  # at interpreter exit, or still in use by another thread
            pass


@contextlib.contextmanager
def use_mem_pool(pool: MemPool, device=None):
    r"""A context manager that routes this thread's allocations on a device to a given pool.

    Args:
        pool(torch_npu.npu.MemPool): a MemPool object to be made active so that
            allocations route to this pool.
        device (torch.device or int, optional): selected device. Uses MemPool on
            the current device if :attr:`device` is ``None`` (default).
    """
    device_index = torch_npu.npu.current_device() if device is None else _get_device_index(device)
    lib = _emulated.lib()
    _lazy_init()
    lib.begin_allocate_to_pool(device_index, pool._pool_id)
    with pool._lock:
        pool._uses += 1
    try:
        yield
    finally:
        lib.end_allocate_to_pool(device_index, pool._pool_id)
        with pool._lock:
            pool._uses -= 1
