"""Memory driver for Huawei Ascend NPUs: ctypes over ``libascendcl.so`` (CANN ACL runtime).

Every prototype, struct and enum value below is taken from ``acl/acl_rt.h`` (ACL 1.17, as
shipped in the torch-npu wheel) and ``acl/acl_base_rt.h`` / ``acl/error_codes/rt_error_codes.h``.
The virtual-memory constraints the driver honours (CANN documentation):

* allocation granularity from ``aclrtMemGetAllocationGranularity`` (2 MB): reserve, create and
  map sizes are rounded up to it here, so callers may pass any positive size;
* ``aclrtReserveMemAddress`` with alignment 0, ``expectPtr`` NULL and flags 0;
* ``aclrtMallocPhysical`` with flags 0; ``aclrtMapMem`` with offset 0 and flags 0;
* unmap (``aclrtUnmapMem``, no size argument) before freeing the physical memory or releasing
  the reserved range.

Device setup is kept minimal. ACL calls act on the calling thread's current device. Each call
that names a device makes that device current with ``aclrtSetDevice`` only when it is not
already, and afterwards switches back to the thread's previous device, so the caller's
(for example torch_npu's) notion of the current device is left alone. A thread that had no
device keeps the one we set: undoing it would take ``aclrtResetDevice``, which tears down the
device's default context. ``aclInit`` is called only when ``aclrtSetDevice`` reports
``ACL_ERROR_UNINITIALIZE`` (a process where nothing, e.g. torch_npu, has initialised ACL yet).

Errors: ``ACL_ERROR_RT_MEMORY_ALLOCATION`` (207001) raises :class:`OutOfDeviceMemory`; any
other nonzero return raises :class:`DriverError` naming the call and the code. Nothing exits.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import threading
from collections.abc import Iterator
from typing import Any

from npu_platform import cann
from npu_platform.memory.driver import (
    DriverError,
    LibraryDriver,
    OutOfDeviceMemory,
    PhysicalMemory,
)
from npu_platform.memory.driver import declare as declare_with

LIBRARY_NAME = "libascendcl.so"

# acl_base_rt.h / rt_error_codes.h
ACL_SUCCESS = 0
ACL_ERROR_INVALID_PARAM = 100000
ACL_ERROR_UNINITIALIZE = 100001
ACL_ERROR_REPEAT_INITIALIZE = 100002
ACL_ERROR_RELATIVE_RESOURCE_NOT_CLEARED = 148051
ACL_ERROR_RT_PARAM_INVALID = 107000
ACL_ERROR_RT_INVALID_DEVICEID = 107001
ACL_ERROR_RT_CONTEXT_NULL = 107002
ACL_ERROR_RT_INVALID_HANDLE = 107017
ACL_ERROR_RT_FEATURE_NOT_SUPPORT = 207000
ACL_ERROR_RT_MEMORY_ALLOCATION = 207001
ACL_ERROR_RT_DEVICE_OOM = 207018

ERROR_NAMES = {
    ACL_ERROR_INVALID_PARAM: "ACL_ERROR_INVALID_PARAM",
    ACL_ERROR_UNINITIALIZE: "ACL_ERROR_UNINITIALIZE",
    ACL_ERROR_REPEAT_INITIALIZE: "ACL_ERROR_REPEAT_INITIALIZE",
    ACL_ERROR_RELATIVE_RESOURCE_NOT_CLEARED: "ACL_ERROR_RELATIVE_RESOURCE_NOT_CLEARED",
    ACL_ERROR_RT_PARAM_INVALID: "ACL_ERROR_RT_PARAM_INVALID",
    ACL_ERROR_RT_INVALID_DEVICEID: "ACL_ERROR_RT_INVALID_DEVICEID",
    ACL_ERROR_RT_CONTEXT_NULL: "ACL_ERROR_RT_CONTEXT_NULL",
    ACL_ERROR_RT_INVALID_HANDLE: "ACL_ERROR_RT_INVALID_HANDLE",
    ACL_ERROR_RT_FEATURE_NOT_SUPPORT: "ACL_ERROR_RT_FEATURE_NOT_SUPPORT",
    ACL_ERROR_RT_MEMORY_ALLOCATION: "ACL_ERROR_RT_MEMORY_ALLOCATION",
    ACL_ERROR_RT_DEVICE_OOM: "ACL_ERROR_RT_DEVICE_OOM",
}

# acl_rt.h enums (C enums: int-sized)
ACL_MEMCPY_HOST_TO_HOST = 0
ACL_MEMCPY_HOST_TO_DEVICE = 1
ACL_MEMCPY_DEVICE_TO_HOST = 2
ACL_MEMCPY_DEVICE_TO_DEVICE = 3

# aclrtMemAttr
ACL_DDR_MEM = 0
ACL_HBM_MEM = 1
ACL_DDR_MEM_HUGE = 2
ACL_DDR_MEM_NORMAL = 3
ACL_HBM_MEM_HUGE = 4
ACL_HBM_MEM_NORMAL = 5

ACL_MEM_HANDLE_TYPE_NONE = 0  # aclrtMemHandleType
ACL_MEM_ALLOCATION_TYPE_PINNED = 0  # aclrtMemAllocationType
ACL_MEM_LOCATION_TYPE_DEVICE = 1  # aclrtMemLocationType (HOST = 0)
ACL_RT_MEM_ALLOC_GRANULARITY_MINIMUM = 0  # aclrtMemGranularityOptions
ACL_RT_MEM_ALLOC_GRANULARITY_RECOMMENDED = 1

aclError = ctypes.c_int
_enum = ctypes.c_int


class aclrtMemLocation(ctypes.Structure):
    """``typedef struct aclrtMemLocation { uint32_t id; aclrtMemLocationType type; }``."""

    _fields_ = [("id", ctypes.c_uint32), ("type", _enum)]


class aclrtPhysicalMemProp(ctypes.Structure):
    """``aclrtPhysicalMemProp``: handleType, allocationType, memAttr, location, reserve.

    Layout on LP64: three 4-byte enums at 0, 4, 8; location (8 bytes) at 12; padding; the
    ``uint64_t reserve`` at 24; 32 bytes in all.
    """

    _fields_ = [
        ("handleType", _enum),
        ("allocationType", _enum),
        ("memAttr", _enum),
        ("location", aclrtMemLocation),
        ("reserve", ctypes.c_uint64),
    ]


# C types used in the prototypes below, spelled as in the header, and their ctypes.
C_TYPES: dict[str, Any] = {
    "aclError": aclError,
    "const char *": ctypes.c_char_p,
    "int32_t": ctypes.c_int32,
    "int32_t *": ctypes.POINTER(ctypes.c_int32),
    "size_t": ctypes.c_size_t,
    "size_t *": ctypes.POINTER(ctypes.c_size_t),
    "uint64_t": ctypes.c_uint64,
    "void *": ctypes.c_void_p,
    "const void *": ctypes.c_void_p,
    "void **": ctypes.POINTER(ctypes.c_void_p),
    "aclrtDrvMemHandle": ctypes.c_void_p,  # typedef void *aclrtDrvMemHandle
    "aclrtDrvMemHandle *": ctypes.POINTER(ctypes.c_void_p),
    "aclrtPhysicalMemProp *": ctypes.POINTER(aclrtPhysicalMemProp),
    "const aclrtPhysicalMemProp *": ctypes.POINTER(aclrtPhysicalMemProp),
    "aclrtMemGranularityOptions": _enum,
    "aclrtMemcpyKind": _enum,
    "aclrtMemAttr": _enum,
}

# name: (return type, parameter types), exactly as declared in acl/acl_rt.h. The tests
# compile these declarations against the real header, so a mismatch fails to build.
SIGNATURES: dict[str, tuple[str, tuple[str, ...]]] = {
    "aclInit": ("aclError", ("const char *",)),
    "aclrtSetDevice": ("aclError", ("int32_t",)),
    "aclrtGetDevice": ("aclError", ("int32_t *",)),
    "aclrtSynchronizeDevice": ("aclError", ()),
    "aclrtMemGetAllocationGranularity": (
        "aclError",
        ("aclrtPhysicalMemProp *", "aclrtMemGranularityOptions", "size_t *"),
    ),
    "aclrtReserveMemAddress": ("aclError", ("void **", "size_t", "size_t", "void *", "uint64_t")),
    "aclrtReleaseMemAddress": ("aclError", ("void *",)),
    "aclrtMallocPhysical": (
        "aclError",
        ("aclrtDrvMemHandle *", "size_t", "const aclrtPhysicalMemProp *", "uint64_t"),
    ),
    "aclrtFreePhysical": ("aclError", ("aclrtDrvMemHandle",)),
    "aclrtMapMem": ("aclError", ("void *", "size_t", "size_t", "aclrtDrvMemHandle", "uint64_t")),
    "aclrtUnmapMem": ("aclError", ("void *",)),
    "aclrtMemcpy": (
        "aclError",
        ("void *", "size_t", "const void *", "size_t", "aclrtMemcpyKind"),
    ),
    "aclrtMallocHost": ("aclError", ("void **", "size_t")),
    "aclrtFreeHost": ("aclError", ("void *",)),
    "aclrtGetMemInfo": ("aclError", ("aclrtMemAttr", "size_t *", "size_t *")),
}
# Used when present (only for richer error messages).
OPTIONAL_SIGNATURES: dict[str, tuple[str, tuple[str, ...]]] = {
    "aclGetRecentErrMsg": ("const char *", ()),
}


def declare(lib: ctypes.CDLL, name: str, signature: tuple[str, tuple[str, ...]]) -> Any:
    """``lib.name`` with restype and argtypes set from a C signature of :data:`C_TYPES`."""
    return declare_with(lib, name, signature, C_TYPES)


def default_library() -> str:
    """Where ``libascendcl.so`` is: the CANN folders first, else a name for the loader.

    For the name alone, the runtime torch_npu loaded (linked into it, or found through its
    environment) is the one the loader returns, so torch_npu is loaded first when there is
    an NPU.
    """
    found = cann.find_library(LIBRARY_NAME)
    if found and os.path.isfile(found):
        return found
    from npu_platform import detect, device

    if detect.detect().is_npu:
        device.backend()  # imports torch_npu, which loads libascendcl
    return ctypes.util.find_library("ascendcl") or LIBRARY_NAME


class AclPhysicalMemory(PhysicalMemory):
    """A physical allocation (``aclrtDrvMemHandle``) created by :meth:`AclDriver.create`."""

    __slots__ = ()

    @property
    def ptr(self) -> int:
        """The ``aclrtDrvMemHandle`` (a pointer)."""
        return self.handle


class AclDriver(LibraryDriver):
    """The :class:`npu_platform.memory.driver.Driver` protocol over the ACL runtime."""

    name = "acl"
    api = "ACL"
    SUCCESS = ACL_SUCCESS
    SIGNATURES = SIGNATURES
    OPTIONAL_SIGNATURES = OPTIONAL_SIGNATURES
    C_TYPES = C_TYPES
    physical_type = AclPhysicalMemory
    LOAD_FAILURE = (
        "cannot load the Ascend runtime {library!r}: {error}. Install CANN and source its "
        "set_env.sh (or pass the path of libascendcl.so)."
    )
    MISSING_SYMBOL = "{library} has no {symbol}: the ACL virtual-memory API needs CANN 7.0 or newer"
    GRANULARITY_CALL = "aclrtMemGetAllocationGranularity"
    HOST_ALLOC_CALL = "aclrtMallocHost"

    def __init__(
        self,
        library: str | None = None,
        *,
        mem_attr: int = ACL_HBM_MEM_HUGE,
        info_attr: int = ACL_HBM_MEM,
        default_device: int = 0,
    ) -> None:
        """Load ``library`` (default: :func:`default_library`) and declare its prototypes.

        ``mem_attr`` is the ``aclrtPhysicalMemProp.memAttr`` of physical allocations (HBM, 2 MB
        huge pages); ``info_attr`` the ``aclrtGetMemInfo`` attribute (all HBM);
        ``default_device`` is used for calls that name no device on a thread with none set.
        """
        super().__init__(library or default_library(), default_device=default_device)
        self.mem_attr = mem_attr
        self.info_attr = info_attr
        self._init_lock = threading.Lock()

    # -- helpers ---------------------------------------------------------------------------

    def _error(self, call: str, rc: int) -> DriverError:
        name = ERROR_NAMES.get(rc, "see CANN error codes")
        message = f"{call} failed with ACL error {rc} ({name})"
        recent = self._fn.get("aclGetRecentErrMsg")
        if recent is not None:
            detail = recent()
            if detail:
                message += f": {detail.decode(errors='replace').strip()}"
        if rc == ACL_ERROR_RT_MEMORY_ALLOCATION:
            return OutOfDeviceMemory(message + " (device out of memory)", rc)
        return DriverError(message, rc)

    def _current_device(self) -> int | None:
        device = ctypes.c_int32(-1)
        rc = self._fn["aclrtGetDevice"](ctypes.byref(device))
        return device.value if rc == ACL_SUCCESS else None

    def _set_device(self, device: int) -> None:
        rc = self._fn["aclrtSetDevice"](device)
        if rc == ACL_ERROR_UNINITIALIZE:
            with self._init_lock:
                init_rc = self._fn["aclInit"](None)
            if init_rc not in (ACL_SUCCESS, ACL_ERROR_REPEAT_INITIALIZE):
                raise self._error("aclInit", init_rc)
            rc = self._fn["aclrtSetDevice"](device)
        if rc != ACL_SUCCESS:
            raise self._error(f"aclrtSetDevice({device})", rc)

    @contextlib.contextmanager
    def _on(self, device: int | None) -> Iterator[None]:
        """Run the body with ``device`` current (``None``: any device, else the default)."""
        previous = self._current_device()
        if device is None:
            device = previous if previous is not None else self.default_device
        if previous == device:
            yield
            return
        self._set_device(device)
        try:
            yield
        finally:
            if previous is not None:
                self._set_device(previous)

    def _prop(self, device: int) -> aclrtPhysicalMemProp:
        prop = aclrtPhysicalMemProp()
        prop.handleType = ACL_MEM_HANDLE_TYPE_NONE
        prop.allocationType = ACL_MEM_ALLOCATION_TYPE_PINNED
        prop.memAttr = self.mem_attr
        prop.location.id = device
        prop.location.type = ACL_MEM_LOCATION_TYPE_DEVICE
        prop.reserve = 0
        return prop

    # -- the ACL calls (run with the right device current) ---------------------------------

    def _do_granularity(self, device: int) -> int:
        prop = self._prop(device)
        value = ctypes.c_size_t(0)
        self._call(
            "aclrtMemGetAllocationGranularity",
            ctypes.byref(prop),
            ACL_RT_MEM_ALLOC_GRANULARITY_MINIMUM,
            ctypes.byref(value),
        )
        return value.value

    def _do_reserve(self, size: int) -> int:
        ptr = ctypes.c_void_p()
        self._call("aclrtReserveMemAddress", ctypes.byref(ptr), size, 0, None, 0)
        if not ptr.value:
            raise DriverError("aclrtReserveMemAddress returned a NULL address")
        return ptr.value

    def _do_release(self, va: int, size: int) -> None:
        self._call("aclrtReleaseMemAddress", ctypes.c_void_p(va))

    def _do_create(self, size: int, device: int) -> AclPhysicalMemory:
        prop = self._prop(device)
        handle = ctypes.c_void_p()
        self._call("aclrtMallocPhysical", ctypes.byref(handle), size, ctypes.byref(prop), 0)
        if not handle.value:
            raise DriverError("aclrtMallocPhysical returned a NULL handle")
        return AclPhysicalMemory(handle.value, size, device)

    def _do_free(self, handle: AclPhysicalMemory) -> None:
        self._call("aclrtFreePhysical", ctypes.c_void_p(handle.ptr))

    def _do_map(self, va: int, size: int, handle: AclPhysicalMemory, device: int) -> None:
        # ACL maps read/write for the device: there is no separate access call.
        self._call("aclrtMapMem", ctypes.c_void_p(va), size, 0, ctypes.c_void_p(handle.ptr), 0)

    def _do_unmap(self, va: int, size: int) -> None:
        self._call("aclrtUnmapMem", ctypes.c_void_p(va))  # aclrtUnmapMem takes no size

    def _do_copy_to_host(self, host_ptr: int, va: int, size: int) -> None:
        self._call(
            "aclrtMemcpy",
            ctypes.c_void_p(host_ptr),
            size,
            ctypes.c_void_p(va),
            size,
            ACL_MEMCPY_DEVICE_TO_HOST,
        )

    def _do_copy_from_host(self, va: int, host_ptr: int, size: int) -> None:
        self._call(
            "aclrtMemcpy",
            ctypes.c_void_p(va),
            size,
            ctypes.c_void_p(host_ptr),
            size,
            ACL_MEMCPY_HOST_TO_DEVICE,
        )

    def _do_host_alloc(self, size: int) -> int:
        ptr = ctypes.c_void_p()
        self._call("aclrtMallocHost", ctypes.byref(ptr), size)
        return ptr.value or 0

    def _do_host_free(self, ptr: int) -> None:
        self._call("aclrtFreeHost", ctypes.c_void_p(ptr))

    def _do_synchronize(self) -> None:
        self._call("aclrtSynchronizeDevice")

    def _do_mem_info(self) -> tuple[int, int]:
        free = ctypes.c_size_t(0)
        total = ctypes.c_size_t(0)
        self._call("aclrtGetMemInfo", self.info_attr, ctypes.byref(free), ctypes.byref(total))
        return free.value, total.value
