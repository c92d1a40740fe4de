"""``torch.npu`` (torch_npu/npu/__init__.py) on the emulated NPU.

The functions keep torch_npu 2.13.0's names, parameters, defaults and behaviour (lazy
initialisation, errors on bad device indices, the forked-child rule); what they reach is
the native emulated device instead of CANN.
"""

__all__ = [
    "is_initialized",
    "init",
    "synchronize",
    "device_count",
    "can_device_access_peer",
    "set_device",
    "current_device",
    "get_device_name",
    "get_device_properties",
    "get_device_capability",
    "mem_get_info",
    "is_available",
    "device",
    "device_of",
    "StreamContext",
    "stream",
    "set_stream",
    "current_stream",
    "default_stream",
    "set_sync_debug_mode",
    "get_sync_debug_mode",
    "manual_seed",
    "manual_seed_all",
    "seed",
    "seed_all",
    "initial_seed",
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
    "MemPool",
    "use_mem_pool",
    "get_allocator_backend",
    "NPUPluggableAllocator",
    "change_current_allocator",
    "Stream",
    "Event",
    "set_option",
    "CubeMathType",
    "set_compile_mode",
    "set_mm_bmm_format_nd",
    "get_mm_bmm_format_nd",
    "get_rng_state",
    "set_rng_state",
    "get_rng_state_all",
    "set_rng_state_all",
    "is_jit_compile_false",
    "is_bf16_supported",
    "current_blas_handle",
    "config",
    "matmul",
    "conv",
    "NPUGraph",
    "graph",
    "graph_pool_handle",
    "is_current_stream_capturing",
    "set_stream_limit",
    "reset_stream_limit",
    "get_stream_limit",
    "ipc_collect",
    "host_empty_cache",
    "get_amp_supported_dtype",
    "is_autocast_enabled",
    "set_autocast_enabled",
    "get_autocast_dtype",
    "set_autocast_dtype",
]

import os
import re
import threading
import traceback
import warnings
from multiprocessing.util import register_after_fork as _register_after_fork

import torch

import torch_npu
from torch_npu import _emulated

from . import npu_config
from ._backends import get_soc_version  # noqa: F401
from .autocast_utils import (
    get_amp_supported_dtype,
    get_autocast_dtype,
    is_autocast_enabled,
    set_autocast_dtype,
    set_autocast_enabled,
)
from .graphs import NPUGraph, graph, graph_pool_handle, is_current_stream_capturing
from .npu_config import (
    get_mm_bmm_format_nd,
    get_stream_limit,
    is_jit_compile_false,
    reset_stream_limit,
    set_compile_mode,
    set_mm_bmm_format_nd,
    set_option,
    set_stream_limit,
)
from .streams import Event, Stream
from .utils import (
    StreamContext,
    _get_device_index,
    current_blas_handle,
    current_device,
    current_stream,
    default_stream,
    device,
    device_of,
    get_sync_debug_mode,
    ipc_collect,
    is_bf16_supported,
    set_device,
    set_stream,
    set_sync_debug_mode,
    stream,
    synchronize,
)

config = npu_config._npuConfig()

matmul = npu_config._allowHF32Matmul()
conv = npu_config._allowHF32Conv()
CubeMathType = npu_config._CubeMathType

default_generators: tuple[torch._C.Generator] = ()  # type: ignore[assignment]

_is_internal_in_bad_fork = False
_initialized = False
_tls = threading.local()
_initialization_lock = threading.Lock()
_queued_calls = []  # don't invoke these until initialization occurs
_original_pid = False


def _is_in_bad_fork():
    return _is_internal_in_bad_fork


def is_initialized():
    r"""Returns whether PyTorch's NPU state has been initialized."""
    return _initialized and not _is_internal_in_bad_fork


def _lazy_call(cb):
    if _initialized:
        cb()
    else:
        # Don't store the actual traceback to avoid memory cycle
        _queued_calls.append((cb, traceback.format_stack()))


class _DeferredNpuCallError(Exception):
    pass


def init():
    r"""Initialize PyTorch's NPU state (does nothing if it is already initialized)."""
    torch_npu.npu._lazy_init()


def _lazy_init():
    global _initialized, _original_pid, default_generators
    if _initialized or hasattr(_tls, "is_initializing"):
        return
    with _initialization_lock:
        if _initialized:
            return
        if _is_internal_in_bad_fork:
            raise RuntimeError(
                "Cannot re-initialize NPU in forked subprocess. To use NPU with "
                "multiprocessing, you must use the 'spawn' start method"
            )
        count = device_count()
        if count == 0:
            raise RuntimeError(
                "the emulated NPU has no device visible to this process "
                f"(ASCEND_RT_VISIBLE_DEVICES={os.environ.get('ASCEND_RT_VISIBLE_DEVICES')!r}, "
                f"{_emulated.DEVICES_VARIABLE}={_emulated.configured_devices()}); make a device "
                "visible or unset ASCEND_RT_VISIBLE_DEVICES"
            )
        from .random import _default_generator

        default_generators = tuple(_default_generator(i) for i in range(count))
        _original_pid = os.getpid()
        # Queued calls may call _lazy_init() again; they return at once (is_initializing).
        _tls.is_initializing = True
        try:
            for queued_call, orig_traceback in _queued_calls:
                try:
                    queued_call()
                except Exception as e:
                    msg = (
                        f"NPU call failed lazily at initialization with error: {e}\n\n"
                        f"NPU call was originally invoked at:\n\n{''.join(orig_traceback)}"
                    )
                    raise _DeferredNpuCallError(msg) from e
        finally:
            delattr(_tls, "is_initializing")
        _initialized = True


def _after_fork(arg):
    global _initialized, _is_internal_in_bad_fork
    if _initialized and _original_pid != os.getpid():
        _initialized = False
        _is_internal_in_bad_fork = True


_register_after_fork(_after_fork, _after_fork)


def _get_device(device: int | str | torch.device) -> torch.device:
    r"""Return the torch.device type object from the passed in device."""
    if isinstance(device, str):
        return torch.device(device)
    elif isinstance(device, int):
        return torch.device("npu", device)
    return device


def _get_generator(device: torch.device) -> torch._C.Generator:
    r"""Return the NPU Generator object for the given device."""
    from .random import _default_generator

    idx = device.index
    if idx is None:
        idx = current_device()
    return _default_generator(idx)


def is_available():
    r"""Whether an NPU is visible to this process."""
    return device_count() > 0


def device_count() -> int:
    r"""Return the number of NPUs available."""
    return _emulated.device_count()


def _check_index(device_id: int) -> None:
    if device_id < 0 or device_id >= device_count():
        raise AssertionError(
            f"Invalid device id {device_id}: this process sees {device_count()} npu device(s)"
        )


def can_device_access_peer(device_id, peer_device_id):
    r"""Checks if peer access between two devices is possible (always, on host memory)."""
    device_id = _get_device_index(device_id, optional=True)
    peer_device_id = _get_device_index(peer_device_id, optional=True)
    _check_index(device_id)
    _check_index(peer_device_id)
    return True


def get_device_name(device_name=None):
    r"""The SoC name of the NPU (every emulated device is an ``Ascend910B2``)."""
    device_id = _get_device_index(device_name, optional=True)
    _check_index(device_id)
    return _emulated.SOC_NAME


_properties: dict = {}


def get_device_properties(device_name=None):
    r"""The properties of an NPU: name, total_memory, cube_core_num, vector_core_num, uuid ..."""
    device_id = _get_device_index(device_name, optional=True)
    _check_index(device_id)
    torch_npu.npu._lazy_init()
    props = _properties.get(device_id)
    if props is None:
        total = _emulated.lib().mem_get_info(device_id)[1]
        props = _properties.setdefault(device_id, _emulated._NPUDeviceProperties(device_id, total))
    return props


def mem_get_info(device=None):
    r"""``(free, total)`` bytes of device memory."""
    if device is None:
        device = torch_npu.npu.current_device()
    device_id = _get_device_index(device, optional=True)
    _check_index(device_id)
    torch_npu.npu._lazy_init()
    free, total = _emulated.lib().mem_get_info(device_id)
    return int(free), int(total)


_cached_device_capability: tuple[int, int] | None = None
_cached_device_capability_env = None


def get_device_capability(device=None):
    r"""The ``(major, minor)`` set in ``TORCH_NPU_DEVICE_CAPABILITY`` ("major.minor"), else None.

    As on torch_npu, the value is only for compatibility with PyTorch and says nothing about
    the NPU; a missing or malformed variable gives None with a warning.
    """
    global _cached_device_capability, _cached_device_capability_env
    capability_env = os.getenv("TORCH_NPU_DEVICE_CAPABILITY")
    note = (
        "The return value of get_device_capability is only for compatibility with PyTorch "
        "and does not represent the actual capability of the NPU device."
    )
    if not capability_env:
        warnings.warn(
            "You can set the device capability via the environment variable "
            f"TORCH_NPU_DEVICE_CAPABILITY. {note}",
            stacklevel=2,
        )
        return None
    if _cached_device_capability_env == capability_env and _cached_device_capability is not None:
        return _cached_device_capability
    match = re.match(r"^(\d+)\.(\d+)$", capability_env)
    if not match:
        warnings.warn(
            "torch.npu.get_device_capability can't parse TORCH_NPU_DEVICE_CAPABILITY "
            f"environment variable: {capability_env}. Expected format is 'major.minor' where "
            "major and minor are non-negative integers (e.g., '8.0').",
            stacklevel=2,
        )
        return None
    warnings.warn(note, stacklevel=2)
    _cached_device_capability = (int(match.group(1)), int(match.group(2)))
    _cached_device_capability_env = capability_env
    return _cached_device_capability


from .memory import (  # noqa: E402
    MemPool,
    NPUPluggableAllocator,
    change_current_allocator,
    empty_cache,
    get_allocator_backend,
    host_empty_cache,
    max_memory_allocated,
    max_memory_reserved,
    memory_allocated,
    memory_reserved,
    memory_stats,
    memory_stats_as_nested_dict,
    memory_summary,
    reset_accumulated_memory_stats,
    reset_max_memory_allocated,
    reset_peak_memory_stats,
    use_mem_pool,
)
from .random import (  # noqa: E402
    get_rng_state,
    get_rng_state_all,
    initial_seed,
    manual_seed,
    manual_seed_all,
    seed,
    seed_all,
    set_rng_state,
    set_rng_state_all,
)
