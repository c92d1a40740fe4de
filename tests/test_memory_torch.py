"""torch allocations inside torch_memory_saver regions reach the memory manager.

Emulation (``NPU_PLATFORM_EMULATE=1``): tensors live on the emulated ``npu`` device and the
facade takes its hardware route, as on Ascend: the ACL driver over the emulation's
``libascendcl.so`` (physical memory in ``memfd`` files, so it shows in RSS as RssShmem), and
:class:`PoolRoute`, which sends ``torch.empty`` / ``zeros`` / ``randn`` / op outputs made on a
thread inside a region through ``NPUPluggableAllocator`` + ``torch.npu.MemPool`` +
``torch.npu.use_mem_pool`` and the C shim to the manager; pausing really hands the memory back
(RSS). The emulated device caches nothing, so a freed tensor's memory goes back to the
manager at once (torch_npu's caching allocator would keep it in the key's pool until its
cache is emptied). The C shim built by ``pip install`` (``memory/_alloc_shim.so``) is also
checked on its own, the way torch's pluggable allocators call it, against a manager on the
host driver.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import importlib.util
import os
import shutil
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from npu_platform.memory import torch_route
from npu_platform.memory.drivers.host import HostDriver
from npu_platform.memory.errors import NotSupported
from npu_platform.memory.manager import MemoryManager, State
from npu_platform.memory.table import PoolKey
from npu_platform.memory.torch_route import (
    ALLOC_FN,
    FREE_FN,
    AllocShim,
    PoolRoute,
    default_route,
    shim_path,
)
from npu_platform.torch_memory_saver import ThreadStateRoute, TorchMemorySaver

ROOT = Path(__file__).resolve().parents[1]
MIB = 1 << 20
SHIM_EXPORTS = {ALLOC_FN, FREE_FN, "npu_platform_set_callbacks", "npu_platform_has_callbacks"}


def rss() -> int:
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) * 1024 for line in fh if line.startswith("VmRSS:"))


def rss_shmem() -> int:
    """Resident shared memory: where the emulated ACL runtime's memfd pages show."""
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) * 1024 for line in fh if line.startswith("RssShmem:"))


@contextlib.contextmanager
def _shim_restored() -> Iterator[None]:
    """Put the process-wide shim back on the manager it served before (it serves one)."""
    shim = AllocShim.shared() if shim_path().is_file() else None
    previous = None if shim is None else shim.manager
    try:
        yield
    finally:
        if shim is not None and shim.manager is not previous:
            if previous is None:
                shim.disconnect()
            else:
                shim.connect(previous)


def npu(*shape: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.empty(*shape, dtype=dtype, device="npu")


@pytest.fixture
def saver(emulated) -> Iterator[TorchMemorySaver]:
    """A fresh facade on the emulated NPU: the ACL driver and the pool route."""
    with _shim_restored():
        saver = TorchMemorySaver()
        assert saver.driver.name == "acl"
        assert isinstance(saver._route, PoolRoute) and saver._route.kind == "npu"
        yield saver
        gc.collect()
        assert len(saver.manager) == 0, saver.manager.allocations()
        assert saver.manager.check_consistency() == []


def owned(saver: TorchMemorySaver, t: torch.Tensor) -> bool:
    return saver.manager.owns(t.data_ptr())


@pytest.fixture
def acl_limit(saver: TorchMemorySaver) -> Iterator[Callable[[int], None]]:
    """``limit(n)``: the emulated ACL runtime has ``n`` more bytes free on device 0 (restored
    afterwards). The manager's driver loaded the same ``libascendcl.so`` copy."""
    lib = ctypes.CDLL(saver.driver.library)
    lib.fake_acl_mem_limit.restype = ctypes.c_size_t
    lib.fake_acl_used_bytes.restype = ctypes.c_size_t
    lib.fake_acl_used_bytes.argtypes = [ctypes.c_int32]
    lib.fake_acl_set_mem_limit.argtypes = [ctypes.c_size_t]
    original = lib.fake_acl_mem_limit()

    def limit(free_bytes: int) -> None:
        lib.fake_acl_set_mem_limit(lib.fake_acl_used_bytes(0) + free_bytes)

    try:
        yield limit
    finally:
        lib.fake_acl_set_mem_limit(original)


# --------------------------------------------------------------------------- emulation


def test_region_tensors_live_in_the_manager_and_pause_frees_them(saver: TorchMemorySaver):
    before = npu(MIB)
    with saver.region("kv_cache"):
        a = npu(256 * MIB, dtype=torch.uint8)
        b = torch.zeros(16 * MIB, dtype=torch.float32, device="npu")  # 64 MiB
        c = torch.randn(4 * MIB, dtype=torch.float32, device="npu")  # 16 MiB
        d = c * 2  # op outputs too
    after = npu(MIB)
    assert all(t.device.type == "npu" for t in (before, a, b, c, d, after))
    assert all(owned(saver, t) for t in (a, b, c, d))
    assert not owned(saver, before) and not owned(saver, after)
    assert {info.tag for info in saver.manager.allocations()} == {"kv_cache"}
    assert float(b.abs().max()) == 0.0 and torch.equal(d.cpu(), c.cpu() * 2)

    a.fill_(1)
    ptrs = [t.data_ptr() for t in (a, b, c, d)]
    tagged = saver.manager.stats()["kv_cache"]["active_bytes"]
    assert tagged >= (256 + 64 + 16 + 16) * MIB
    held, held_shmem = rss(), rss_shmem()
    assert held_shmem >= tagged, "region memory is the ACL runtime's (memfd) memory"
    saver.pause("kv_cache")
    dropped = held - rss()
    assert dropped > 0.99 * tagged, (dropped, tagged)
    assert held_shmem - rss_shmem() > 0.99 * tagged
    assert {info.state for info in saver.manager.allocations()} == {State.PAUSED}
    saver.resume("kv_cache")
    assert [t.data_ptr() for t in (a, b, c, d)] == ptrs
    assert saver.manager.stats()["kv_cache"] == {
        "count": 4,
        "active_bytes": tagged,
        "paused_bytes": 0,
        "backup_bytes": 0,
    }
    for t in (a, b, c, d):  # writable again at the same addresses
        t.fill_(3)
    assert rss() - held > -0.01 * tagged  # the memory is back
    assert int(a[-1]) == 3 and float(d[-1]) == 3.0


def test_cpu_backup_keeps_contents_and_plain_regions_do_not(saver: TorchMemorySaver):
    with saver.region("weights", enable_cpu_backup=True):
        w = torch.randn(1024, 1024, device="npu")
    with saver.region("kv_cache"):
        k = torch.full((4 * MIB,), 7, dtype=torch.uint8, device="npu")
    expected = w.cpu()
    ordinary_copy = w.clone()
    assert not owned(saver, ordinary_copy)
    saver.pause()
    backup = saver.get_cpu_backup(w)
    assert backup.device.type == "cpu" and torch.equal(backup, expected)
    saver.resume()
    assert torch.equal(w.cpu(), expected), "backed-up weights survive pause/resume"
    assert torch.equal(ordinary_copy.cpu(), expected), "ordinary npu memory is untouched"
    assert int(k.max()) == 0, "kv_cache had no backup: fresh memory after resume"
    info = saver.manager.info(w.data_ptr())
    assert (info.tag, info.enable_cpu_backup) == ("weights", True)


def test_outside_regions_and_disable_allocate_ordinarily(saver: TorchMemorySaver):
    mgr = saver.manager
    assert not mgr.intercepting()
    with saver.region("kv_cache"):
        assert mgr.intercepting()
        with saver.disable():
            assert not mgr.intercepting()
            plain = npu(4 * MIB, dtype=torch.uint8).fill_(1)
            plain_sum = plain.sum()  # op outputs too
        tagged = npu(MIB, dtype=torch.uint8)
    assert not mgr.intercepting()
    assert plain.device.type == plain_sum.device.type == "npu"
    assert not owned(saver, plain) and not owned(saver, plain_sum)
    assert owned(saver, tagged)
    assert len(mgr) == 1
    saver.pause()  # ordinary memory is not paused
    assert int(plain_sum) == 4 * MIB
    saver.resume()
    del tagged
    gc.collect()
    assert len(mgr) == 0


def test_freeing_region_tensors_returns_memory(saver: TorchMemorySaver):
    mgr = saver.manager
    with saver.region("kv_cache"):
        t = npu(8 * MIB, dtype=torch.uint8)
        address = t.data_ptr()
        view = t[MIB:]
        del t
        gc.collect()
        assert mgr.owns(address), "a view keeps the storage alive"
        del view
        gc.collect()
        assert not mgr.owns(address), "freed inside the region"
        u = npu(8 * MIB, dtype=torch.uint8)
        w = npu(8 * MIB, dtype=torch.uint8)
    assert len(mgr) == 2
    del u  # after the region has closed: still the manager's
    gc.collect()
    assert len(mgr) == 1
    saver.pause("kv_cache")
    del w  # freeing a paused tensor releases its address range
    gc.collect()
    assert len(mgr) == 0
    assert mgr.check_consistency() == []


def test_resizing_inside_a_region_moves_into_the_manager(saver: TorchMemorySaver):
    with saver.region("kv_cache"):
        t = npu(MIB, dtype=torch.uint8)
        t.resize_(4 * MIB)
    assert owned(saver, t)
    assert len(saver.manager) == 1, "the smaller first allocation was freed"


def test_nested_regions(saver: TorchMemorySaver):
    mgr = saver.manager
    with saver.region("outer", enable_cpu_backup=True):
        a = npu(MIB)
        with saver.region("inner"):
            b = npu(MIB)
            with saver.disable():
                c = npu(MIB)
            b2 = npu(MIB)
        d = npu(MIB)
    e = npu(MIB)
    tags = {
        name: (mgr.info(t.data_ptr()).tag, mgr.info(t.data_ptr()).enable_cpu_backup)
        for name, t in {"a": a, "b": b, "b2": b2, "d": d}.items()
    }
    assert tags == {
        "a": ("outer", True),
        "b": ("inner", False),
        "b2": ("inner", False),
        "d": ("outer", True),
    }
    assert not owned(saver, c) and not owned(saver, e)


def test_regions_are_per_thread(saver: TorchMemorySaver):
    entered, allocated = threading.Event(), threading.Event()
    results: dict[str, torch.Tensor] = {}

    def other_thread_allocates() -> None:
        entered.wait(30)
        results["other"] = npu(4 * MIB, dtype=torch.uint8)
        allocated.set()

    def region_on_other_thread() -> None:
        with saver.region("theirs"):
            results["theirs"] = npu(4 * MIB, dtype=torch.uint8)
            entered.set()
            allocated.wait(30)

    # This thread in a region, another one not.
    worker = threading.Thread(target=other_thread_allocates)
    worker.start()
    with saver.region("mine"):
        entered.set()
        assert allocated.wait(30)
        results["mine"] = npu(4 * MIB, dtype=torch.uint8)
    worker.join()
    # Another thread in a region, this one not.
    entered.clear()
    allocated.clear()
    worker = threading.Thread(target=region_on_other_thread)
    worker.start()
    assert entered.wait(30)
    results["main"] = npu(4 * MIB, dtype=torch.uint8)
    allocated.set()
    worker.join()

    mgr = saver.manager
    assert set(results) == {"other", "mine", "theirs", "main"}
    assert not owned(saver, results["other"]) and not owned(saver, results["main"])
    assert mgr.info(results["mine"].data_ptr()).tag == "mine"
    assert mgr.info(results["theirs"].data_ptr()).tag == "theirs"
    results.clear()
    gc.collect()


def test_out_of_memory_in_a_region_is_a_torch_error(saver, acl_limit, caplog):
    acl_limit(8 * MIB)
    with saver.region("kv_cache"):
        ok = npu(4 * MIB, dtype=torch.uint8)
        with pytest.raises(torch.OutOfMemoryError, match="npu:0 out of memory"):
            npu(16 * MIB, dtype=torch.uint8)
        # torch's message cannot say why; the shim logs the manager's explanation
        assert "malloc(16777216, device 0) failed" in caplog.text
        assert "for tag 'kv_cache'" in caplog.text
        still = npu(2 * MIB, dtype=torch.uint8)  # the region keeps working
    assert saver.manager.owns(ok.data_ptr()) and saver.manager.owns(still.data_ptr())
    # Ordinary device memory comes out of the same budget, as on the device.
    with pytest.raises(torch.OutOfMemoryError, match="npu:0 out of memory"):
        npu(64 * MIB, dtype=torch.uint8)
    outside = npu(MIB, dtype=torch.uint8)
    assert not saver.manager.owns(outside.data_ptr())
    del ok, still, outside


def test_two_facades_keep_their_own_allocations(emulated):
    with _shim_restored():
        one = TorchMemorySaver()
        two = TorchMemorySaver()
        with one.region("a"):
            x = npu(MIB)
            with two.region("b"):
                y = npu(MIB)
            z = npu(MIB)
        try:
            assert one.manager.owns(x.data_ptr())
            assert two.manager.owns(y.data_ptr()) and not one.manager.owns(y.data_ptr())
            assert one.manager.owns(z.data_ptr()) and not two.manager.owns(z.data_ptr())
        finally:
            del x, y, z
            gc.collect()
        assert len(one.manager) == 0 and len(two.manager) == 0


def test_a_missing_shim_is_named_when_a_region_is_used(emulated, tmp_path, monkeypatch):
    monkeypatch.setattr(AllocShim, "_instance", None)
    monkeypatch.setattr(torch_route, "shim_path", lambda: tmp_path / "_alloc_shim.so")
    saver = TorchMemorySaver()
    outside = npu(4)  # no region: the shim is not needed
    saver.pause()  # nor for pause/resume
    saver.resume()
    with pytest.raises(NotSupported, match="needs a C compiler") as info, saver.region("kv"):
        pass
    assert str(tmp_path / "_alloc_shim.so") in str(info.value)
    assert outside.device.type == "npu" and len(saver.manager) == 0


def _python(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        check=False,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT), "NPU_PLATFORM_EMULATE": "1", **env},
        timeout=120,
        cwd=ROOT,
    )


def test_module_singleton_captures_torch_empty_in_a_fresh_process():
    """What sglang / vLLM adapters do: the process-wide facade, plain torch calls."""
    proc = _python(
        """
        import torch
        from npu_platform.torch_memory_saver import torch_memory_saver as tms

        def rss():
            with open("/proc/self/status") as fh:
                return next(int(l.split()[1]) * 1024 for l in fh if l.startswith("VmRSS:"))

        with tms.region(tag="weights", enable_cpu_backup=True):
            weights = torch.arange(1 << 20, dtype=torch.float32, device="npu")
        with tms.region(tag="kv_cache"):
            kv = torch.empty(256 << 20, dtype=torch.uint8, device="npu")
            kv.fill_(1)
        assert tms.manager.driver.name == "acl", tms.manager.driver.name
        assert tms.manager.owns(weights.data_ptr()) and tms.manager.owns(kv.data_ptr())
        ptrs = (weights.data_ptr(), kv.data_ptr())
        held = rss()
        tms.pause("kv_cache")
        assert held - rss() > 0.99 * (256 << 20)
        tms.pause("weights")
        tms.resume()
        assert (weights.data_ptr(), kv.data_ptr()) == ptrs
        assert torch.equal(weights.cpu(), torch.arange(1 << 20, dtype=torch.float32))
        print("OK")
        # exits with the region tensors alive: their frees must not call into a dying
        # interpreter
        """
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip() == "OK"
    assert "Exception ignored" not in proc.stderr, proc.stderr


@pytest.mark.skipif(importlib.util.find_spec("sglang") is None, reason="sglang is not installed")
def test_sglang_memory_saver_check_script():
    """scripts/check_sglang_memory_saver.py (shown in the README) passes on the emulated NPU."""
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "check_sglang_memory_saver.py")],
        capture_output=True,
        check=False,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT), "NPU_PLATFORM_EMULATE": "1"},
        timeout=300,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "backed by npu_platform's manager: True" in proc.stdout
    assert "in npu_platform's manager: True" in proc.stdout
    assert proc.stdout.strip().endswith("OK"), proc.stdout


# --------------------------------------------------------------------------- the C shim


def _exported(path: Path) -> set[str]:
    nm = shutil.which("nm")
    if nm is None:
        return {name for name in SHIM_EXPORTS if hasattr(ctypes.CDLL(str(path)), name)}
    out = subprocess.run(
        [nm, "-D", "--defined-only", str(path)], capture_output=True, text=True, check=True
    ).stdout
    return {line.split()[-1] for line in out.splitlines() if " T " in line}


def test_package_build_compiles_the_shim(tmp_path):
    """``setup.py build_ext`` (what pip install runs) makes the plain C library."""
    proc = subprocess.run(
        [
            sys.executable,
            "setup.py",
            "-q",
            "build_ext",
            "--build-lib",
            str(tmp_path / "lib"),
            "--build-temp",
            str(tmp_path / "tmp"),
        ],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    built = tmp_path / "lib" / "npu_platform" / "memory" / "_alloc_shim.so"
    assert built.is_file(), sorted(p.name for p in (tmp_path / "lib").rglob("*"))
    assert _exported(built) == SHIM_EXPORTS  # exactly these: -fvisibility=hidden
    assert shim_path().is_file(), "the installed package lacks its shim: reinstall it"
    assert _exported(shim_path()) == SHIM_EXPORTS


@pytest.fixture
def shim_manager():
    if not shim_path().is_file():
        pytest.skip("the allocator shim is not built (pip install -e . builds it)")
    manager = MemoryManager(HostDriver())
    shim = AllocShim()
    shim.connect(manager)
    yield shim, manager
    shim.disconnect()
    manager.free_all()


def test_shim_round_trips_to_the_manager(shim_manager):
    shim, manager = shim_manager
    with manager.region("kv_cache", enable_cpu_backup=True):
        ptr = shim.alloc(3 * MIB, 0, None)
    assert ptr and manager.owns(ptr)
    info = manager.info(ptr)
    assert (info.tag, info.enable_cpu_backup, info.size) == ("kv_cache", True, 4 * MIB)
    ctypes.memset(ptr, 0x5A, 3 * MIB)
    manager.pause("kv_cache")
    manager.resume("kv_cache")
    assert ctypes.string_at(ptr + 3 * MIB - 4, 4) == b"\x5a" * 4
    outside = shim.alloc(MIB, 0, None)  # outside a region: the default tag
    assert manager.info(outside).tag == "default"
    shim.free(ptr, 3 * MIB, 0, None)
    shim.free(outside, MIB, 0, None)
    assert len(manager) == 0


def test_shim_failures_return_null_and_never_exit(shim_manager, caplog):
    shim, manager = shim_manager
    manager.driver.limit_bytes = 2 * MIB
    assert shim.alloc(8 * MIB, 0, None) == 0  # torch turns NULL into its OOM error
    assert "malloc" in caplog.text
    shim.free(0xDEAD000, MIB, 0, None)  # unknown pointer: logged, ignored
    assert "did not hand out" in caplog.text
    shim.disconnect()
    assert not shim.connected
    assert shim.alloc(MIB, 0, None) == 0  # no callbacks: NULL
    shim.free(0, 0, 0, None)


DRIVER_C = r"""
#include <dlfcn.h>
#include <stddef.h>
#include <string.h>
/* torch's std::function<void*(size_t, int, aclrtStream)> / <void(void*, size_t, int,
 * aclrtStream)>, with the stream an opaque pointer */
typedef void *(*alloc_fn)(size_t, int, void *);
typedef void (*free_fn)(void *, size_t, int, void *);

int drive(const char *path, size_t size, int device, void *stream) {
    void *lib = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!lib) return 1;
    alloc_fn alloc = (alloc_fn)dlsym(lib, "npu_platform_alloc");
    free_fn release = (free_fn)dlsym(lib, "npu_platform_free");
    if (!alloc || !release) return 2;
    char *p = (char *)alloc(size, device, stream);
    if (!p) return 3;
    memset(p, 1, size);
    release(p, size, device, stream);
    return 0;
}
"""


def test_shim_called_from_c_like_torch_does(shim_manager, tmp_path):
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler")
    shim, manager = shim_manager
    (tmp_path / "drive.c").write_text(DRIVER_C)
    subprocess.run(
        [cc, "-shared", "-fPIC", "-o", str(tmp_path / "drive.so"), str(tmp_path / "drive.c")],
        check=True,
    )
    drive = ctypes.CDLL(str(tmp_path / "drive.so")).drive
    drive.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_void_p]
    seen: list[tuple[int, int]] = []
    real_malloc = manager.malloc

    def spy(size: int, device: int = 0, **kw):
        seen.append((size, device))
        return real_malloc(size, device, **kw)

    manager.malloc = spy  # type: ignore[method-assign]
    with manager.region("graph"):
        assert drive(str(shim.path).encode(), 5 * MIB, 0, 0x1234) == 0
    assert seen == [(5 * MIB, 0)]
    assert len(manager) == 0, "freed through npu_platform_free"


# --------------------------------------------------------------------------- device routes


class RecordingPoolRoute(PoolRoute):
    """PoolRoute with torch's three calls recorded instead of made (no device here)."""

    def __init__(self, manager: MemoryManager) -> None:
        super().__init__(manager, "npu")
        self.calls: list[tuple] = []

    def _pluggable(self, path: str):
        self.calls.append(("pluggable", Path(path).name))
        return "allocator"

    def _new_pool(self, allocator):
        pool = SimpleNamespace(id=(0, len(self.calls)), allocator=allocator)
        self.calls.append(("pool", allocator))
        return pool

    @contextlib.contextmanager
    def _use(self, pool, index):
        self.calls.append(("use", pool.id, index))
        yield

    def _device_index(self) -> int:
        return 3


def test_pool_route_keeps_one_pool_per_key(emulated):
    if not shim_path().is_file():
        pytest.skip("the allocator shim is not built (pip install -e . builds it)")
    manager = MemoryManager(HostDriver())
    route = RecordingPoolRoute(manager)
    saver = TorchMemorySaver(manager=manager, route=route)
    with _shim_restored():
        with saver.region("kv_cache"), saver.disable():
            pass
        with saver.region("kv_cache"), saver.region("weights", enable_cpu_backup=True):
            pass
        assert (
            route.graph_pool(PoolKey("kv_cache", False, 0))
            == route.pool(PoolKey("kv_cache", False, 0)).id
        )
    pools = [c for c in route.calls if c[0] == "pool"]
    assert route.calls[0] == ("pluggable", "_alloc_shim.so")  # once, before any pool
    assert pools == [("pool", "allocator"), ("pool", None), ("pool", "allocator")]
    uses = [c for c in route.calls if c[0] == "use"]
    kv, ordinary, kv_again, weights = uses[:4]
    assert kv[1] == kv_again[1], "the same key reuses its pool"
    assert ordinary[2] == 3 and ordinary[1] != kv[1], "disable() uses the ordinary pool"
    assert weights[1] not in (kv[1], ordinary[1]), "another key, another pool"


def test_device_routes_without_their_device_refuse_clearly():
    class FakeCuda(HostDriver):
        name = "cuda"

    saver = TorchMemorySaver(driver=FakeCuda())
    with pytest.raises(NotSupported, match="allocator route"), saver.region("kv"):
        pass  # CPU-only torch has no CUDAPluggableAllocator backend
    assert isinstance(saver._route, PoolRoute) and saver._route.kind == "cuda"
    assert isinstance(default_route(MemoryManager(HostDriver())), ThreadStateRoute)


def test_the_emulated_npu_uses_torch_npu_mem_pools(saver: TorchMemorySaver):
    """On the emulated NPU the route's pools are torch.npu's, over the shim's allocator."""
    route = saver._route
    assert isinstance(route, PoolRoute)
    kv, weights = PoolKey("kv_cache", False, 0), PoolKey("weights", True, 0)
    with saver.region("kv_cache"):
        t = npu(3 * MIB, dtype=torch.uint8)
        with saver.region("weights", enable_cpu_backup=True):
            w = npu(MIB, dtype=torch.uint8)
    pool = route.pool(kv)
    assert isinstance(pool, torch.npu.MemPool) and pool.allocator is not None
    assert route.pool(kv) is pool and route.pool(weights) is not pool
    assert route.pool(weights).allocator is pool.allocator, "one pluggable allocator"
    assert route.graph_pool(kv) == pool.id
    assert AllocShim.shared().manager is saver.manager
    info = saver.manager.info(t.data_ptr())
    assert (info.tag, info.requested) == ("kv_cache", 3 * MIB)
    assert saver.manager.info(w.data_ptr()).enable_cpu_backup
