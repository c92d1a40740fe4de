"""The CUDA memory driver against a fake libcuda.so.1 compiled from C with the real cuda.h.

The fake (tests/fake_cuda/fake_cuda.c) implements the driver-API calls the CUDA driver makes
over host memory and fails with the CUresult codes CUDA documents, so these tests check that
the driver calls CUDA the way cuda.h and the driver API require (primary contexts, access
set after mapping, versioned symbols), that CUresults become the driver's exceptions with the
call and the error name in the message, and (through the shared manager scenarios) that the
memory manager's map/unmap/pause/resume work on top of it. No GPU is needed.
"""

from __future__ import annotations

import ctypes
import threading

import pytest

from npu_platform.memory import driver as driver_mod
from npu_platform.memory.driver import DriverError, OutOfDeviceMemory
from npu_platform.memory.drivers import cuda, load_driver
from tests.fake_acl import build as acl_build
from tests.fake_cuda import build
from tests.memory_scenarios import SCENARIOS, Harness, pattern, read, write

MB = 1 << 20
GRAN = 2 * MB

CUDA_ERROR_INVALID_VALUE = 1
CUDA_ERROR_NO_DEVICE = 100
CUDA_ERROR_INVALID_DEVICE = 101
CUDA_ERROR_ILLEGAL_ADDRESS = 700

pytestmark = pytest.mark.skipif(acl_build.compiler() is None, reason="no C compiler")


# -- fixtures ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def build_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(tmp_path_factory.mktemp("fake_cuda"))


@pytest.fixture(scope="module")
def fake_lib_path(build_dir: str) -> str:
    include = build.cuda_include_dir()
    if include is None:
        pytest.skip("no cuda.h (CUDA toolkit, or the triton / nvidia-cuda wheels)")
    return build.build_fake_libcuda(build_dir, include)


class Fake:
    """The fake library: its CUDA calls (prototypes from the driver) and fake_cuda_* exports."""

    def __init__(self, path: str) -> None:
        self.lib = ctypes.CDLL(path)
        for name, signature in cuda.SIGNATURES.items():
            setattr(self, name, driver_mod.declare(self.lib, name, signature, cuda.C_TYPES))
        self.lib.fake_cuda_set_mem_limit.argtypes = [ctypes.c_size_t]
        self.lib.fake_cuda_set_mem_limit.restype = None
        self.lib.fake_cuda_fail.argtypes = [ctypes.c_char_p, ctypes.c_int, ctypes.c_int]
        self.lib.fake_cuda_fail.restype = None
        self.lib.fake_cuda_used_bytes.argtypes = [ctypes.c_int]
        self.lib.fake_cuda_used_bytes.restype = ctypes.c_size_t
        self.lib.fake_cuda_primary_refcount.argtypes = [ctypes.c_int]
        for kind in ("physical", "mappings", "reservations", "host"):
            getattr(self.lib, f"fake_cuda_live_{kind}").restype = ctypes.c_size_t
        assert self.cuInit(0) == 0

    def live(self) -> dict[str, int]:
        return {
            kind: getattr(self.lib, f"fake_cuda_live_{kind}")()
            for kind in ("physical", "mappings", "reservations", "host")
        }

    def set_limit(self, nbytes: int) -> None:
        self.lib.fake_cuda_set_mem_limit(nbytes)

    def used(self, device: int = 0) -> int:
        return self.lib.fake_cuda_used_bytes(device)

    def fail(self, call: str | None, code: int = 0, skip: int = 0) -> None:
        """Make the next call of ``call`` (after ``skip`` successful ones) return ``code``."""
        self.lib.fake_cuda_fail(call.encode() if call else None, code, skip)

    def fail_pending(self) -> bool:
        return bool(self.lib.fake_cuda_fail_pending())

    def current_device(self) -> int:
        return self.lib.fake_cuda_current_device()

    def refcount(self, device: int) -> int:
        return self.lib.fake_cuda_primary_refcount(device)

    def make_current(self, device: int) -> None:
        """Retain ``device``'s primary context and make it current on this thread."""
        ctx = cuda.CUcontext()
        assert self.cuDevicePrimaryCtxRetain(ctypes.byref(ctx), device) == 0
        assert self.cuCtxSetCurrent(ctx) == 0

    def drop_current(self, device: int) -> None:
        assert self.cuCtxSetCurrent(None) == 0
        assert self.cuDevicePrimaryCtxRelease_v2(device) == 0


@pytest.fixture(scope="module")
def fake(fake_lib_path: str) -> Fake:
    return Fake(fake_lib_path)


@pytest.fixture(autouse=True)
def no_leaks(request: pytest.FixtureRequest):
    """Every test leaves the fake as it found it; injected failures do not outlive a test."""
    if "fake" not in request.fixturenames:
        yield
        return
    fake: Fake = request.getfixturevalue("fake")
    fake.set_limit(0)
    before = fake.live()
    yield
    fake.fail(None)
    fake.set_limit(0)
    assert fake.live() == before


@pytest.fixture
def drv(fake_lib_path: str, fake: Fake):
    d = cuda.CudaDriver(fake_lib_path)
    yield d
    d.close()


# -- the driver over the fake ------------------------------------------------------------------


def test_driver_satisfies_protocol_and_loads_by_name(fake_lib_path: str, fake: Fake) -> None:
    d = load_driver("cuda", library=fake_lib_path, default_device=1)
    try:
        assert isinstance(d, cuda.CudaDriver) and isinstance(d, driver_mod.Driver)
        assert (d.name, d.default_device, d.device_count()) == ("cuda", 1, 2)
        assert d.granularity(0) == d.granularity(1) == GRAN
    finally:
        d.close()


def test_roundtrip_at_an_offset(drv: cuda.CudaDriver, fake: Fake) -> None:
    size = 3 * GRAN
    va = drv.reserve(size, 0)
    assert va % GRAN == 0
    handle = drv.create(size, 0)
    assert isinstance(handle, cuda.CudaPhysicalMemory) and handle.size == size
    drv.map(va, size, handle, 0)
    host, host_handle = drv.host_alloc(size)
    try:
        data = pattern(7, size)
        ctypes.memmove(host, data, size)
        drv.copy_from_host(va, host, size)
        drv.synchronize(0)
        ctypes.memset(host, 0, size)
        drv.copy_to_host(host, va + GRAN + 5, 100)
        assert ctypes.string_at(host, 100) == data[GRAN + 5 : GRAN + 105]
        assert fake.used(0) == size and fake.used(1) == 0
    finally:
        drv.host_free(host_handle)
        drv.unmap(va, size)
        drv.free(handle)
        drv.release(va, size)
    assert fake.used(0) == 0


def test_sizes_round_up_and_unrecorded_release_rounds_too(
    drv: cuda.CudaDriver, fake_lib_path: str, fake: Fake
) -> None:
    va = drv.reserve(GRAN + 1, 0)
    handle = drv.create(GRAN + 1, 1)
    assert handle.size == 2 * GRAN and fake.used(1) == 2 * GRAN
    drv.free(handle)
    # a driver that did not reserve the range rounds the size the way reserve() did
    # (cuMemAddressFree needs the exact reserved size)
    other = cuda.CudaDriver(fake_lib_path)
    try:
        other.release(va, GRAN + 1)
    finally:
        other.close()
    with pytest.raises(DriverError, match=r"cuMemAddressFree failed with CUDA error 1 "):
        drv.release(va, GRAN + 1)  # already gone


def test_remap_at_the_same_address(drv: cuda.CudaDriver) -> None:
    """Pause/resume in miniature: unmap + free, then create + map at the same address."""
    va = drv.reserve(GRAN, 0)
    try:
        for seed in (1, 2):
            handle = drv.create(GRAN, 0)
            drv.map(va, GRAN, handle, 0)
            data = pattern(seed, 4096)
            write(drv, va, data)
            assert read(drv, va, 4096) == data
            drv.unmap(va, GRAN)
            drv.free(handle)
    finally:
        drv.release(va, GRAN)


def test_map_sets_access(drv: cuda.CudaDriver, fake: Fake) -> None:
    """Mapped memory is not accessible before cuMemSetAccess; map() makes it read-write."""
    va = drv.reserve(2 * GRAN, 0)
    handle = drv.create(GRAN, 0)
    try:
        assert fake.cuMemMap(va + GRAN, GRAN, 0, handle.handle, 0) == 0  # no access set
        with pytest.raises(DriverError) as info:
            read(drv, va + GRAN, 16)
        assert info.value.code == CUDA_ERROR_INVALID_VALUE
        assert "cuMemcpyDtoH_v2 failed with CUDA error 1 (CUDA_ERROR_INVALID_VALUE)" in str(
            info.value
        )
        assert fake.cuMemUnmap(va + GRAN, GRAN) == 0
        drv.map(va + GRAN, GRAN, handle, 0)
        write(drv, va + GRAN, b"abc")
        assert read(drv, va + GRAN, 3) == b"abc"
        drv.unmap(va + GRAN, GRAN)
    finally:
        drv.free(handle)
        drv.release(va, 2 * GRAN)


def test_mem_info_is_per_device(drv: cuda.CudaDriver, fake: Fake) -> None:
    fake.set_limit(64 * MB)
    handle = drv.create(10 * MB, 1)
    try:
        assert drv.mem_info(1) == (54 * MB, 64 * MB)
        assert drv.mem_info(0) == (64 * MB, 64 * MB)
    finally:
        drv.free(handle)
    assert drv.mem_info(1) == (64 * MB, 64 * MB)


def test_oom_is_out_of_device_memory(drv: cuda.CudaDriver, fake: Fake) -> None:
    fake.set_limit(4 * MB)
    first = drv.create(4 * MB, 0)
    try:
        with pytest.raises(OutOfDeviceMemory) as info:
            drv.create(GRAN, 0)
        assert info.value.code == cuda.CUDA_ERROR_OUT_OF_MEMORY
        assert isinstance(info.value, MemoryError)
        assert str(info.value) == (
            "cuMemCreate failed with CUDA error 2 (CUDA_ERROR_OUT_OF_MEMORY) (device out of memory)"
        )
    finally:
        drv.free(first)
    drv.free(drv.create(4 * MB, 0))  # the memory came back


def test_invalid_device_names_the_call(drv: cuda.CudaDriver) -> None:
    with pytest.raises(DriverError) as info:
        drv.create(GRAN, 5)
    assert info.value.code == CUDA_ERROR_INVALID_DEVICE
    assert not isinstance(info.value, OutOfDeviceMemory)
    assert "cuDeviceGet failed with CUDA error 101 (CUDA_ERROR_INVALID_DEVICE)" in str(info.value)


def test_release_while_mapped_and_copy_from_unmapped_fail(drv: cuda.CudaDriver) -> None:
    va = drv.reserve(GRAN, 0)
    host, host_handle = drv.host_alloc(64)
    try:
        with pytest.raises(DriverError, match="cuMemcpyDtoH_v2 failed") as info:
            drv.copy_to_host(host, va, 16)
        assert info.value.code == CUDA_ERROR_INVALID_VALUE
        handle = drv.create(GRAN, 0)
        drv.map(va, GRAN, handle, 0)
        drv.free(handle)  # CUDA allows it: the memory goes with the mapping
        write(drv, va, b"still mapped")
        assert read(drv, va, 12) == b"still mapped"
        with pytest.raises(DriverError, match="cuMemAddressFree failed") as info:
            drv.release(va, GRAN)
        assert info.value.code == CUDA_ERROR_INVALID_VALUE
        drv.unmap(va, GRAN)
        with pytest.raises(DriverError, match="cuMemcpyHtoD_v2 failed"):
            write(drv, va, b"x")
    finally:
        drv.host_free(host_handle)
        drv.release(va, GRAN)


def test_set_access_failure_undoes_the_mapping(drv: cuda.CudaDriver, fake: Fake) -> None:
    va = drv.reserve(GRAN, 0)
    handle = drv.create(GRAN, 0)
    try:
        fake.fail("cuMemSetAccess", CUDA_ERROR_INVALID_DEVICE)
        with pytest.raises(DriverError, match="cuMemSetAccess failed with CUDA error 101"):
            drv.map(va, GRAN, handle, 0)
        assert fake.live()["mappings"] == 0
        drv.map(va, GRAN, handle, 0)  # the range is free again
        drv.unmap(va, GRAN)
    finally:
        drv.free(handle)
        drv.release(va, GRAN)


def test_unknown_cuda_error_code(drv: cuda.CudaDriver, fake: Fake) -> None:
    fake.fail("cuCtxSynchronize", 12345)
    with pytest.raises(DriverError) as info:
        drv.synchronize(0)
    assert info.value.code == 12345
    assert str(info.value) == "cuCtxSynchronize failed with CUDA error 12345 (unknown CUresult)"
    fake.fail("cuCtxSynchronize", CUDA_ERROR_ILLEGAL_ADDRESS)
    with pytest.raises(DriverError, match=r"error 700 \(CUDA_ERROR_ILLEGAL_ADDRESS\)"):
        drv.synchronize(0)
    drv.synchronize(0)


def test_host_memory_errors(drv: cuda.CudaDriver, fake: Fake) -> None:
    fake.fail("cuMemHostAlloc", cuda.CUDA_ERROR_OUT_OF_MEMORY)
    with pytest.raises(OutOfDeviceMemory, match="cuMemHostAlloc failed"):
        drv.host_alloc(100)
    ptr, handle = drv.host_alloc(100)
    assert ptr == handle.ptr and handle.size == 100
    drv.host_free(handle)
    with pytest.raises(DriverError, match="already freed"):
        drv.host_free(handle)
    with pytest.raises(DriverError, match="not host memory from CudaDriver.host_alloc"):
        drv.host_free(ptr)
    with pytest.raises(DriverError, match="not a CUDA physical allocation"):
        drv.free(handle)


# -- contexts ----------------------------------------------------------------------------------


def test_calls_run_in_the_devices_primary_context_and_restore_the_callers(
    drv: cuda.CudaDriver, fake: Fake
) -> None:
    fake.set_limit(64 * MB)
    fake.make_current(1)
    try:
        handle = drv.create(4 * MB, 0)
        assert fake.current_device() == 1  # restored
        # mem_info reports the device whose context is current: device 0's was made current
        assert drv.mem_info(0) == (60 * MB, 64 * MB)
        assert fake.current_device() == 1
        drv.free(handle)
    finally:
        fake.drop_current(1)


def test_a_current_matching_context_is_used_as_is(drv: cuda.CudaDriver, fake: Fake) -> None:
    drv.mem_info(0)  # retains device 0's primary context
    fake.make_current(0)
    try:
        fake.fail("cuCtxSetCurrent", CUDA_ERROR_INVALID_VALUE)
        drv.synchronize(0)
        assert fake.fail_pending()  # no context switch was needed
        with pytest.raises(DriverError, match="cuCtxSetCurrent failed with CUDA error 1"):
            drv.synchronize(1)
    finally:
        fake.fail(None)
        fake.drop_current(0)


def test_a_fresh_thread_gets_a_context_and_is_left_without_one(
    drv: cuda.CudaDriver, fake: Fake
) -> None:
    seen: dict[str, object] = {}

    def work() -> None:
        seen["before"] = fake.current_device()
        try:
            seen["info"] = drv.mem_info(1)
        except Exception as exc:  # pragma: no cover - reported below
            seen["error"] = exc
        seen["after"] = fake.current_device()

    t = threading.Thread(target=work)
    t.start()
    t.join()
    assert "error" not in seen, seen.get("error")
    assert (seen["before"], seen["after"]) == (-1, -1)
    # without the driver making a context current, CUDA refuses the call
    out = (ctypes.c_size_t(), ctypes.c_size_t())
    rc: dict[str, int] = {}
    t = threading.Thread(
        target=lambda: rc.setdefault("rc", fake.cuMemGetInfo_v2(*map(ctypes.byref, out)))
    )
    t.start()
    t.join()
    assert rc["rc"] == 201  # CUDA_ERROR_INVALID_CONTEXT


def test_close_releases_the_retained_primary_contexts(fake_lib_path: str, fake: Fake) -> None:
    before = (fake.refcount(0), fake.refcount(1))
    d = cuda.CudaDriver(fake_lib_path)
    d.mem_info(0)
    d.mem_info(1)
    d.mem_info(1)  # retained once per device
    assert (fake.refcount(0), fake.refcount(1)) == (before[0] + 1, before[1] + 1)
    d.close()
    assert (fake.refcount(0), fake.refcount(1)) == before
    d.close()  # nothing left to release
    assert (fake.refcount(0), fake.refcount(1)) == before


# -- loading -----------------------------------------------------------------------------------


def test_cuinit_failure_is_a_driver_error(
    fake_lib_path: str, fake: Fake, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_CUDA_DEVICE_COUNT", "0")
    with pytest.raises(DriverError) as info:
        cuda.CudaDriver(fake_lib_path)
    assert info.value.code == CUDA_ERROR_NO_DEVICE
    assert str(info.value) == "cuInit failed with CUDA error 100 (CUDA_ERROR_NO_DEVICE)"


def test_library_without_the_vmm_api_is_a_driver_error(build_dir: str) -> None:
    source = f"{build_dir}/old_cuda.c"
    with open(source, "w") as fh:
        fh.write("int cuInit(unsigned int flags) { return (int)flags; }\n")
    path = acl_build.compile_shared(source, f"{build_dir}/libold_cuda.so", [])
    with pytest.raises(DriverError, match="has no cuGetErrorName: the CUDA driver is too old"):
        cuda.CudaDriver(path)


# -- the shared manager scenarios on the CUDA driver -------------------------------------------


class FakeCudaHarness(Harness):
    """The CUDA driver over the fake library; memory limits through the fake's setter."""

    name = "cuda-fake"

    def __init__(self, path: str, fake: Fake) -> None:
        self.path = path
        self.fake = fake

    def make_driver(self) -> cuda.CudaDriver:
        return cuda.CudaDriver(self.path)

    def limit_free(self, driver: object, free_bytes: int | None) -> None:
        self.fake.set_limit(0 if free_bytes is None else self.fake.used(0) + free_bytes)

    def skip(self, reason: str) -> None:
        pytest.skip(reason)


@pytest.mark.parametrize("scenario", list(SCENARIOS.values()), ids=list(SCENARIOS))
def test_scenario(scenario, fake_lib_path: str, fake: Fake) -> None:
    scenario(FakeCudaHarness(fake_lib_path, fake))
