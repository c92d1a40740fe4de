"""torch allocations inside torch_memory_saver regions reach the memory manager.

Emulation (``NPU_PLATFORM_EMULATE=1``): c10's CPU allocator hook (``memory/cpu_hook.cpp``,
compiled with g++ on first use and cached) sends ``torch.empty`` / ``zeros`` / ``randn`` /
op outputs made on a thread inside a region to the manager over the host driver; pausing
really hands the memory back (RSS). Devices: the C shim built by ``pip install``
(``memory/_alloc_shim.so``) is checked the way torch's pluggable allocators call it, against a
manager on the host driver.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import os
import shutil
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from npu_platform.memory import cpu_hook
from npu_platform.memory.drivers.host import HostDriver
from npu_platform.memory.errors import NotSupported
from npu_platform.memory.manager import MemoryManager, State
from npu_platform.memory.table import PoolKey
from npu_platform.memory.torch_route import (
    ALLOC_FN,
    FREE_FN,
    AllocShim,
    CpuHookRoute,
    PoolRoute,
    default_route,
    shim_path,
)
from npu_platform.torch_memory_saver import TorchMemorySaver

ROOT = Path(__file__).resolve().parents[1]
MIB = 1 << 20
SHIM_EXPORTS = {ALLOC_FN, FREE_FN, "npu_platform_set_callbacks", "npu_platform_has_callbacks"}


def rss() -> int:
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) * 1024 for line in fh if line.startswith("VmRSS:"))


@pytest.fixture
def saver(emulated) -> TorchMemorySaver:
    """A fresh facade on the emulated NPU (host driver, 2 MiB granularity)."""
    saver = TorchMemorySaver()
    assert saver.driver.name == "host"
    leaked = cpu_hook.load().leaked()
    yield saver
    gc.collect()
    assert cpu_hook.load().leaked() == leaked, "a region tensor's free did not reach a manager"
    assert len(saver.manager) == 0, saver.manager.allocations()


def owned(saver: TorchMemorySaver, t: torch.Tensor) -> bool:
    return saver.manager.owns(t.data_ptr())


# --------------------------------------------------------------------------- emulation


def test_region_tensors_live_in_the_manager_and_pause_frees_them(saver: TorchMemorySaver):
    before = torch.empty(MIB)
    with saver.region("kv_cache"):
        a = torch.empty(256 * MIB, dtype=torch.uint8)
        b = torch.zeros(16 * MIB, dtype=torch.float32)  # 64 MiB
        c = torch.randn(4 * MIB, dtype=torch.float32)  # 16 MiB
        d = c * 2  # op outputs too
    after = torch.empty(MIB)
    assert all(owned(saver, t) for t in (a, b, c, d))
    assert not owned(saver, before) and not owned(saver, after)
    assert {info.tag for info in saver.manager.allocations()} == {"kv_cache"}
    assert float(b.abs().max()) == 0.0 and torch.equal(d, c * 2)

    a.fill_(1)
    ptrs = [t.data_ptr() for t in (a, b, c, d)]
    tagged = saver.manager.stats()["kv_cache"]["active_bytes"]
    assert tagged >= (256 + 64 + 16 + 16) * MIB
    held = rss()
    saver.pause("kv_cache")
    dropped = held - rss()
    assert dropped > 0.99 * tagged, (dropped, tagged)
    assert {info.state for info in saver.manager.allocations()} == {State.PAUSED}
    saver.resume("kv_cache")
    assert [t.data_ptr() for t in (a, b, c, d)] == ptrs
    assert rss() - held > -0.01 * tagged  # memory is back
    a.fill_(3)  # writable again at the same address
    assert int(a[-1]) == 3


def test_cpu_backup_keeps_contents_and_plain_regions_do_not(saver: TorchMemorySaver):
    with saver.region("weights", enable_cpu_backup=True):
        w = torch.randn(1024, 1024)
    with saver.region("kv_cache"):
        k = torch.full((4 * MIB,), 7, dtype=torch.uint8)
    expected = w.clone()
    assert not owned(saver, expected)
    saver.pause()
    assert torch.equal(saver.get_cpu_backup(w), expected)
    saver.resume()
    assert torch.equal(w, expected), "backed-up weights survive pause/resume"
    assert int(k.max()) == 0, "kv_cache had no backup: fresh memory after resume"
    info = saver.manager.info(w.data_ptr())
    assert (info.tag, info.enable_cpu_backup) == ("weights", True)


def test_outside_regions_and_disable_allocate_ordinarily(saver: TorchMemorySaver):
    hook = cpu_hook.load()
    live = hook.live()
    assert not hook.intercepting()
    with saver.region("kv_cache"):
        assert hook.intercepting()
        with saver.disable():
            assert not hook.intercepting()
            plain = torch.empty(4 * MIB, dtype=torch.uint8)
            plain_sum = plain.sum()  # op outputs too
        tagged = torch.empty(MIB, dtype=torch.uint8)
    assert not hook.intercepting()
    assert not owned(saver, plain) and not owned(saver, plain_sum)
    assert owned(saver, tagged)
    assert hook.live() == live + 1
    del tagged
    gc.collect()
    assert hook.live() == live


def test_freeing_region_tensors_returns_memory(saver: TorchMemorySaver):
    mgr = saver.manager
    with saver.region("kv_cache"):
        t = torch.empty(8 * MIB, dtype=torch.uint8)
        address = t.data_ptr()
        view = t[MIB:]
        del t
        gc.collect()
        assert mgr.owns(address), "a view keeps the storage alive"
        del view
        gc.collect()
        assert not mgr.owns(address), "freed inside the region"
        u = torch.empty(8 * MIB, dtype=torch.uint8)
        w = torch.empty(8 * MIB, dtype=torch.uint8)
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
        t = torch.empty(MIB, dtype=torch.uint8)
        t.resize_(4 * MIB)
    assert owned(saver, t)
    assert len(saver.manager) == 1, "the smaller first allocation was freed"


def test_nested_regions(saver: TorchMemorySaver):
    mgr = saver.manager
    with saver.region("outer", enable_cpu_backup=True):
        a = torch.empty(MIB)
        with saver.region("inner"):
            b = torch.empty(MIB)
            with saver.disable():
                c = torch.empty(MIB)
            b2 = torch.empty(MIB)
        d = torch.empty(MIB)
    e = torch.empty(MIB)
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
        results["other"] = torch.empty(4 * MIB, dtype=torch.uint8)
        allocated.set()

    def region_on_other_thread() -> None:
        with saver.region("theirs"):
            results["theirs"] = torch.empty(4 * MIB, dtype=torch.uint8)
            entered.set()
            allocated.wait(30)

    # This thread in a region, another one not.
    worker = threading.Thread(target=other_thread_allocates)
    worker.start()
    with saver.region("mine"):
        entered.set()
        assert allocated.wait(30)
        results["mine"] = torch.empty(4 * MIB, dtype=torch.uint8)
    worker.join()
    # Another thread in a region, this one not.
    entered.clear()
    allocated.clear()
    worker = threading.Thread(target=region_on_other_thread)
    worker.start()
    assert entered.wait(30)
    results["main"] = torch.empty(4 * MIB, dtype=torch.uint8)
    allocated.set()
    worker.join()

    mgr = saver.manager
    assert not owned(saver, results["other"]) and not owned(saver, results["main"])
    assert mgr.info(results["mine"].data_ptr()).tag == "mine"
    assert mgr.info(results["theirs"].data_ptr()).tag == "theirs"
    results.clear()
    gc.collect()


def test_out_of_memory_in_a_region_is_a_torch_error(emulated):
    driver = HostDriver(limit_bytes=8 * MIB)
    saver = TorchMemorySaver(driver=driver)
    with saver.region("kv_cache"):
        ok = torch.empty(4 * MIB, dtype=torch.uint8)
        with pytest.raises(torch.OutOfMemoryError, match="kv_cache") as info:
            torch.empty(16 * MIB, dtype=torch.uint8)
        assert "npu_platform" in str(info.value)
        still = torch.empty(2 * MIB, dtype=torch.uint8)  # the region keeps working
    assert saver.manager.owns(ok.data_ptr()) and saver.manager.owns(still.data_ptr())
    outside = torch.empty(64 * MIB, dtype=torch.uint8)  # not limited: ordinary memory
    assert not saver.manager.owns(outside.data_ptr())


def test_two_facades_keep_their_own_allocations(emulated):
    one = TorchMemorySaver(driver=HostDriver())
    two = TorchMemorySaver(driver=HostDriver())
    with one.region("a"):
        x = torch.empty(MIB)
        with two.region("b"):
            y = torch.empty(MIB)
        z = torch.empty(MIB)
    assert one.manager.owns(x.data_ptr()) and one.manager.owns(z.data_ptr())
    assert two.manager.owns(y.data_ptr()) and not one.manager.owns(y.data_ptr())
    del x, y, z
    gc.collect()
    assert len(one.manager) == 0 and len(two.manager) == 0


def test_the_hook_is_cached_per_torch_version(tmp_path, monkeypatch):
    assert cpu_hook.load().installed
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    first = cpu_hook.build()
    assert first.parent == tmp_path / "npu_platform"
    assert torch.__version__.split("+")[0] in first.name
    assert cpu_hook.last_build_seconds is not None and cpu_hook.last_build_seconds < 60
    mtime = first.stat().st_mtime_ns
    assert cpu_hook.build() == first and first.stat().st_mtime_ns == mtime


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
            weights = torch.arange(1 << 20, dtype=torch.float32)
        with tms.region(tag="kv_cache"):
            kv = torch.ones(256 << 20, dtype=torch.uint8)
        ptrs = (weights.data_ptr(), kv.data_ptr())
        held = rss()
        tms.pause("kv_cache")
        assert held - rss() > 0.99 * (256 << 20)
        tms.pause("weights")
        tms.resume()
        assert (weights.data_ptr(), kv.data_ptr()) == ptrs
        assert torch.equal(weights, torch.arange(1 << 20, dtype=torch.float32))
        print("OK")
        # exits with the region tensors alive: their frees must not call into a dying
        # interpreter
        """
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip() == "OK"
    assert "Exception ignored" not in proc.stderr, proc.stderr


def test_missing_compiler_is_named_when_a_region_is_used(tmp_path):
    proc = _python(
        """
        import torch
        from npu_platform.torch_memory_saver import torch_memory_saver as tms
        outside = torch.empty(4)          # no region: nothing needs compiling
        tms.pause()                       # nor for pause/resume
        try:
            with tms.region("kv_cache"):
                pass
        except Exception as exc:
            print(type(exc).__name__, exc)
        """,
        PATH=str(tmp_path),  # no g++ / c++ here
        XDG_CACHE_HOME=str(tmp_path / "cache"),  # and nothing cached
        CXX="",
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.startswith("CompilerMissing"), proc.stdout + proc.stderr
    assert "g++" in proc.stdout


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
    try:
        with saver.region("kv_cache"), saver.disable():
            pass
        with saver.region("kv_cache"), saver.region("weights", enable_cpu_backup=True):
            pass
        assert (
            route.graph_pool(PoolKey("kv_cache", False, 0))
            == route.pool(PoolKey("kv_cache", False, 0)).id
        )
    finally:
        AllocShim.shared().disconnect()
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
    assert isinstance(default_route(MemoryManager(HostDriver())), CpuHookRoute)
