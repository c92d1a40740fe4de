"""A ``torch.npu``-shaped device facade: the only way the plugin touches the device.

Backed by ``torch.npu`` / ``torch_npu`` (:mod:`npu_platform.device.npu`) whenever detection
finds an NPU. On the emulated NPU that is the emulated torch_npu, which the plugin cannot tell
apart: the same calls run in CI and on an Ascend machine.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from npu_platform.detect import detect
from npu_platform.errors import EnvironmentProblem

if TYPE_CHECKING:
    import torch

    from npu_platform.device.npu import NPUBackend

_lock = threading.Lock()
_backend: NPUBackend | None = None


def backend() -> NPUBackend:
    """The backend for this process; raises when there is no NPU, real or emulated."""
    global _backend
    if _backend is None:
        with _lock:
            if _backend is None:
                _backend = _make_backend()
    return _backend


def _make_backend() -> NPUBackend:
    decision = detect()
    if decision.is_npu:
        from npu_platform.device.npu import NPUBackend

        return NPUBackend()
    raise EnvironmentProblem(
        f"no NPU device is available: {decision.reason}. Run `npu-platform doctor` for details."
    )


def reset_backend() -> None:
    """Forget the chosen backend (tests that change the environment call this)."""
    global _backend
    with _lock:
        _backend = None


def device_type() -> str:
    """The torch device type tensors live on: ``"npu"``."""
    return backend().device_type


def torch_device(index: int | None = None) -> torch.device:
    return backend().torch_device(index)


def is_available() -> bool:
    return detect().is_npu


def device_count() -> int:
    return backend().device_count()


def current_device() -> int:
    return backend().current_device()


def set_device(index: int | str | Any) -> None:
    backend().set_device(index)


def synchronize(index: int | None = None) -> None:
    backend().synchronize(index)


def Stream(*args: Any, **kwargs: Any) -> Any:  # noqa: N802 - mirrors torch.npu.Stream
    return backend().new_stream(*args, **kwargs)


def Event(*args: Any, **kwargs: Any) -> Any:  # noqa: N802 - mirrors torch.npu.Event
    return backend().new_event(*args, **kwargs)


def current_stream(index: int | None = None) -> Any:
    return backend().current_stream(index)


def stream(s: Any) -> Any:
    """Context manager selecting ``s`` as the current stream."""
    return backend().stream_context(s)


def mem_get_info(index: int | None = None) -> tuple[int, int]:
    """(free, total) device memory in bytes."""
    return backend().mem_get_info(index)


def get_device_name(index: int | None = None) -> str:
    return backend().get_device_name(index)


def num_compute_units(index: int | None = None) -> int:
    """AI cores (cube units) of the device, from torch_npu's device properties."""
    return int(backend().get_device_properties(index).cube_core_num)


def memory_allocated(index: int | None = None) -> int:
    """Bytes held by live tensors (torch_npu's caching allocator)."""
    return backend().memory_allocated(index)


def max_memory_allocated(index: int | None = None) -> int:
    """Peak of :func:`memory_allocated` since the last :func:`reset_peak_memory_stats`."""
    return backend().max_memory_allocated(index)


def memory_reserved(index: int | None = None) -> int:
    """Bytes torch_npu's caching allocator holds (live tensors plus its cache)."""
    return backend().memory_reserved(index)


def reset_peak_memory_stats(index: int | None = None) -> None:
    backend().reset_peak_memory_stats(index)


def empty_cache() -> None:
    backend().empty_cache()


def manual_seed_all(seed: int) -> None:
    backend().manual_seed_all(seed)


# Memory pools over a pluggable allocator (npu_platform.memory.torch_route), graphs, HCCL.


def pluggable_allocator(path: str, alloc_fn_name: str, free_fn_name: str) -> Any:
    """``torch_npu.npu.memory.NPUPluggableAllocator(path, alloc_fn_name, free_fn_name)``."""
    return backend().pluggable_allocator(path, alloc_fn_name, free_fn_name)


def mem_pool(allocator: Any = None) -> Any:
    """``torch.npu.MemPool(allocator=allocator)`` (None: torch's own device allocator)."""
    return backend().mem_pool(allocator)


def use_mem_pool(pool: Any, index: int | None = None) -> Any:
    """``torch.npu.use_mem_pool(pool, index)``: this thread's allocations go to ``pool``."""
    return backend().use_mem_pool(pool, index)


def graph(npu_graph: Any, **kwargs: Any) -> Any:
    """``torch.npu.graph(npu_graph, **kwargs)``: graph capture (keywords only: its fourth
    positional parameter differs from ``torch.cuda.graph``'s)."""
    return backend().graph(npu_graph, **kwargs)


def hccl_process_group_class() -> Any:
    """torch_npu's ``ProcessGroupHCCL``."""
    return backend().hccl_process_group_class()
