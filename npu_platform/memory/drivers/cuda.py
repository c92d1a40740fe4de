"""Memory driver for NVIDIA GPUs: ctypes over the CUDA driver API (``libcuda.so.1``).

The same virtual-memory recipe torch_memory_saver uses: ``cuMemAddressReserve`` /
``cuMemCreate`` / ``cuMemMap`` / ``cuMemSetAccess``, and ``cuMemUnmap`` / ``cuMemRelease`` /
``cuMemAddressFree`` to undo them. Prototypes and structs follow ``cuda.h`` (CUDA 12); where
``cuda.h`` maps a name to a versioned symbol (``cuMemcpyDtoH`` -> ``cuMemcpyDtoH_v2``,
``cuMemGetInfo`` -> ``cuMemGetInfo_v2``, ``cuDevicePrimaryCtxRelease`` -> ``_v2``) the
versioned symbol is loaded.

Importing this module loads nothing; :class:`CudaDriver` loads the library in its constructor
and raises :class:`DriverError` when it cannot (no driver installed, no GPU).

Contexts: every call runs with the device's primary context current (retained once per device,
the one the CUDA runtime and PyTorch use). When the calling thread had another context
current, it is restored afterwards. ``CUDA_ERROR_OUT_OF_MEMORY`` (2) raises
:class:`OutOfDeviceMemory`; any other nonzero result raises :class:`DriverError` naming the call.
"""

from __future__ import annotations

import contextlib
import ctypes
import threading
from collections.abc import Iterator
from typing import Any

from npu_platform.memory.driver import (
    DriverError,
    LibraryDriver,
    OutOfDeviceMemory,
    PhysicalMemory,
)

LIBRARY_NAME = "libcuda.so.1"

CUDA_SUCCESS = 0
CUDA_ERROR_OUT_OF_MEMORY = 2

CU_MEM_ALLOCATION_TYPE_PINNED = 0x1  # CUmemAllocationType
CU_MEM_HANDLE_TYPE_NONE = 0x0  # CUmemAllocationHandleType
CU_MEM_LOCATION_TYPE_DEVICE = 0x1  # CUmemLocationType
CU_MEM_ACCESS_FLAGS_PROT_READWRITE = 0x3  # CUmemAccess_flags
CU_MEM_ALLOC_GRANULARITY_MINIMUM = 0x0  # CUmemAllocationGranularity_flags
CU_MEMHOSTALLOC_PORTABLE = 0x01  # pinned for every context, not only the current one

CUresult = ctypes.c_int
CUdevice = ctypes.c_int
CUcontext = ctypes.c_void_p
CUdeviceptr = ctypes.c_ulonglong  # 64-bit platforms
CUmemGenericAllocationHandle = ctypes.c_ulonglong
_enum = ctypes.c_int


class CUmemLocation(ctypes.Structure):
    """``struct CUmemLocation_st { CUmemLocationType type; int id; }``."""

    _fields_ = [("type", _enum), ("id", ctypes.c_int)]


class _CUmemAllocFlags(ctypes.Structure):
    _fields_ = [
        ("compressionType", ctypes.c_ubyte),
        ("gpuDirectRDMACapable", ctypes.c_ubyte),
        ("usage", ctypes.c_ushort),
        ("reserved", ctypes.c_ubyte * 4),
    ]


class CUmemAllocationProp(ctypes.Structure):
    """``CUmemAllocationProp``: type, requestedHandleTypes, location, win32HandleMetaData and
    allocFlags, at offsets 0, 4, 8, 16 and 24; 32 bytes in all.
    """

    _fields_ = [
        ("type", _enum),
        ("requestedHandleTypes", _enum),
        ("location", CUmemLocation),
        ("win32HandleMetaData", ctypes.c_void_p),
        ("allocFlags", _CUmemAllocFlags),
    ]


class CUmemAccessDesc(ctypes.Structure):
    """``struct CUmemAccessDesc_st { CUmemLocation location; CUmemAccess_flags flags; }``."""

    _fields_ = [("location", CUmemLocation), ("flags", _enum)]


_P = ctypes.POINTER
# C types used in the prototypes below, spelled as in cuda.h, and their ctypes.
C_TYPES: dict[str, Any] = {
    "CUresult": CUresult,
    "unsigned int": ctypes.c_uint,
    "int": ctypes.c_int,
    "int *": _P(ctypes.c_int),
    "size_t": ctypes.c_size_t,
    "size_t *": _P(ctypes.c_size_t),
    "unsigned long long": ctypes.c_ulonglong,
    "void *": ctypes.c_void_p,
    "const void *": ctypes.c_void_p,
    "void **": _P(ctypes.c_void_p),
    "const char **": _P(ctypes.c_char_p),
    "CUdevice": CUdevice,
    "CUdevice *": _P(CUdevice),
    "CUcontext": CUcontext,
    "CUcontext *": _P(CUcontext),
    "CUdeviceptr": CUdeviceptr,
    "CUdeviceptr *": _P(CUdeviceptr),
    "CUmemGenericAllocationHandle": CUmemGenericAllocationHandle,
    "CUmemGenericAllocationHandle *": _P(CUmemGenericAllocationHandle),
    "const CUmemAllocationProp *": _P(CUmemAllocationProp),
    "const CUmemAccessDesc *": _P(CUmemAccessDesc),
    "CUmemAllocationGranularity_flags": _enum,
}

# Symbol: (return type, parameter types) as declared in cuda.h (CUDA 12/13). The _v2 names
# are the symbols cuda.h's macros map the plain names to.
SIGNATURES: dict[str, tuple[str, tuple[str, ...]]] = {
    "cuInit": ("CUresult", ("unsigned int",)),
    "cuGetErrorName": ("CUresult", ("CUresult", "const char **")),
    "cuDeviceGet": ("CUresult", ("CUdevice *", "int")),
    "cuDeviceGetCount": ("CUresult", ("int *",)),
    "cuDevicePrimaryCtxRetain": ("CUresult", ("CUcontext *", "CUdevice")),
    "cuDevicePrimaryCtxRelease_v2": ("CUresult", ("CUdevice",)),
    "cuCtxGetCurrent": ("CUresult", ("CUcontext *",)),
    "cuCtxSetCurrent": ("CUresult", ("CUcontext",)),
    "cuCtxSynchronize": ("CUresult", ()),
    "cuMemGetAllocationGranularity": (
        "CUresult",
        ("size_t *", "const CUmemAllocationProp *", "CUmemAllocationGranularity_flags"),
    ),
    "cuMemAddressReserve": (
        "CUresult",
        ("CUdeviceptr *", "size_t", "size_t", "CUdeviceptr", "unsigned long long"),
    ),
    "cuMemAddressFree": ("CUresult", ("CUdeviceptr", "size_t")),
    "cuMemCreate": (
        "CUresult",
        (
            "CUmemGenericAllocationHandle *",
            "size_t",
            "const CUmemAllocationProp *",
            "unsigned long long",
        ),
    ),
    "cuMemRelease": ("CUresult", ("CUmemGenericAllocationHandle",)),
    "cuMemMap": (
        "CUresult",
        ("CUdeviceptr", "size_t", "size_t", "CUmemGenericAllocationHandle", "unsigned long long"),
    ),
    "cuMemUnmap": ("CUresult", ("CUdeviceptr", "size_t")),
    "cuMemSetAccess": ("CUresult", ("CUdeviceptr", "size_t", "const CUmemAccessDesc *", "size_t")),
    "cuMemcpyDtoH_v2": ("CUresult", ("void *", "CUdeviceptr", "size_t")),
    "cuMemcpyHtoD_v2": ("CUresult", ("CUdeviceptr", "const void *", "size_t")),
    "cuMemHostAlloc": ("CUresult", ("void **", "size_t", "unsigned int")),
    "cuMemFreeHost": ("CUresult", ("void *",)),
    "cuMemGetInfo_v2": ("CUresult", ("size_t *", "size_t *")),
}


class CudaPhysicalMemory(PhysicalMemory):
    """A ``CUmemGenericAllocationHandle`` created by :meth:`CudaDriver.create`."""

    __slots__ = ()


class CudaDriver(LibraryDriver):
    """The :class:`npu_platform.memory.driver.Driver` protocol over the CUDA driver API."""

    name = "cuda"
    api = "CUDA"
    SUCCESS = CUDA_SUCCESS
    SIGNATURES = SIGNATURES
    C_TYPES = C_TYPES
    physical_type = CudaPhysicalMemory
    LOAD_FAILURE = (
        "cannot load the CUDA driver {library!r}: {error}. Is the NVIDIA driver installed?"
    )
    MISSING_SYMBOL = "{library} has no {symbol}: the CUDA driver is too old"
    GRANULARITY_CALL = "cuMemGetAllocationGranularity"
    HOST_ALLOC_CALL = "cuMemHostAlloc"

    def __init__(self, library: str = LIBRARY_NAME, *, default_device: int = 0) -> None:
        super().__init__(library, default_device=default_device)
        self._contexts: dict[int, int] = {}
        self._ctx_lock = threading.Lock()
        self._call("cuInit", 0)

    # -- helpers ---------------------------------------------------------------------------

    def _error(self, call: str, rc: int) -> DriverError:
        name = ctypes.c_char_p()
        if self._fn["cuGetErrorName"](rc, ctypes.byref(name)) == CUDA_SUCCESS and name.value:
            label = name.value.decode(errors="replace")
        else:
            label = "unknown CUresult"
        message = f"{call} failed with CUDA error {rc} ({label})"
        if rc == CUDA_ERROR_OUT_OF_MEMORY:
            return OutOfDeviceMemory(message + " (device out of memory)", rc)
        return DriverError(message, rc)

    def device_count(self) -> int:
        count = ctypes.c_int(0)
        self._call("cuDeviceGetCount", ctypes.byref(count))
        return count.value

    def _context(self, device: int) -> int:
        """The retained primary context of ``device`` (retained once, kept until close())."""
        with self._ctx_lock:
            ctx = self._contexts.get(device)
            if ctx is None:
                dev = CUdevice()
                self._call("cuDeviceGet", ctypes.byref(dev), device)
                handle = CUcontext()
                self._call("cuDevicePrimaryCtxRetain", ctypes.byref(handle), dev)
                ctx = handle.value or 0
                self._contexts[device] = ctx
            return ctx

    @contextlib.contextmanager
    def _on(self, device: int | None) -> Iterator[None]:
        """Run the body with the primary context of ``device`` current (``None``: the default)."""
        target = self._context(self.default_device if device is None else device)
        current = CUcontext()
        self._call("cuCtxGetCurrent", ctypes.byref(current))
        previous = current.value or 0
        if previous == target:
            yield
            return
        self._call("cuCtxSetCurrent", CUcontext(target))
        try:
            yield
        finally:
            self._call("cuCtxSetCurrent", CUcontext(previous or None))

    def _prop(self, device: int) -> CUmemAllocationProp:
        prop = CUmemAllocationProp()  # zero-filled: no win32 metadata, default allocFlags
        prop.type = CU_MEM_ALLOCATION_TYPE_PINNED
        prop.requestedHandleTypes = CU_MEM_HANDLE_TYPE_NONE
        prop.location.type = CU_MEM_LOCATION_TYPE_DEVICE
        prop.location.id = device
        return prop

    def _unrecorded_size(self, size: int) -> int:
        # cuMemAddressFree needs the reserved size: release() passes the one reserve()
        # recorded, and rounds a size it did not record the way reserve() would have.
        return self._round(size, self.default_device)

    def close(self) -> None:
        """Release the primary contexts this driver retained."""
        with self._ctx_lock:
            for device in list(self._contexts):
                dev = CUdevice()
                if self._fn["cuDeviceGet"](ctypes.byref(dev), device) == CUDA_SUCCESS:
                    self._fn["cuDevicePrimaryCtxRelease_v2"](dev)
                del self._contexts[device]

    # -- the CUDA calls (run with the right context current) -------------------------------

    def _do_granularity(self, device: int) -> int:
        prop = self._prop(device)
        value = ctypes.c_size_t(0)
        self._call(
            "cuMemGetAllocationGranularity",
            ctypes.byref(value),
            ctypes.byref(prop),
            CU_MEM_ALLOC_GRANULARITY_MINIMUM,
        )
        return value.value

    def _do_reserve(self, size: int) -> int:
        ptr = CUdeviceptr(0)
        self._call("cuMemAddressReserve", ctypes.byref(ptr), size, 0, 0, 0)
        return ptr.value

    def _do_release(self, va: int, size: int) -> None:
        self._call("cuMemAddressFree", va, size)

    def _do_create(self, size: int, device: int) -> CudaPhysicalMemory:
        prop = self._prop(device)
        handle = CUmemGenericAllocationHandle(0)
        self._call("cuMemCreate", ctypes.byref(handle), size, ctypes.byref(prop), 0)
        return CudaPhysicalMemory(handle.value, size, device)

    def _do_free(self, handle: CudaPhysicalMemory) -> None:
        self._call("cuMemRelease", handle.handle)

    def _do_map(self, va: int, size: int, handle: CudaPhysicalMemory, device: int) -> None:
        access = CUmemAccessDesc()
        access.location.type = CU_MEM_LOCATION_TYPE_DEVICE
        access.location.id = device
        access.flags = CU_MEM_ACCESS_FLAGS_PROT_READWRITE
        self._call("cuMemMap", va, size, 0, handle.handle, 0)
        try:
            self._call("cuMemSetAccess", va, size, ctypes.byref(access), 1)
        except DriverError:
            self._fn["cuMemUnmap"](va, size)
            raise

    def _do_unmap(self, va: int, size: int) -> None:
        self._call("cuMemUnmap", va, size)

    def _do_copy_to_host(self, host_ptr: int, va: int, size: int) -> None:
        self._call("cuMemcpyDtoH_v2", ctypes.c_void_p(host_ptr), va, size)

    def _do_copy_from_host(self, va: int, host_ptr: int, size: int) -> None:
        self._call("cuMemcpyHtoD_v2", va, ctypes.c_void_p(host_ptr), size)

    def _do_host_alloc(self, size: int) -> int:
        ptr = ctypes.c_void_p()
        self._call("cuMemHostAlloc", ctypes.byref(ptr), size, CU_MEMHOSTALLOC_PORTABLE)
        return ptr.value or 0

    def _do_host_free(self, ptr: int) -> None:
        self._call("cuMemFreeHost", ctypes.c_void_p(ptr))

    def _do_synchronize(self) -> None:
        self._call("cuCtxSynchronize")

    def _do_mem_info(self) -> tuple[int, int]:
        free = ctypes.c_size_t(0)
        total = ctypes.c_size_t(0)
        self._call("cuMemGetInfo_v2", ctypes.byref(free), ctypes.byref(total))
        return free.value, total.value
