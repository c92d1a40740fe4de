"""The CUDA memory driver: on a real GPU (``cuda`` marker), and its prototypes against cuda.h.

The GPU tests are skipped unless ``libcuda.so.1`` loads and reports a device. The prototype
and struct-layout checks only need a C compiler and a ``cuda.h`` (CUDA toolkit), no GPU.
"""

from __future__ import annotations

import ctypes
import glob
import os
from collections.abc import Iterator

import pytest

from npu_platform.memory import driver as driver_mod
from npu_platform.memory.driver import DriverError, OutOfDeviceMemory
from npu_platform.memory.drivers import cuda
from tests.fake_acl import build
from tests.memory_scenarios import SCENARIOS, Harness

MB = 1 << 20


# -- prototypes and structs against the real cuda.h (no GPU needed) ---------------------------


def _cuda_include_dir() -> str | None:
    candidates = [
        os.path.join(os.environ[var], "include")
        for var in ("CUDA_HOME", "CUDA_PATH")
        if os.environ.get(var)
    ]
    candidates += ["/usr/local/cuda/include", *sorted(glob.glob("/usr/local/cuda-*/include"))]
    for folder in candidates:
        if os.path.isfile(os.path.join(folder, "cuda.h")):
            return folder
    return None


@pytest.fixture(scope="module")
def cuda_include() -> str:
    if build.compiler() is None:
        pytest.skip("no C compiler (cc/gcc/clang)")
    folder = _cuda_include_dir()
    if folder is None:
        pytest.skip("no cuda.h (set CUDA_HOME to a CUDA toolkit)")
    return folder


def _compile(tmp_path, name: str, source: str, include: str) -> str:
    path = tmp_path / f"{name}.c"
    path.write_text(source)
    return build.compile_shared(str(path), str(tmp_path / f"lib{name}.so"), [include])


def test_signatures_match_cuda_h(tmp_path, cuda_include: str) -> None:
    lines = ["#include <cuda.h>\n"]
    for name, (restype, params) in cuda.SIGNATURES.items():
        lines.append(f"{restype} CUDAAPI {name}({', '.join(params) or 'void'});\n")
    _compile(tmp_path, "cuda_signatures", "".join(lines), cuda_include)
    with pytest.raises(build.BuildError, match="conflicting types"):
        _compile(
            tmp_path,
            "cuda_signatures_bad",
            "#include <cuda.h>\nCUresult CUDAAPI cuMemUnmap(CUdeviceptr ptr, int size);\n",
            cuda_include,
        )


LAYOUT_BODY = r"""
#include <stddef.h>
#define N 16
void layout(long long *out) {
    long long v[N] = {
        sizeof(CUmemAllocationProp),
        offsetof(CUmemAllocationProp, type),
        offsetof(CUmemAllocationProp, requestedHandleTypes),
        offsetof(CUmemAllocationProp, location),
        offsetof(CUmemAllocationProp, win32HandleMetaData),
        offsetof(CUmemAllocationProp, allocFlags),
        sizeof(CUmemLocation),
        offsetof(CUmemLocation, type),
        offsetof(CUmemLocation, id),
        sizeof(CUmemAccessDesc),
        offsetof(CUmemAccessDesc, flags),
        CU_MEM_ALLOCATION_TYPE_PINNED,
        CU_MEM_LOCATION_TYPE_DEVICE,
        CU_MEM_ACCESS_FLAGS_PROT_READWRITE,
        CUDA_ERROR_OUT_OF_MEMORY,
        CU_MEMHOSTALLOC_PORTABLE,
    };
    for (int i = 0; i < N; i++) out[i] = v[i];
}
"""


def test_struct_layout_matches_cuda_h(tmp_path, cuda_include: str) -> None:
    path = _compile(tmp_path, "cuda_layout", "#include <cuda.h>\n" + LAYOUT_BODY, cuda_include)
    out = (ctypes.c_longlong * 16)()
    ctypes.CDLL(path).layout(out)
    prop, loc, desc = cuda.CUmemAllocationProp, cuda.CUmemLocation, cuda.CUmemAccessDesc
    assert list(out) == [
        ctypes.sizeof(prop),
        prop.type.offset,
        prop.requestedHandleTypes.offset,
        prop.location.offset,
        prop.win32HandleMetaData.offset,
        prop.allocFlags.offset,
        ctypes.sizeof(loc),
        loc.type.offset,
        loc.id.offset,
        ctypes.sizeof(desc),
        desc.flags.offset,
        cuda.CU_MEM_ALLOCATION_TYPE_PINNED,
        cuda.CU_MEM_LOCATION_TYPE_DEVICE,
        cuda.CU_MEM_ACCESS_FLAGS_PROT_READWRITE,
        cuda.CUDA_ERROR_OUT_OF_MEMORY,
        cuda.CU_MEMHOSTALLOC_PORTABLE,
    ]


def test_missing_libcuda_is_a_driver_error(tmp_path) -> None:
    with pytest.raises(DriverError, match="cannot load the CUDA driver"):
        cuda.CudaDriver(str(tmp_path / "libcuda.so.1"))


# -- on a real GPU -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def drv() -> Iterator[cuda.CudaDriver]:
    try:
        d = cuda.CudaDriver()
    except DriverError as exc:
        pytest.skip(f"no usable CUDA driver: {exc}")
    if d.device_count() < 1:
        pytest.skip("the CUDA driver reports no device")
    yield d
    d.close()


@pytest.mark.cuda
def test_protocol_and_granularity(drv: cuda.CudaDriver) -> None:
    assert isinstance(drv, driver_mod.Driver)
    g = drv.granularity(0)
    assert g > 0 and g % (2 * MB) == 0


@pytest.mark.cuda
def test_roundtrip_and_remap(drv: cuda.CudaDriver) -> None:
    g = drv.granularity(0)
    size = 2 * g
    va = drv.reserve(size, 0)
    host, host_handle = drv.host_alloc(size)
    try:
        for fill in (0x5A, 0xA5):
            handle = drv.create(size, 0)
            drv.map(va, size, handle, 0)
            ctypes.memset(host, fill, size)
            drv.copy_from_host(va, host, size)
            drv.synchronize(0)
            ctypes.memset(host, 0, size)
            drv.copy_to_host(host, va + g, 64)
            assert ctypes.string_at(host, 64) == bytes([fill]) * 64
            drv.unmap(va, size)
            drv.free(handle)
    finally:
        drv.host_free(host_handle)
        drv.release(va, size)


@pytest.mark.cuda
def test_mem_info_and_oom(drv: cuda.CudaDriver) -> None:
    free, total = drv.mem_info(0)
    assert 0 < free <= total
    g = drv.granularity(0)
    too_big = (total // g + 1) * g
    with pytest.raises(OutOfDeviceMemory) as info:
        drv.create(too_big, 0)
    assert info.value.code == cuda.CUDA_ERROR_OUT_OF_MEMORY


# -- the shared manager scenarios on the CUDA driver -------------------------------------------


class CudaHarness(Harness):
    """The CUDA driver on device 0; a real GPU cannot be limited, so OOM scenarios skip."""

    name = "cuda"

    def __init__(self, driver: cuda.CudaDriver) -> None:
        self.driver = driver

    def make_driver(self) -> cuda.CudaDriver:
        return self.driver

    def skip(self, reason: str) -> None:
        pytest.skip(reason)


@pytest.mark.cuda
@pytest.mark.parametrize("scenario", list(SCENARIOS.values()), ids=list(SCENARIOS))
def test_scenario(scenario, drv: cuda.CudaDriver) -> None:
    scenario(CudaHarness(drv))
