"""Process-wide adjustments vLLM's GPU code needs on the emulated NPU.

vLLM's GPU worker and model runner call ``torch.accelerator.*`` (synchronize, empty_cache,
memory info) directly. On a real NPU those reach torch_npu. On the emulated NPU the torch
build has no accelerator and those calls raise, so :func:`install_accelerator_shim` points
them at :mod:`npu_platform.device`, the same facade the rest of the plugin uses. vLLM's own
CPU model runner does the same (it turns them into no-ops).

It only ever patches a process that has no accelerator at all, and only once.
"""

from __future__ import annotations

import threading
from typing import Any

import torch

from npu_platform import device as npu_device

_lock = threading.Lock()
_installed = False


def _index(device: Any) -> int | None:
    if device is None:
        return None
    if isinstance(device, torch.device):
        return device.index
    if isinstance(device, int):
        return device
    return None


# Each replacement is its own function object: Dynamo keys handlers on them.
def _synchronize(device: Any = None) -> None:
    npu_device.synchronize(_index(device))


def _empty_cache() -> None:
    npu_device.empty_cache()


def _get_memory_info(device: Any = None) -> tuple[int, int]:
    return npu_device.mem_get_info(_index(device))


def _memory_stats(device: Any = None) -> dict[str, Any]:
    return {}


def _memory_allocated(device: Any = None) -> int:
    return 0


def _memory_reserved(device: Any = None) -> int:
    return 0


def _max_memory_allocated(device: Any = None) -> int:
    return 0


def _reset_peak_memory_stats(device: Any = None) -> None:
    return None


def _empty_host_cache() -> None:
    return None


def _set_device_index(device: Any) -> None:
    npu_device.set_device(device)


_REPLACEMENTS = {
    "synchronize": _synchronize,
    "empty_cache": _empty_cache,
    "get_memory_info": _get_memory_info,
    "memory_stats": _memory_stats,
    "memory_allocated": _memory_allocated,
    "memory_reserved": _memory_reserved,
    "max_memory_allocated": _max_memory_allocated,
    "reset_peak_memory_stats": _reset_peak_memory_stats,
    "empty_host_cache": _empty_host_cache,
    "set_device_index": _set_device_index,
}


def install_accelerator_shim() -> bool:
    """Route ``torch.accelerator`` to the emulated device. True if this call installed it."""
    global _installed
    if _installed:
        return False
    with _lock:
        if _installed:
            return False
        if torch.accelerator.current_accelerator() is not None:
            # A real accelerator backend is loaded: never shadow it.
            _installed = True
            return False
        for name, fn in _REPLACEMENTS.items():
            setattr(torch.accelerator, name, fn)
        _installed = True
        return True
