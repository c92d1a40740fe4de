"""npu_platform.torch_memory_saver: torch_memory_saver 0.0.10's API.

On the emulated NPU (``npu`` tensors, the ACL driver, the pool route) in a fresh process and
in this one (graph capture), and over the host driver, whose facade allocates with
:meth:`TorchMemorySaver.empty`.
"""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from npu_platform import torch_memory_saver as tms_module
from npu_platform.memory.drivers.host import HostDriver
from npu_platform.memory.errors import NotSupported, ResumeOutOfMemory
from npu_platform.memory.manager import State
from npu_platform.memory.table import PoolKey
from npu_platform.memory.torch_route import AllocShim, PoolRoute, shim_path
from npu_platform.torch_memory_saver import TorchMemorySaver, configure_subprocess

ROOT = Path(__file__).resolve().parents[1]
KIB = 1 << 10


@pytest.fixture
def saver() -> TorchMemorySaver:
    return TorchMemorySaver(driver=HostDriver(granularity=64 * KIB))


@pytest.fixture
def npu_saver(emulated) -> Iterator[TorchMemorySaver]:
    """A fresh facade on the emulated NPU; the process-wide allocator shim (which serves one
    manager at a time) goes back to the manager it served before."""
    shim = AllocShim.shared() if shim_path().is_file() else None
    previous = None if shim is None else shim.manager
    saver = TorchMemorySaver()
    assert saver.driver.name == "acl" and isinstance(saver._route, PoolRoute)
    yield saver
    gc.collect()
    if shim is not None and shim.manager is not previous:
        if previous is None:
            shim.disconnect()
        else:
            shim.connect(previous)


def _python(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, **env, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        check=False,
        text=True,
        env=full_env,
        timeout=120,
        cwd=ROOT,
    )


def test_public_names_match_upstream() -> None:
    assert isinstance(tms_module.torch_memory_saver, TorchMemorySaver)
    for name in (
        "region",
        "cuda_graph",
        "disable",
        "pause",
        "resume",
        "enabled",
        "hook_mode",
        "memory_margin_bytes",
        "retain_cpu_backup",
        "get_cpu_backup",
        "set_disk_backup_dir",
    ):
        assert hasattr(TorchMemorySaver, name), name
    with configure_subprocess():
        pass


def test_import_does_not_import_torch() -> None:
    proc = _python(
        """
        import sys
        from npu_platform.torch_memory_saver import torch_memory_saver
        assert torch_memory_saver.enabled
        print("torch" in sys.modules)
        """
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "False"


def test_script_uses_only_the_torch_memory_saver_api() -> None:
    """The upstream examples as a user script, on the emulated NPU (a fresh process)."""
    proc = _python(
        """
        import torch
        from npu_platform.torch_memory_saver import torch_memory_saver as tms

        def rss():
            with open("/proc/self/status") as fh:
                return next(int(l.split()[1]) * 1024 for l in fh if l.startswith("VmRSS:"))

        tms.hook_mode = "torch"
        with tms.region(tag="weights", enable_cpu_backup=True):
            weights = torch.empty((1024, 1024), dtype=torch.float32, device="npu")  # 4 MiB
        with tms.region(tag="kv_cache"):
            kv_cache = torch.empty((64 << 20,), dtype=torch.uint8, device="npu")  # 64 MiB
            with tms.disable():
                ordinary = torch.ones(10, device="npu")
        assert tms.manager.driver.name == "acl"
        assert tms.manager.owns(weights.data_ptr()) and tms.manager.owns(kv_cache.data_ptr())
        assert not tms.manager.owns(ordinary.data_ptr())
        weights.copy_(torch.arange(1024 * 1024, dtype=torch.float32).view(1024, 1024))
        kv_cache.fill_(7)
        expected = weights.cpu()
        ptrs = (weights.data_ptr(), kv_cache.data_ptr())

        before = rss()
        tms.pause("kv_cache")
        assert before - rss() > 0.99 * (64 << 20), "kv_cache memory returned"
        assert torch.equal(weights.cpu(), expected), "weights still readable"
        tms.pause()                                  # pause everything else too
        tms.pause()                                  # double pause: logged no-op
        assert torch.equal(tms.get_cpu_backup(weights), expected)
        tms.resume("weights")
        tms.resume()
        tms.resume()                                 # double resume: logged no-op
        assert (weights.data_ptr(), kv_cache.data_ptr()) == ptrs
        assert torch.equal(weights.cpu(), expected), "cpu backup restored"
        assert int(kv_cache.max()) == 0, "no backup: contents discarded"
        assert tms.get_cpu_backup(weights) is None
        tms.retain_cpu_backup = True
        tms.pause("weights"); tms.resume("weights")
        assert torch.equal(tms.get_cpu_backup(weights, zero_copy=True), expected)
        tms.memory_margin_bytes = 0
        assert float(ordinary.sum()) == 10.0, "ordinary memory was never paused"
        print("OK")
        """,
        NPU_PLATFORM_EMULATE="1",
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip().endswith("OK")
    assert "is a no-op" in proc.stderr  # the warnings reached the log (stderr by default)


def test_region_nesting_and_disable(saver: TorchMemorySaver) -> None:
    mgr = saver.manager
    with saver.region("outer", enable_cpu_backup=True):
        with saver.region("inner"):
            assert mgr.current_region() == ("inner", False, True)
            with saver.disable():
                assert not mgr.intercepting()
            t = saver.empty(16)
        assert mgr.current_region() == ("outer", True, True)
    assert not mgr.intercepting()
    assert mgr.info(t.data_ptr()).tag == "inner"


def test_cuda_graph_captures_and_replays_in_a_tagged_region(
    npu_saver: TorchMemorySaver,
) -> None:
    """On the emulated NPU: a real torch.npu graph capture, its memory in the tag's pool."""
    saver = npu_saver
    graph = torch.npu.NPUGraph()
    static_in = torch.ones(1024, device="npu")
    with saver.cuda_graph(graph, tag="graph", enable_cpu_backup=True):
        assert torch.npu.is_current_stream_capturing()
        static_out = static_in * 2 + 1
    assert not torch.npu.is_current_stream_capturing()
    info = saver.manager.info(static_out.data_ptr())
    assert (info.tag, info.enable_cpu_backup) == ("graph", True)
    assert not saver.manager.owns(static_in.data_ptr()), "made outside: ordinary memory"
    key = PoolKey("graph", True, 0)
    assert graph.pool() == saver._route.graph_pool(key), "captured into the tag's pool"
    assert torch.equal(static_out.cpu(), torch.full((1024,), 3.0))

    static_in.fill_(3)
    graph.replay()
    assert torch.equal(static_out.cpu(), torch.full((1024,), 7.0))
    ptr = static_out.data_ptr()
    saver.pause("graph")
    assert saver.manager.info(ptr).state is State.PAUSED
    saver.resume("graph")
    assert static_out.data_ptr() == ptr
    assert torch.equal(static_out.cpu(), torch.full((1024,), 7.0)), "cpu backup restored"
    static_in.fill_(5)
    graph.replay()  # the graph writes into the same (resumed) memory
    assert torch.equal(static_out.cpu(), torch.full((1024,), 11.0))
    del graph, static_out
    gc.collect()
    assert len(saver.manager) == 0, saver.manager.allocations()


def test_cuda_graph_with_the_host_driver_is_a_tagged_region(saver: TorchMemorySaver) -> None:
    with saver.cuda_graph(object(), tag="graph", enable_cpu_backup=True):  # no capture
        t = saver.empty(8)
        t.fill_(2)
    info = saver.manager.info(t.data_ptr())
    assert (info.tag, info.enable_cpu_backup) == ("graph", True)
    saver.pause("graph")
    saver.resume("graph")
    assert float(t.sum()) == 16.0


def test_unsupported_features_raise_clearly(saver: TorchMemorySaver) -> None:
    with pytest.raises(NotSupported, match="nothing to intercept"):
        saver.hook_mode = "preload"
    with pytest.raises(ValueError):
        saver.hook_mode = "magic"
    saver.hook_mode = "torch"
    assert saver.hook_mode == "torch" and saver.enabled
    with pytest.raises(NotSupported, match="disk backup"):
        saver.set_disk_backup_dir("/tmp/x")
    with pytest.raises(NotSupported), saver.region(enable_disk_backup=True):
        pass
    with (
        pytest.raises(ValueError, match="requires enable_cpu_backup"),
        saver.region(cpu_backup_backend="pinned"),
    ):
        pass
    with saver.region("x", enable_cpu_backup=True, cpu_backup_backend="mmap"):
        pass


def test_preload_on_npu_explains_dlsym(monkeypatch: pytest.MonkeyPatch) -> None:
    class FakeAcl(HostDriver):
        name = "acl"

    saver = TorchMemorySaver(driver=FakeAcl())
    with pytest.raises(NotSupported, match="dlsym"):
        saver.hook_mode = "preload"
    # Without an allocator route a device region refuses instead of silently not pausing.
    # No NPU here, whatever earlier tests loaded (the emulated torch_npu stays loaded and
    # then counts as a real one).
    from npu_platform import detect, device

    monkeypatch.setattr(detect, "_cached", detect.Detection(detect.Target.NONE, "no NPU (test)"))
    device.reset_backend()
    try:
        with (
            pytest.raises(NotSupported, match="allocator route") as info,
            saver.region("kv"),
        ):
            pass
        assert "no NPU device is available" in str(info.value)
    finally:
        device.reset_backend()


def test_resume_oom_through_the_facade(saver: TorchMemorySaver) -> None:
    driver = saver.driver
    assert isinstance(driver, HostDriver)
    with saver.region("kv_cache", enable_cpu_backup=True):
        ts = [saver.empty((64 * KIB // 4,), torch.float32) for _ in range(3)]
    for i, t in enumerate(ts):
        t.fill_(i + 1)
    saver.pause("kv_cache")
    driver.limit_bytes = driver.used_bytes + 64 * KIB
    with pytest.raises(ResumeOutOfMemory, match="kv_cache") as info:
        saver.resume("kv_cache")
    assert "65536 bytes" in str(info.value)
    states = [saver.manager.info(t.data_ptr()).state for t in ts]
    assert states == [State.ACTIVE, State.PAUSED, State.PAUSED]
    assert float(ts[0][0]) == 1.0
    assert float(saver.get_cpu_backup(ts[2])[0]) == 3.0
    driver.limit_bytes = None
    saver.resume("kv_cache")
    assert [float(t[0]) for t in ts] == [1.0, 2.0, 3.0]
    del ts, t
    gc.collect()
    assert len(saver.manager) == 0


def test_margin_and_retain_setters(saver: TorchMemorySaver) -> None:
    saver.memory_margin_bytes = 123
    assert saver.memory_margin_bytes == saver.manager.memory_margin_bytes == 123
    saver.retain_cpu_backup = True
    assert saver.retain_cpu_backup and saver.manager.retain_cpu_backup


def test_env_retain_cpu_backup(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TMS_RETAIN_CPU_BACKUP", "1")
    assert TorchMemorySaver(driver=HostDriver()).retain_cpu_backup
