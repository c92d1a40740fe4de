"""The ACL memory driver against a fake libascendcl.so compiled from C with the real headers.

The fake (tests/fake_acl/fake_ascendcl.c) implements the ACL virtual-memory calls over host
memory and enforces the documented constraints, so these tests check both that the driver
calls ACL the way the headers and the CANN documentation require, and (through the shared
manager scenarios) that the manager works on top of it.
"""

from __future__ import annotations

import ctypes
import os
import threading

import pytest

from npu_platform.memory import driver as driver_mod
from npu_platform.memory.driver import DriverError, OutOfDeviceMemory
from npu_platform.memory.drivers import acl
from tests.fake_acl import build
from tests.memory_scenarios import SCENARIOS, Harness

MB = 1 << 20
GRAN = 2 * MB

pytestmark = pytest.mark.skipif(build.compiler() is None, reason="no C compiler (cc/gcc/clang)")


# -- fixtures ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def build_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(tmp_path_factory.mktemp("fake_acl"))


@pytest.fixture(scope="module")
def fake_lib_path(build_dir: str) -> str:
    return build.build_fake_ascendcl(build_dir)


class Fake:
    """The fake library's raw functions (ACL calls and the fake_acl_* test exports)."""

    def __init__(self, path: str) -> None:
        self.lib = ctypes.CDLL(path)
        for name, signature in acl.SIGNATURES.items():
            setattr(self, name, acl.declare(self.lib, name, signature))
        self.lib.aclrtResetDevice.argtypes = [ctypes.c_int32]
        self.lib.aclFinalize.argtypes = []
        self.lib.fake_acl_set_mem_limit.argtypes = [ctypes.c_size_t]
        self.lib.fake_acl_set_mem_limit.restype = None
        self.lib.fake_acl_set_require_init.argtypes = [ctypes.c_int]
        self.lib.fake_acl_set_require_init.restype = None
        self.lib.fake_acl_used_bytes.argtypes = [ctypes.c_int32]
        for name in (
            "fake_acl_mem_limit",
            "fake_acl_used_bytes",
            "fake_acl_live_physical",
            "fake_acl_live_mappings",
            "fake_acl_live_reservations",
            "fake_acl_live_host",
        ):
            getattr(self.lib, name).restype = ctypes.c_size_t

    def live(self) -> dict[str, int]:
        return {
            kind: getattr(self.lib, f"fake_acl_live_{kind}")()
            for kind in ("physical", "mappings", "reservations", "host")
        }

    def set_limit(self, nbytes: int) -> None:
        self.lib.fake_acl_set_mem_limit(nbytes)

    def current_device(self) -> int | None:
        dev = ctypes.c_int32(-1)
        return dev.value if self.aclrtGetDevice(ctypes.byref(dev)) == 0 else None

    def prop(self, device: int = 0) -> acl.aclrtPhysicalMemProp:
        prop = acl.aclrtPhysicalMemProp()
        prop.handleType = acl.ACL_MEM_HANDLE_TYPE_NONE
        prop.allocationType = acl.ACL_MEM_ALLOCATION_TYPE_PINNED
        prop.memAttr = acl.ACL_HBM_MEM_HUGE
        prop.location.id = device
        prop.location.type = acl.ACL_MEM_LOCATION_TYPE_DEVICE
        return prop

    # raw helpers: return (rc, value)
    def reserve(self, size: int, alignment: int = 0, flags: int = 0) -> tuple[int, int]:
        ptr = ctypes.c_void_p()
        rc = self.aclrtReserveMemAddress(ctypes.byref(ptr), size, alignment, None, flags)
        return rc, ptr.value or 0

    def malloc_physical(self, size: int, flags: int = 0, prop=None) -> tuple[int, int]:
        handle = ctypes.c_void_p()
        prop = prop if prop is not None else self.prop()
        rc = self.aclrtMallocPhysical(ctypes.byref(handle), size, ctypes.byref(prop), flags)
        return rc, handle.value or 0

    def map(self, va: int, size: int, handle: int, offset: int = 0, flags: int = 0) -> int:
        return self.aclrtMapMem(va, size, offset, handle, flags)


@pytest.fixture(scope="module")
def fake(fake_lib_path: str) -> Fake:
    return Fake(fake_lib_path)


@pytest.fixture(autouse=True)
def no_leaks(request: pytest.FixtureRequest):
    """Every test leaves the fake as it found it (no physical memory, mapping, range left)."""
    if "fake" not in request.fixturenames:
        yield
        return
    fake: Fake = request.getfixturevalue("fake")
    fake.set_limit(0)
    before = fake.live()
    yield
    fake.set_limit(0)
    assert fake.live() == before


@pytest.fixture
def drv(fake_lib_path: str, fake: Fake) -> acl.AclDriver:
    assert fake.aclrtSetDevice(0) == 0
    return acl.AclDriver(fake_lib_path)


@pytest.fixture
def raw(fake: Fake) -> Fake:
    """The fake with device 0 current on this thread, for raw ACL calls."""
    assert fake.aclrtSetDevice(0) == 0
    return fake


# -- the fake is compiled against the real header ----------------------------------------------

HEADER_PROLOGUE = '#include "acl/acl_rt.h"\n'


def _compile(build_dir: str, name: str, source: str) -> str:
    path = os.path.join(build_dir, f"{name}.c")
    with open(path, "w") as fh:
        fh.write(source)
    return build.compile_shared(path, os.path.join(build_dir, f"lib{name}.so"))


def test_header_is_in_force(build_dir: str) -> None:
    """A definition that disagrees with acl_rt.h does not compile; the right one does."""
    wrong = HEADER_PROLOGUE + "aclError aclrtUnmapMem(void *virPtr, size_t size) { return 0; }\n"
    with pytest.raises(build.BuildError, match="conflicting types"):
        _compile(build_dir, "wrong_unmap", wrong)
    wrong_flags = HEADER_PROLOGUE + (
        "aclError aclrtMapMem(void *v, size_t s, size_t o, aclrtDrvMemHandle h, uint32_t f)"
        " { return 0; }\n"
    )
    with pytest.raises(build.BuildError, match="conflicting types"):
        _compile(build_dir, "wrong_map", wrong_flags)
    right = HEADER_PROLOGUE + "aclError aclrtUnmapMem(void *virPtr) { (void)virPtr; return 0; }\n"
    assert os.path.exists(_compile(build_dir, "right_unmap", right))


def test_driver_signatures_match_header(build_dir: str) -> None:
    """The driver's ctypes prototypes, redeclared in C after the real header, compile."""
    lines = [HEADER_PROLOGUE]
    for name, (restype, params) in {**acl.SIGNATURES, **acl.OPTIONAL_SIGNATURES}.items():
        lines.append(f"{restype} {name}({', '.join(params) or 'void'});\n")
    _compile(build_dir, "signatures", "".join(lines))
    # and the check has teeth: one wrong parameter type breaks the build
    with pytest.raises(build.BuildError, match="conflicting types"):
        _compile(build_dir, "signatures_bad", HEADER_PROLOGUE + "aclError aclrtFreeHost(int);\n")


LAYOUT_BODY = r"""
#include <stddef.h>
#define N 21
void layout(long long *out) {
    long long v[N] = {
        sizeof(aclrtPhysicalMemProp),
        offsetof(aclrtPhysicalMemProp, handleType),
        offsetof(aclrtPhysicalMemProp, allocationType),
        offsetof(aclrtPhysicalMemProp, memAttr),
        offsetof(aclrtPhysicalMemProp, location),
        offsetof(aclrtPhysicalMemProp, reserve),
        sizeof(aclrtMemLocation),
        offsetof(aclrtMemLocation, id),
        offsetof(aclrtMemLocation, type),
        ACL_MEM_HANDLE_TYPE_NONE,
        ACL_MEM_ALLOCATION_TYPE_PINNED,
        ACL_HBM_MEM_HUGE,
        ACL_HBM_MEM,
        ACL_MEM_LOCATION_TYPE_DEVICE,
        ACL_RT_MEM_ALLOC_GRANULARITY_MINIMUM,
        ACL_MEMCPY_HOST_TO_DEVICE,
        ACL_MEMCPY_DEVICE_TO_HOST,
        ACL_ERROR_RT_MEMORY_ALLOCATION,
        ACL_ERROR_UNINITIALIZE,
        ACL_ERROR_REPEAT_INITIALIZE,
        sizeof(aclrtDrvMemHandle),
    };
    for (int i = 0; i < N; i++) out[i] = v[i];
}
"""


def test_struct_layout_and_constants_match_header(build_dir: str) -> None:
    lib = ctypes.CDLL(_compile(build_dir, "layout", HEADER_PROLOGUE + LAYOUT_BODY))
    out = (ctypes.c_longlong * 21)()
    lib.layout(out)
    prop, loc = acl.aclrtPhysicalMemProp, acl.aclrtMemLocation
    expected = [
        ctypes.sizeof(prop),
        prop.handleType.offset,
        prop.allocationType.offset,
        prop.memAttr.offset,
        prop.location.offset,
        prop.reserve.offset,
        ctypes.sizeof(loc),
        loc.id.offset,
        loc.type.offset,
        acl.ACL_MEM_HANDLE_TYPE_NONE,
        acl.ACL_MEM_ALLOCATION_TYPE_PINNED,
        acl.ACL_HBM_MEM_HUGE,
        acl.ACL_HBM_MEM,
        acl.ACL_MEM_LOCATION_TYPE_DEVICE,
        acl.ACL_RT_MEM_ALLOC_GRANULARITY_MINIMUM,
        acl.ACL_MEMCPY_HOST_TO_DEVICE,
        acl.ACL_MEMCPY_DEVICE_TO_HOST,
        acl.ACL_ERROR_RT_MEMORY_ALLOCATION,
        acl.ACL_ERROR_UNINITIALIZE,
        acl.ACL_ERROR_REPEAT_INITIALIZE,
        ctypes.sizeof(ctypes.c_void_p),
    ]
    assert list(out) == expected
    assert list(out)[:6] == [32, 0, 4, 8, 12, 24]


# -- the driver over the fake ------------------------------------------------------------------


def test_driver_satisfies_protocol(drv: acl.AclDriver) -> None:
    assert isinstance(drv, driver_mod.Driver)
    assert drv.name == "acl"


def test_granularity_is_2mb(drv: acl.AclDriver) -> None:
    assert drv.granularity(0) == GRAN
    assert drv.granularity(1) == GRAN


def test_roundtrip(drv: acl.AclDriver, fake: Fake) -> None:
    size = 3 * GRAN
    va = drv.reserve(size, 0)
    assert va % GRAN == 0
    handle = drv.create(size, 0)
    drv.map(va, size, handle, 0)
    host, host_handle = drv.host_alloc(size)
    try:
        pattern = bytes(range(256)) * (size // 256)
        ctypes.memmove(host, pattern, size)
        drv.copy_from_host(va, host, size)
        drv.synchronize(0)
        ctypes.memset(host, 0, size)
        drv.copy_to_host(host, va, size)
        assert ctypes.string_at(host, size) == pattern
        # a copy inside the mapping, at an offset
        drv.copy_to_host(host, va + GRAN + 5, 100)
        assert ctypes.string_at(host, 100) == pattern[GRAN + 5 : GRAN + 105]
        assert fake.lib.fake_acl_used_bytes(0) == size
    finally:
        drv.host_free(host_handle)
        drv.unmap(va, size)
        drv.free(handle)
        drv.release(va, size)
    assert fake.lib.fake_acl_used_bytes(0) == 0


def test_sizes_are_rounded_up_to_granularity(drv: acl.AclDriver, fake: Fake) -> None:
    va = drv.reserve(GRAN + 1, 0)
    handle = drv.create(GRAN + 1, 0)
    assert handle.size == 2 * GRAN
    drv.map(va, GRAN + 1, handle, 0)
    assert fake.lib.fake_acl_used_bytes(0) == 2 * GRAN
    drv.unmap(va, GRAN + 1)
    drv.free(handle)
    drv.release(va, GRAN + 1)


def test_remap_keeps_address_new_memory(drv: acl.AclDriver) -> None:
    """Pause/resume in miniature: unmap + free, then create + map at the same address."""
    va = drv.reserve(GRAN, 0)
    host, host_handle = drv.host_alloc(GRAN)
    try:
        for value in (1, 2):
            handle = drv.create(GRAN, 0)
            drv.map(va, GRAN, handle, 0)
            ctypes.memset(host, value, GRAN)
            drv.copy_from_host(va, host, GRAN)
            ctypes.memset(host, 0, GRAN)
            drv.copy_to_host(host, va, GRAN)
            assert ctypes.string_at(host, 8) == bytes([value]) * 8
            drv.unmap(va, GRAN)
            drv.free(handle)
    finally:
        drv.host_free(host_handle)
        drv.release(va, GRAN)


def test_mem_info_reports_limit_minus_used(drv: acl.AclDriver, fake: Fake) -> None:
    fake.set_limit(64 * MB)
    assert drv.mem_info(0) == (64 * MB, 64 * MB)
    handle = drv.create(10 * MB, 0)
    assert drv.mem_info(0) == (54 * MB, 64 * MB)
    assert drv.mem_info(1) == (64 * MB, 64 * MB)  # the limit is per device
    drv.free(handle)
    assert drv.mem_info(0) == (64 * MB, 64 * MB)


def test_oom_at_limit_raises_out_of_device_memory(drv: acl.AclDriver, fake: Fake) -> None:
    fake.set_limit(4 * MB)
    first = drv.create(4 * MB, 0)
    try:
        with pytest.raises(OutOfDeviceMemory) as info:
            drv.create(GRAN, 0)
        assert info.value.code == acl.ACL_ERROR_RT_MEMORY_ALLOCATION == 207001
        assert isinstance(info.value, MemoryError)
        assert "aclrtMallocPhysical" in str(info.value) and "207001" in str(info.value)
    finally:
        drv.free(first)
    drv.free(drv.create(4 * MB, 0))  # the memory came back


def test_oom_limit_from_environment(
    drv: acl.AclDriver, fake: Fake, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_ACL_MEM_LIMIT_BYTES", str(2 * GRAN))
    assert fake.lib.fake_acl_mem_limit() == 2 * GRAN
    assert drv.mem_info(0)[1] == 2 * GRAN
    with pytest.raises(OutOfDeviceMemory) as info:
        drv.create(3 * GRAN, 0)
    assert info.value.code == 207001


def test_release_before_unmap_is_rejected(drv: acl.AclDriver) -> None:
    va = drv.reserve(GRAN, 0)
    handle = drv.create(GRAN, 0)
    drv.map(va, GRAN, handle, 0)
    with pytest.raises(DriverError) as info:
        drv.release(va, GRAN)
    assert info.value.code == acl.ACL_ERROR_RELATIVE_RESOURCE_NOT_CLEARED
    assert "aclrtReleaseMemAddress" in str(info.value)
    assert not isinstance(info.value, OutOfDeviceMemory)
    with pytest.raises(DriverError) as info:
        drv.free(handle)  # still mapped
    assert info.value.code == acl.ACL_ERROR_RELATIVE_RESOURCE_NOT_CLEARED
    drv.unmap(va, GRAN)
    drv.free(handle)
    drv.release(va, GRAN)


def test_copy_from_unmapped_memory_is_rejected(drv: acl.AclDriver) -> None:
    va = drv.reserve(GRAN, 0)
    host, host_handle = drv.host_alloc(GRAN)
    try:
        with pytest.raises(DriverError, match="aclrtMemcpy") as info:
            drv.copy_to_host(host, va, 16)
        assert info.value.code == acl.ACL_ERROR_RT_PARAM_INVALID
    finally:
        drv.host_free(host_handle)
        drv.release(va, GRAN)


def test_driver_refuses_reuse_of_freed_handles(drv: acl.AclDriver) -> None:
    handle = drv.create(GRAN, 0)
    drv.free(handle)
    with pytest.raises(DriverError, match="already freed"):
        drv.free(handle)
    va = drv.reserve(GRAN, 0)
    with pytest.raises(DriverError):
        drv.map(va, GRAN, handle, 0)
    drv.release(va, GRAN)
    _, host_handle = drv.host_alloc(100)
    drv.host_free(host_handle)
    with pytest.raises(DriverError, match="already freed"):
        drv.host_free(host_handle)


def test_driver_restores_the_threads_device(drv: acl.AclDriver, fake: Fake) -> None:
    assert fake.aclrtSetDevice(1) == 0
    try:
        handle = drv.create(GRAN, 0)
        assert fake.current_device() == 1
        drv.free(handle)
        assert drv.mem_info(0)[1] > 0
        assert fake.current_device() == 1
    finally:
        assert fake.aclrtSetDevice(0) == 0


def test_driver_sets_a_device_on_a_fresh_thread(drv: acl.AclDriver, fake: Fake) -> None:
    seen: dict[str, object] = {}

    def work() -> None:
        seen["before"] = fake.current_device()
        try:
            seen["info"] = drv.mem_info(2)
            seen["after"] = fake.current_device()
        except Exception as exc:  # pragma: no cover - reported below
            seen["error"] = exc

    t = threading.Thread(target=work)
    t.start()
    t.join()
    assert "error" not in seen, seen.get("error")
    assert seen["before"] is None  # the fake needs a device per thread, like ACL
    assert seen["after"] == 2


def test_driver_calls_acl_init_when_uninitialized(drv: acl.AclDriver, fake: Fake) -> None:
    fake.lib.aclFinalize()  # whatever state earlier tests left
    fake.lib.fake_acl_set_require_init(1)
    try:
        out: dict[str, object] = {}

        def work() -> None:
            try:
                out["info"] = drv.mem_info(0)
            except Exception as exc:  # pragma: no cover - reported below
                out["error"] = exc

        t = threading.Thread(target=work)
        t.start()
        t.join()
        assert "error" not in out, out.get("error")
        assert fake.lib.fake_acl_initialized() == 1
    finally:
        fake.lib.fake_acl_set_require_init(0)


def test_invalid_device_is_a_driver_error(drv: acl.AclDriver) -> None:
    with pytest.raises(DriverError) as info:
        drv.create(GRAN, 99)
    assert info.value.code in (acl.ACL_ERROR_RT_INVALID_DEVICEID,)


def test_missing_library_is_a_driver_error(tmp_path) -> None:
    with pytest.raises(DriverError, match="cannot load the Ascend runtime"):
        acl.AclDriver(str(tmp_path / "libascendcl.so"))


def test_library_without_vmm_api_is_a_driver_error(build_dir: str) -> None:
    path = _compile(build_dir, "empty_acl", "int unrelated(void) { return 0; }\n")
    with pytest.raises(DriverError, match="aclInit|CANN 7.0"):
        acl.AclDriver(path)


# -- the fake enforces the documented constraints (raw calls, bypassing the driver) ------------


def test_fake_rejects_misaligned_sizes(raw: Fake) -> None:
    invalid = acl.ACL_ERROR_RT_PARAM_INVALID
    assert raw.malloc_physical(GRAN + 4096)[0] == invalid
    assert raw.malloc_physical(MB)[0] == invalid
    assert raw.reserve(GRAN + 4096)[0] == invalid
    rc, va = raw.reserve(2 * GRAN)
    assert rc == 0
    rc, handle = raw.malloc_physical(2 * GRAN)
    assert rc == 0
    try:
        assert raw.map(va, GRAN + 4096, handle) == invalid  # size
        assert raw.map(va + 4096, GRAN, handle) == invalid  # address
        assert raw.map(va, 2 * GRAN, handle) == 0
        assert raw.aclrtUnmapMem(va) == 0
    finally:
        assert raw.aclrtFreePhysical(handle) == 0
        assert raw.aclrtReleaseMemAddress(va) == 0


def test_fake_rejects_nonzero_flags_offset_alignment(raw: Fake) -> None:
    invalid = acl.ACL_ERROR_RT_PARAM_INVALID
    assert raw.reserve(GRAN, alignment=GRAN)[0] == invalid
    assert raw.reserve(GRAN, flags=1)[0] == invalid
    assert raw.malloc_physical(GRAN, flags=1)[0] == invalid
    rc, va = raw.reserve(2 * GRAN)
    assert rc == 0
    _, handle = raw.malloc_physical(2 * GRAN)
    try:
        assert raw.map(va, GRAN, handle, flags=1) == invalid
        assert raw.map(va, GRAN, handle, offset=GRAN) == invalid
        assert raw.map(va, 2 * GRAN, handle) == 0
        assert raw.aclrtUnmapMem(va) == 0
    finally:
        raw.aclrtFreePhysical(handle)
        raw.aclrtReleaseMemAddress(va)


def test_fake_rejects_wrong_properties(raw: Fake) -> None:
    invalid = acl.ACL_ERROR_RT_PARAM_INVALID
    for field, value in (
        ("handleType", 2),
        ("allocationType", 1),
        ("memAttr", acl.ACL_DDR_MEM),
        ("reserve", 1),
    ):
        prop = raw.prop()
        setattr(prop, field, value)
        assert raw.malloc_physical(GRAN, prop=prop)[0] == invalid, field
    prop = raw.prop()
    prop.location.type = 0  # HOST
    assert raw.malloc_physical(GRAN, prop=prop)[0] == invalid
    gran = ctypes.c_size_t()
    assert (
        raw.aclrtMemGetAllocationGranularity(ctypes.byref(prop), 0, ctypes.byref(gran)) == invalid
    )


def test_fake_release_with_live_mapping_fails_and_unmap_needs_a_mapping(raw: Fake) -> None:
    _, va = raw.reserve(2 * GRAN)
    _, handle = raw.malloc_physical(GRAN)
    assert raw.map(va + GRAN, GRAN, handle) == 0
    assert raw.aclrtReleaseMemAddress(va) == acl.ACL_ERROR_RELATIVE_RESOURCE_NOT_CLEARED
    assert raw.aclrtUnmapMem(va) == acl.ACL_ERROR_RT_PARAM_INVALID  # nothing mapped at va
    assert raw.aclrtUnmapMem(va + GRAN) == 0
    assert raw.aclrtUnmapMem(va + GRAN) == acl.ACL_ERROR_RT_PARAM_INVALID  # twice
    assert raw.aclrtFreePhysical(handle) == 0
    assert raw.aclrtFreePhysical(handle) == acl.ACL_ERROR_RT_INVALID_HANDLE  # double free
    assert raw.aclrtReleaseMemAddress(va) == 0
    assert raw.aclrtReleaseMemAddress(va) == acl.ACL_ERROR_RT_PARAM_INVALID  # twice


def test_fake_rejects_overlapping_or_outside_mappings(raw: Fake) -> None:
    _, va = raw.reserve(2 * GRAN)
    _, handle = raw.malloc_physical(2 * GRAN)
    try:
        assert raw.map(va + GRAN, 2 * GRAN, handle) == acl.ACL_ERROR_RT_PARAM_INVALID
        assert raw.map(va, GRAN, handle) == 0
        assert raw.map(va, GRAN, handle) == acl.ACL_ERROR_RT_PARAM_INVALID
        assert raw.map(va, 4 * GRAN, handle) == acl.ACL_ERROR_RT_PARAM_INVALID
        assert raw.aclrtUnmapMem(va) == 0
    finally:
        raw.aclrtFreePhysical(handle)
        raw.aclrtReleaseMemAddress(va)


def test_fake_oom_code(raw: Fake) -> None:
    raw.set_limit(GRAN)
    rc, handle = raw.malloc_physical(2 * GRAN)
    assert rc == acl.ACL_ERROR_RT_MEMORY_ALLOCATION == 207001
    assert handle == 0


def test_fake_needs_a_device_on_the_thread(fake: Fake) -> None:
    out: dict[str, int] = {}

    def work() -> None:
        out["rc"] = fake.reserve(GRAN)[0]

    t = threading.Thread(target=work)
    t.start()
    t.join()
    assert out["rc"] == acl.ACL_ERROR_RT_CONTEXT_NULL


# -- the shared manager scenarios on the ACL driver --------------------------------------------


class AclHarness(Harness):
    """The ACL driver over the fake library; memory limits through the fake's setter."""

    name = "acl-fake"

    def __init__(self, path: str, fake: Fake) -> None:
        self.path = path
        self.fake = fake

    def make_driver(self) -> acl.AclDriver:
        return acl.AclDriver(self.path)

    def limit_free(self, driver: object, free_bytes: int | None) -> None:
        if free_bytes is None:
            self.fake.set_limit(0)
        else:
            self.fake.set_limit(self.fake.lib.fake_acl_used_bytes(0) + free_bytes)

    def skip(self, reason: str) -> None:
        pytest.skip(reason)


@pytest.mark.parametrize("scenario", list(SCENARIOS.values()), ids=list(SCENARIOS))
def test_scenario(scenario, fake_lib_path: str, fake: Fake) -> None:
    scenario(AclHarness(fake_lib_path, fake))
