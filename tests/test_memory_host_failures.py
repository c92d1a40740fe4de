"""The host driver's refusals and its handling of failing system calls.

Misuse (wrong sizes, wrong handles, bad settings) is exercised directly. System-call
failures are real where the kernel can be made to fail cheaply (a file-size limit for
``ftruncate``, a descriptor closed or replaced behind the driver's back, an impossible
buffer size); the rest (``memfd_create``, ``fallocate``, ``munmap`` and the re-reserving
``mmap``, which do not fail on a healthy machine) are injected by wrapping the driver's libc
so that one call sets ``errno`` and fails, exactly as the kernel reports it.
"""

from __future__ import annotations

import ctypes
import errno
import os
import resource
import signal

import pytest

from npu_platform.memory.driver import DriverError, OutOfDeviceMemory
from npu_platform.memory.drivers import host

KIB = 1 << 10
MIB = 1 << 20
GRAN = 64 * KIB


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.fixture
def drv():
    d = host.HostDriver(granularity=GRAN, populate=False)
    yield d
    assert (d.used_bytes, d.reserved_bytes, d.host_bytes) == (0, 0, 0), repr(d)


class FailingLibc:
    """The driver's libc, except that the calls in ``fail`` set errno and fail."""

    def __init__(self, real: ctypes.CDLL, **fail: int) -> None:
        self._real = real
        self._fail = fail

    def __getattr__(self, name: str):
        err = self._fail.get(name)
        if err is None:
            return getattr(self._real, name)
        failed = host._MAP_FAILED if name == "mmap" else -1

        def fails(*args: object) -> object:
            ctypes.set_errno(err)
            return failed

        return fails


def failing(monkeypatch: pytest.MonkeyPatch, **fail: int) -> None:
    monkeypatch.setattr(host, "_libc", FailingLibc(host._libc, **fail))


# -- settings and misuse -------------------------------------------------------------------------


def test_settings_are_checked() -> None:
    page = os.sysconf("SC_PAGE_SIZE")
    for bad in (0, page + 1, -page):
        with pytest.raises(ValueError, match=r"positive multiple of the page size"):
            host.HostDriver(granularity=bad)
    with pytest.raises(ValueError, match="limit_bytes must be >= 0 or None, got -1"):
        host.HostDriver(limit_bytes=-1)
    d = host.HostDriver(granularity=GRAN, limit_bytes=GRAN, populate=False)
    assert d.limit_bytes == GRAN
    assert repr(d) == f"HostDriver(granularity={GRAN}, limit={GRAN}, used=0, populate=False)"
    d.limit_bytes = None
    assert d.limit_bytes is None and "limit=none" in repr(d)
    with pytest.raises(ValueError, match="got -5"):
        d.limit_bytes = -5
    assert d.limit_bytes is None


def test_misuse_of_sizes_and_handles(drv: host.HostDriver) -> None:
    va = drv.reserve(2 * GRAN, 0)
    assert drv.reserved_bytes == 2 * GRAN and drv.reserved_ranges() == {va: 2 * GRAN}
    with pytest.raises(DriverError, match=rf"release\(0x{va:x}, {GRAN}\) but {2 * GRAN} bytes"):
        drv.release(va, GRAN)
    h = drv.create(GRAN, 0)
    with pytest.raises(DriverError, match=f"map of {2 * GRAN} bytes from .*, which has {GRAN}"):
        drv.map(va, 2 * GRAN, h, 0)
    drv.map(va, GRAN, h, 0)
    assert drv.mapped_ranges() == {va: GRAN}
    with pytest.raises(DriverError, match=rf"unmap\(0x{va:x}, {2 * GRAN}\) but {GRAN} bytes"):
        drv.unmap(va, 2 * GRAN)
    for call in (drv.free, lambda x: drv.map(va + GRAN, GRAN, x, 0)):
        with pytest.raises(DriverError, match="'not a handle', not a handle from create"):
            call("not a handle")
    drv.unmap(va, GRAN)
    drv.free(h)
    with pytest.raises(DriverError, match="map of freed memory <host physical fd=-1"):
        drv.map(va, GRAN, h, 0)
    assert drv.mapped_ranges() == {}
    drv.release(va, 2 * GRAN)
    with pytest.raises(DriverError, match="host_alloc of 0 bytes"):
        drv.host_alloc(0)
    with pytest.raises(DriverError, match="host_free of 12, not a host_alloc handle"):
        drv.host_free(12)
    ptr, buf = drv.host_alloc(3 * MIB)  # huge-page aligned
    assert ptr % (2 * MIB) == 0 and drv.host_bytes == 3 * MIB
    assert repr(buf) == f"<host buffer 0x{ptr:x} size={3 * MIB}>"
    drv.host_free(buf)


# -- real system-call failures --------------------------------------------------------------------


def test_an_impossible_backup_buffer_is_out_of_memory(drv: host.HostDriver) -> None:
    with pytest.raises(OutOfDeviceMemory, match="no host memory for a .*-byte backup") as info:
        drv.host_alloc(1 << 60)  # more than the address space
    assert info.value.code == errno.ENOMEM and "ENOMEM" in str(info.value)


def test_ftruncate_refused_by_the_file_size_limit(drv: host.HostDriver) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    if hard != resource.RLIM_INFINITY and hard < 64 * MIB:
        pytest.skip("the file-size limit is already low")
    fds = open_fds()
    old = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # else SIGXFSZ ends the process
    resource.setrlimit(resource.RLIMIT_FSIZE, (32 * MIB, hard))
    try:
        with pytest.raises(DriverError, match="ftruncate failed sizing physical memory") as info:
            drv.create(64 * MIB, 0)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, old)
    assert info.value.code == errno.EFBIG and "EFBIG" in str(info.value)
    assert not isinstance(info.value, OutOfDeviceMemory)
    assert drv.used_bytes == 0, "the failed creation gave its budget back"
    assert open_fds() == fds, "the memfd was closed"


def test_a_descriptor_replaced_or_closed_behind_the_driver(drv: host.HostDriver) -> None:
    va = drv.reserve(GRAN, 0)
    h = drv.create(GRAN, 0)
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, h.fd)  # the memfd is gone; /dev/null cannot be mapped
    os.close(devnull)
    with pytest.raises(DriverError, match=r"mmap\(MAP_FIXED\|MAP_SHARED\) failed mapping") as info:
        drv.map(va, GRAN, h, 0)
    assert info.value.code == errno.ENODEV
    assert drv.mapped_ranges() == {} and drv.reserved_ranges() == {va: GRAN}
    os.close(h.fd)  # closed behind the driver's back ...
    h.fd = -1  # ... (and no number another thread could reuse meanwhile)
    with pytest.raises(DriverError, match=r"close failed freeing physical memory fd -1 .*EBADF"):
        drv.free(h)
    assert drv.used_bytes == 0
    drv.release(va, GRAN)


# -- injected system-call failures ----------------------------------------------------------------


def test_memfd_create_failure(drv: host.HostDriver, monkeypatch: pytest.MonkeyPatch) -> None:
    failing(monkeypatch, memfd_create=errno.EMFILE)
    with pytest.raises(DriverError, match=r"memfd_create failed creating .*EMFILE"):
        drv.create(GRAN, 0)
    assert drv.used_bytes == 0


@pytest.mark.parametrize("err", [errno.ENOSPC, errno.ENOMEM])
def test_fallocate_without_memory_is_out_of_device_memory(monkeypatch, err: int) -> None:
    d = host.HostDriver(granularity=GRAN, populate=True)
    fds = open_fds()
    failing(monkeypatch, fallocate=err)
    with pytest.raises(OutOfDeviceMemory, match=f"the kernel has no memory for {GRAN} bytes") as e:
        d.create(GRAN, 0)
    assert e.value.code == err and errno.errorcode[err] in str(e.value)
    assert d.used_bytes == 0 and open_fds() == fds


def test_other_fallocate_failures_are_driver_errors(monkeypatch) -> None:
    d = host.HostDriver(granularity=GRAN, populate=True)
    fds = open_fds()
    failing(monkeypatch, fallocate=errno.EIO)
    with pytest.raises(DriverError, match=f"fallocate failed allocating {GRAN} bytes .*EIO") as e:
        d.create(GRAN, 0)
    assert not isinstance(e.value, OutOfDeviceMemory)
    assert d.used_bytes == 0 and open_fds() == fds


def test_unmap_failure_keeps_the_mapping(drv: host.HostDriver, monkeypatch) -> None:
    va = drv.reserve(GRAN, 0)
    h = drv.create(GRAN, 0)
    drv.map(va, GRAN, h, 0)
    ctypes.memset(va, 7, GRAN)
    failing(monkeypatch, mmap=errno.ENOMEM)
    with pytest.raises(
        DriverError, match=rf"mmap\(PROT_NONE, MAP_FIXED\) failed unmapping 0x{va:x}"
    ):
        drv.unmap(va, GRAN)
    monkeypatch.undo()
    assert drv.mapped_ranges() == {va: GRAN}
    assert ctypes.string_at(va + GRAN - 2, 2) == b"\x07\x07", "still mapped and readable"
    drv.unmap(va, GRAN)
    drv.free(h)
    drv.release(va, GRAN)


def test_munmap_failures_are_reported(drv: host.HostDriver, monkeypatch) -> None:
    real = host._libc
    va = drv.reserve(GRAN, 0)
    ptr, buf = drv.host_alloc(100)
    failing(monkeypatch, munmap=errno.EINVAL)
    with pytest.raises(DriverError, match=rf"munmap failed releasing the reservation at 0x{va:x}"):
        drv.release(va, GRAN)
    with pytest.raises(DriverError, match=rf"munmap failed freeing host buffer 0x{ptr:x} .*EINVAL"):
        drv.host_free(buf)
    # The driver has forgotten both; give the address space back for real.
    assert drv.reserved_bytes == 0 and drv.host_bytes == 0
    assert real.munmap(va, GRAN) == 0 and real.munmap(buf.base, buf.length) == 0


def test_a_backup_buffer_mmap_failure_other_than_enomem(drv: host.HostDriver, monkeypatch) -> None:
    failing(monkeypatch, mmap=errno.EINVAL)
    with pytest.raises(DriverError, match="mmap failed allocating a 100-byte host buffer") as info:
        drv.host_alloc(100)
    assert not isinstance(info.value, OutOfDeviceMemory) and info.value.code == errno.EINVAL
