"""npu_platform.torch_memory_saver: torch_memory_saver 0.0.10's API in emulation."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from npu_platform import torch_memory_saver as tms_module
from npu_platform.memory.drivers.host import HostDriver
from npu_platform.memory.errors import NotSupported, ResumeOutOfMemory
from npu_platform.memory.manager import State
from npu_platform.torch_memory_saver import TorchMemorySaver, configure_subprocess

ROOT = Path(__file__).resolve().parents[1]
KIB = 1 << 10


@pytest.fixture
def saver() -> TorchMemorySaver:
    return TorchMemorySaver(driver=HostDriver(granularity=64 * KIB))


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
            weights = tms.empty((1024, 1024), torch.float32)   # 4 MiB
        with tms.region(tag="kv_cache"):
            kv_cache = tms.empty((64 << 20,), torch.uint8)     # 64 MiB
            with tms.disable():
                ordinary = torch.ones(10)
        weights.copy_(torch.arange(1024 * 1024, dtype=torch.float32).view(1024, 1024))
        kv_cache.fill_(7)
        expected = weights.clone()
        ptrs = (weights.data_ptr(), kv_cache.data_ptr())

        before = rss()
        tms.pause("kv_cache")
        assert before - rss() > 0.99 * (64 << 20), "kv_cache memory returned"
        assert torch.equal(weights, expected), "weights still readable"
        tms.pause()                                  # pause everything else too
        tms.pause()                                  # double pause: logged no-op
        assert torch.equal(tms.get_cpu_backup(weights), expected)
        tms.resume("weights")
        tms.resume()
        tms.resume()                                 # double resume: logged no-op
        assert (weights.data_ptr(), kv_cache.data_ptr()) == ptrs
        assert torch.equal(weights, expected), "cpu backup restored"
        assert int(kv_cache.max()) == 0, "no backup: contents discarded"
        assert tms.get_cpu_backup(weights) is None
        tms.retain_cpu_backup = True
        tms.pause("weights"); tms.resume("weights")
        assert torch.equal(tms.get_cpu_backup(weights, zero_copy=True), expected)
        tms.memory_margin_bytes = 0
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


def test_cuda_graph_is_a_tagged_region_in_emulation(saver: TorchMemorySaver) -> None:
    with saver.cuda_graph(object(), tag="graph", enable_cpu_backup=True):
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


def test_preload_on_npu_explains_dlsym() -> None:
    class FakeAcl(HostDriver):
        name = "acl"

    saver = TorchMemorySaver(driver=FakeAcl())
    with pytest.raises(NotSupported, match="dlsym"):
        saver.hook_mode = "preload"
    # Without an allocator route a device region refuses instead of silently not pausing.
    with pytest.raises(NotSupported, match="allocator route"), saver.region("kv"):
        pass


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
