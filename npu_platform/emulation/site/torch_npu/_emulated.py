"""What stands in for torch_npu's C++ core (``torch_npu._C``) in the emulated package.

The real torch_npu keeps device, stream, memory and option state in C++ and reaches CANN
through it. Here the device is :mod:`npu_platform.emulation.native` (a PrivateUse1 device on
host memory, renamed ``npu``); this module holds the rest: the environment the emulation is
configured by, the emulated SoC's facts, the option table ``set_option`` and friends write,
and the device-properties object.
"""

from __future__ import annotations

import os
import threading
import uuid as _uuid
from types import ModuleType

DEVICES_VARIABLE = "NPU_PLATFORM_EMULATE_DEVICES"
MEMORY_VARIABLE = "NPU_PLATFORM_EMULATE_DEVICE_MEMORY"
DEFAULT_DEVICES = 1
DEFAULT_DEVICE_MEMORY = 4 << 30  # bytes

#: The SoC the emulated device reports (torch_npu's ``SocVersion`` numbering).
SOC_NAME = "Ascend910B2"
SOC_VERSION = 221
CUBE_CORE_NUM = 24
VECTOR_CORE_NUM = 48
L2_CACHE_SIZE = 192 << 20  # bytes


def _positive_int(name: str, default: int, example: str) -> int:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    text = raw.strip().replace("_", "")
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise ValueError(f"{name}={raw!r} is not valid: {name} accepts {example}")
    return value


def configured_devices() -> int:
    """``NPU_PLATFORM_EMULATE_DEVICES`` (default 1): how many devices the emulation has."""
    return _positive_int(DEVICES_VARIABLE, DEFAULT_DEVICES, "an integer >= 1 (device count)")


def configured_memory() -> int:
    """``NPU_PLATFORM_EMULATE_DEVICE_MEMORY`` (default 4 GiB): bytes of memory per device."""
    return _positive_int(
        MEMORY_VARIABLE,
        DEFAULT_DEVICE_MEMORY,
        "an integer number of bytes >= 1 (e.g. 8589934592 for 8 GiB)",
    )


def visible_devices(physical: int) -> list[int]:
    """The physical devices this process sees, in order, per ``ASCEND_RT_VISIBLE_DEVICES``.

    The rules are the Ascend runtime's (as torch_npu applies them): unset means every
    device; the list is read up to the first character that is neither a digit nor a comma;
    an empty item ends it; it must be strictly increasing and ends at the first id that does
    not exist (a list that is not increasing makes no device visible).
    """
    var = os.environ.get("ASCEND_RT_VISIBLE_DEVICES")
    if var is None:
        return list(range(physical))
    end = len(var)
    for i, char in enumerate(var):
        if not (char.isdigit() or char == ","):
            end = i
            break
    seen: list[int] = []
    for item in var[:end].split(","):
        if not item:
            break
        index = int(item)
        if seen and index <= seen[-1]:
            return []
        if index >= physical:
            break
        seen.append(index)
    return seen


# ----------------------------------------------------------------------------- the device

_lock = threading.Lock()
_native: ModuleType | None = None
_physical: list[int] = []


def install() -> ModuleType:
    """Install the native ``npu`` device once per process; return the native module.

    The device count is the configured count seen through ``ASCEND_RT_VISIBLE_DEVICES``.
    A process that sees no device gets none: ``is_available()`` answers False and every
    device call raises, as torch_npu does on a machine without a visible NPU.
    """
    global _native, _physical
    with _lock:
        if _native is not None:
            return _native
        physical = configured_devices()
        memory = configured_memory()
        visible = visible_devices(physical)
        from npu_platform.emulation import native

        if visible:
            module = native.install_device(len(visible), memory)
            try:
                from npu_platform.emulation import acl
            except ImportError:  # the emulated ACL runtime is optional
                acl = None
            if acl is not None:
                acl.load(len(visible), memory)
        else:
            import torch

            if torch._C._get_privateuse1_backend_name() != "npu":
                torch.utils.rename_privateuse1_backend("npu")
            module = native.load()  # not initialised: every device call raises
        _physical = visible
        _native = module
        return module


def lib() -> ModuleType:
    """The native module (after :func:`install`)."""
    return _native if _native is not None else install()


def device_count() -> int:
    return int(lib().device_count()) if _physical else 0


def physical_index(index: int) -> int:
    return _physical[index]


# ------------------------------------------------------------------------------- options

options: dict[str, str] = {}
options_lock = threading.Lock()


def set_options(option: dict) -> None:
    with options_lock:
        for key, value in option.items():
            options[str(key)] = str(value)


def get_option(name: str) -> bytes | None:
    """As ``torch_npu._C._npu_getOption``: the value as bytes, None when never set."""
    with options_lock:
        value = options.get(name)
    return None if value is None else value.encode()


# -------------------------------------------------------------------- device properties


class _CUuuid:
    """A device UUID (``torch_npu._C._CUuuid``): ``bytes`` and the usual text form."""

    __slots__ = ("_value",)

    def __init__(self, value: _uuid.UUID) -> None:
        self._value = value

    @property
    def bytes(self) -> list[int]:
        return list(self._value.bytes)

    def __str__(self) -> str:
        return str(self._value)

    def __repr__(self) -> str:
        return str(self._value)


class _NPUDeviceProperties:
    """What ``torch.npu.get_device_properties`` returns (``torch_npu._C._NPUDeviceProperties``)."""

    __slots__ = (
        "L2_cache_size",
        "cube_core_num",
        "gcnArchName",
        "is_integrated",
        "is_multi_gpu_board",
        "major",
        "max_threads_per_multi_processor",
        "minor",
        "multi_processor_count",
        "name",
        "regs_per_multiprocessor",
        "total_memory",
        "uuid",
        "vector_core_num",
        "warp_size",
    )

    def __init__(self, index: int, total_memory: int) -> None:
        self.name = SOC_NAME
        self.total_memory = int(total_memory)
        self.cube_core_num = CUBE_CORE_NUM
        self.vector_core_num = VECTOR_CORE_NUM
        self.L2_cache_size = L2_CACHE_SIZE
        self.major = 0
        self.minor = 0
        self.is_multi_gpu_board = False
        self.is_integrated = False
        self.multi_processor_count = CUBE_CORE_NUM
        self.max_threads_per_multi_processor = 0
        self.warp_size = 0
        self.regs_per_multiprocessor = 0
        self.gcnArchName = SOC_NAME
        physical = physical_index(index)
        self.uuid = _CUuuid(
            _uuid.uuid5(_uuid.NAMESPACE_OID, f"npu-platform-emulated-npu-{physical}")
        )

    def __repr__(self) -> str:
        mib = 1024 * 1024
        return (
            f"_NPUDeviceProperties(name='{self.name}', total_memory={self.total_memory // mib}MB, "
            f"cube_core_num={self.cube_core_num}, vector_core_num={self.vector_core_num}, "
            f"uuid={self.uuid}, L2_cache_size={self.L2_cache_size // mib}MB)"
        )
