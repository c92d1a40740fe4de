"""A ``torch.npu``-shaped device facade: the only way the plugin touches the device.

Backed by ``torch.npu`` on a real Ascend NPU (:mod:`npu_platform.device.npu`) and by the CPU
on the emulated NPU (:mod:`npu_platform.device.emulated`). Which one is decided once per
process by :func:`npu_platform.detect.detect`. Later layers call these functions and never
``torch.npu`` directly, so the same code paths run in emulation.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from npu_platform.detect import Target, detect
from npu_platform.errors import EnvironmentProblem

if TYPE_CHECKING:
    import torch

    from npu_platform.device.base import DeviceBackend

_lock = threading.Lock()
_backend: DeviceBackend | None = None


def backend() -> DeviceBackend:
    """The backend for this process; raises when there is no NPU, real or emulated."""
    global _backend
    if _backend is None:
        with _lock:
            if _backend is None:
                _backend = _make_backend()
    return _backend


def _make_backend() -> DeviceBackend:
    decision = detect()
    if decision.target is Target.REAL:
        from npu_platform.device.npu import NPUBackend

        return NPUBackend()
    if decision.target is Target.EMULATED:
        from npu_platform.device.emulated import EmulatedBackend

        return EmulatedBackend(decision.device_count)
    raise EnvironmentProblem(
        f"no NPU device is available: {decision.reason}. Run `npu-platform doctor` for details."
    )


def reset_backend() -> None:
    """Forget the chosen backend (tests that change the environment call this)."""
    global _backend
    with _lock:
        _backend = None


def device_type() -> str:
    """The torch device type tensors live on: ``"npu"``, or ``"cpu"`` in emulation."""
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


def empty_cache() -> None:
    backend().empty_cache()


def manual_seed_all(seed: int) -> None:
    backend().manual_seed_all(seed)


# Memory pools over a pluggable allocator: real NPUs only (npu_platform.memory.torch_route).


def pluggable_allocator(path: str, alloc_fn_name: str, free_fn_name: str) -> Any:
    """``torch_npu.npu.memory.NPUPluggableAllocator(path, alloc_fn_name, free_fn_name)``."""
    return _npu_only("pluggable_allocator").pluggable_allocator(path, alloc_fn_name, free_fn_name)


def mem_pool(allocator: Any = None) -> Any:
    """``torch.npu.MemPool(allocator=allocator)`` (None: torch's own device allocator)."""
    return _npu_only("mem_pool").mem_pool(allocator)


def use_mem_pool(pool: Any, index: int | None = None) -> Any:
    """``torch.npu.use_mem_pool(pool, index)``: this thread's allocations go to ``pool``."""
    return _npu_only("use_mem_pool").use_mem_pool(pool, index)


def _npu_only(what: str) -> Any:
    chosen = backend()
    if not hasattr(chosen, what):
        raise EnvironmentProblem(
            f"device.{what}() needs a real Ascend NPU (torch_npu); the "
            f"{chosen.device_type!r} backend has none"
        )
    return chosen


def graph(npu_graph: Any, **kwargs: Any) -> Any:
    """``torch.npu.graph(npu_graph, **kwargs)``: graph capture (keywords only: its fourth
    positional parameter differs from ``torch.cuda.graph``'s)."""
    return _npu_only("graph").graph(npu_graph, **kwargs)


def hccl_process_group_class() -> Any:
    """torch_npu's ``ProcessGroupHCCL`` (real NPU only; emulation uses gloo)."""
    return _npu_only("hccl_process_group_class").hccl_process_group_class()
