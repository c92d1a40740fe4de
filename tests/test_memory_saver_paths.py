"""Less-used paths of the memory stack's upper layers: driver selection, the library-driver
base class (on the emulated ACL runtime), the torch_memory_saver facade's options and
refusals, the allocator shim's error handling, the CUDA route on a CPU-only torch, and the
vLLM sleep-mode backend's selective calls.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import sys
import threading
import time

import pytest
import torch

from npu_platform import detect
from npu_platform import torch_memory_saver as tms_module
from npu_platform.errors import EnvironmentProblem
from npu_platform.memory import driver as driver_mod
from npu_platform.memory import drivers
from npu_platform.memory.driver import DriverError, RangeIndex
from npu_platform.memory.drivers import cuda
from npu_platform.memory.drivers.host import HostDriver
from npu_platform.memory.errors import NotSupported
from npu_platform.memory.manager import MemoryManager, State
from npu_platform.memory.table import PoolKey
from npu_platform.memory.torch_route import AllocShim, PoolRoute, shim_path
from npu_platform.torch_memory_saver import ThreadStateRoute, TorchMemorySaver
from tests.memory_scenarios import capture_logs

KIB = 1 << 10
MIB = 1 << 20
GRAN = 64 * KIB


class NamedHost(HostDriver):
    """Host memory under another driver's name: selects that driver's code paths."""

    def __init__(self, name: str) -> None:
        super().__init__(granularity=GRAN, populate=False)
        self.name = name


# -- choosing and loading a driver -----------------------------------------------------------------


def test_a_driver_that_cannot_be_imported_is_an_environment_problem(monkeypatch) -> None:
    monkeypatch.setitem(drivers.DRIVERS, "gone", ("npu_platform.memory.drivers.gone", "Gone"))
    with pytest.raises(EnvironmentProblem, match=r"the 'gone' memory driver .* cannot be loaded"):
        drivers.load_driver("gone")
    monkeypatch.setitem(drivers.DRIVERS, "typo", ("npu_platform.memory.drivers.host", "Hst"))
    with pytest.raises(EnvironmentProblem, match=r"drivers\.host\.Hst\) cannot be loaded: .*Hst"):
        drivers.load_driver("typo")
    with pytest.raises(ValueError, match="unknown memory driver 'tpu'; choose one of acl, cuda"):
        drivers.load_driver("tpu")


def test_without_an_npu_the_default_driver_is_cuda_or_host(monkeypatch) -> None:
    monkeypatch.delenv("NPU_PLATFORM_EMULATE", raising=False)
    try:
        if detect.detect(refresh=True).is_npu:
            pytest.skip("this machine has an Ascend NPU")
        expected = "cuda" if torch.cuda.is_available() else "host"
        assert drivers.default_driver_name() == expected
        # the facade's hint for hook_mode='preload' follows the same choice
        saver = TorchMemorySaver()
        with pytest.raises(NotSupported) as info:
            saver.hook_mode = "preload"
        if expected == "host":
            assert "nothing to intercept with the host driver" in str(info.value)
        assert saver._manager is None, "asking for the hint created no manager"
    finally:
        detect.detect(refresh=True)


def test_default_driver_on_a_cuda_machine_and_with_a_broken_cuda_stack(monkeypatch) -> None:
    monkeypatch.delenv("NPU_PLATFORM_EMULATE", raising=False)
    try:
        if detect.detect(refresh=True).is_npu:
            pytest.skip("this machine has an Ascend NPU")
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        assert drivers.default_driver_name() == "cuda"

        def broken() -> bool:
            raise RuntimeError("CUDA driver initialization failed")

        monkeypatch.setattr(torch.cuda, "is_available", broken)
        assert drivers.default_driver_name() == "host"
    finally:
        detect.detect(refresh=True)


def test_preload_refusal_survives_a_failing_driver_choice(monkeypatch) -> None:
    def failing() -> str:
        raise EnvironmentProblem("detection failed")

    monkeypatch.setattr(drivers, "default_driver_name", failing)
    saver = TorchMemorySaver()
    with pytest.raises(NotSupported, match="implements only hook_mode='torch'"):
        saver.hook_mode = "preload"


# -- the library-driver base class, on the emulated ACL runtime ------------------------------------


def test_range_index() -> None:
    index = RangeIndex()
    index.add(0x1000, 0x100, 7)
    index.add(0x3000, 0x100, 8)
    assert len(index) == 2
    assert (index.find(0x10FF), index.find(0x1100), index.find(0xFFF)) == (7, None, None)
    assert index.pop(0x1000) == (0x100, 7) and index.pop(0x1000) is None
    assert len(index) == 1 and index.find(0x3050) == 8


def test_library_driver_refuses_foreign_handles_and_bad_sizes(emulated) -> None:
    from npu_platform.memory.drivers.acl import AclDriver

    drv = AclDriver()
    with pytest.raises(DriverError, match=r"not an ACL physical allocation: 'nope'"):
        drv.free("nope")
    with pytest.raises(DriverError, match=r"not host memory from AclDriver\.host_alloc: 5"):
        drv.host_free(5)
    with pytest.raises(ValueError, match="size must be positive, got 0"):
        drv.host_alloc(0)
    assert driver_mod._article("CUDA") == "a" and driver_mod._article("ACL") == "an"


def test_release_of_a_range_another_driver_reserved(emulated) -> None:
    from npu_platform.memory.drivers.acl import AclDriver

    first, second = AclDriver(), AclDriver()
    live = ctypes.CDLL(first.library).fake_acl_live_reservations
    live.restype = ctypes.c_size_t
    before = live()
    g = first.granularity(0)
    va = first.reserve(g, 0)
    assert live() == before + 1
    second.release(va, g)  # unrecorded here: released with the size it is given
    assert live() == before
    first._reserved.pop(va)


def test_library_results_that_make_no_sense_are_driver_errors(emulated) -> None:
    from npu_platform.memory.drivers.acl import AclDriver

    class Broken(AclDriver):
        def _do_granularity(self, device: int) -> int:
            return 0

        def _do_host_alloc(self, size: int) -> int:
            return 0

    drv = Broken()
    with pytest.raises(DriverError, match="aclrtMemGetAllocationGranularity returned 0"):
        drv.granularity(0)
    with pytest.raises(DriverError, match="aclrtMallocHost returned NULL"):
        drv.host_alloc(64)


def test_cuda_allocation_properties_are_built_without_a_gpu() -> None:
    drv = object.__new__(cuda.CudaDriver)  # no libcuda here: only the pure-Python helper
    prop = drv._prop(3)
    assert ctypes.sizeof(prop) == 32
    assert (prop.type, prop.requestedHandleTypes) == (cuda.CU_MEM_ALLOCATION_TYPE_PINNED, 0)
    assert (prop.location.type, prop.location.id) == (cuda.CU_MEM_LOCATION_TYPE_DEVICE, 3)
    assert prop.win32HandleMetaData is None and bytes(prop.allocFlags) == bytes(8)


# -- the facade ------------------------------------------------------------------------------------


class RecordingRoute:
    """An allocator route that records what the facade asks of it."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, object]] = []

    def region(self, key: PoolKey):
        self.calls.append(("region", key))
        return contextlib.nullcontext()

    def ordinary(self):
        self.calls.append(("ordinary", None))
        return contextlib.nullcontext()

    def graph_pool(self, key: PoolKey) -> object | None:
        self.calls.append(("graph_pool", key))
        return None


def test_an_installed_route_sees_every_region() -> None:
    saver = TorchMemorySaver(driver=HostDriver(granularity=GRAN))
    route = RecordingRoute()
    saver.set_allocator_route(route)
    with saver.region("kv", enable_cpu_backup=True, cpu_backup_backend="pinned"), saver.disable():
        pass
    with saver.cuda_graph(object(), tag="graph"):
        t = saver.empty(16, torch.uint8)
    assert route.calls == [
        ("region", PoolKey("kv", True, 0)),
        ("ordinary", None),
        ("graph_pool", PoolKey("graph", False, 0)),
        ("region", PoolKey("graph", False, 0)),
    ]
    assert saver.manager.info(t.data_ptr()).tag == "graph"


def test_backup_options_are_checked() -> None:
    saver = TorchMemorySaver(driver=HostDriver(granularity=GRAN))
    bad_backend = pytest.raises(ValueError, match=r"one of \('pinned', 'mmap'\), got 'disk'")
    with bad_backend, saver.region("kv", enable_cpu_backup=True, cpu_backup_backend="disk"):
        pass
    no_backup = pytest.raises(ValueError, match="requires enable_cpu_backup=True")
    with no_backup, saver.cuda_graph(object(), cpu_backup_backend="mmap"):
        pass
    assert saver.manager.current_region().intercepting is False


def test_init_environment_that_is_ignored_is_warned_about(monkeypatch) -> None:
    monkeypatch.setenv("TMS_INIT_ENABLE", "1")
    monkeypatch.setenv("TMS_DISK_BACKUP_DIR", "/tmp/x")
    saver = TorchMemorySaver(driver=HostDriver(granularity=GRAN))
    with capture_logs() as logs:
        assert len(saver.manager) == 0
    warnings = [r.getMessage() for r in logs if r.levelno == logging.WARNING]
    assert [w.split()[0] for w in warnings] == ["TMS_INIT_ENABLE", "TMS_DISK_BACKUP_DIR"]
    assert all("is set but ignored" in w for w in warnings)


def test_concurrent_first_use_creates_one_manager() -> None:
    saver = TorchMemorySaver(driver=HostDriver(granularity=GRAN))
    got: list[MemoryManager] = []
    with saver._init_lock:  # both threads find no manager and queue for the lock
        threads = [threading.Thread(target=lambda: got.append(saver.manager)) for _ in range(2)]
        for t in threads:
            t.start()
        time.sleep(0.2)
    for t in threads:
        t.join(10)
    assert len(got) == 2 and got[0] is got[1] is saver.manager


def test_device_driver_names_select_device_paths() -> None:
    saver = TorchMemorySaver(driver=NamedHost("cuda"), route=ThreadStateRoute())
    with pytest.raises(NotSupported, match="only works with the host driver"):
        saver.empty(4)
    with pytest.raises(NotSupported, match="use the upstream torch_memory_saver package"):
        saver.hook_mode = "preload"
    assert saver.hook_mode == "torch"
    # cuda_graph hands the capture to torch.cuda.graph, which needs CUDA
    if torch.cuda.is_available():
        pytest.skip("the refusal below is CPU-only torch's")
    with pytest.raises(RuntimeError, match="CUDA"), saver.cuda_graph(object(), tag="graph"):
        pass
    assert len(saver.manager) == 0


# -- the allocator shim and the CUDA pool route ----------------------------------------------------


@pytest.fixture
def shim_manager():
    if not shim_path().is_file():
        pytest.skip("the allocator shim is not built (pip install -e . builds it)")
    manager = MemoryManager(HostDriver(granularity=GRAN, populate=False))
    shim = AllocShim()
    yield shim, manager
    shim.disconnect()
    manager.free_all()


def test_shim_callbacks_without_a_manager_or_pointer_do_nothing(shim_manager) -> None:
    shim, manager = shim_manager
    assert shim._on_alloc(MIB, 0, None) is None  # never connected: NULL, torch's OOM
    shim._on_free(None, MIB, 0, None)
    assert len(manager) == 0 and shim._owners == {}


def test_shim_free_of_memory_the_manager_already_freed_is_logged(shim_manager, caplog) -> None:
    shim, manager = shim_manager
    shim.connect(manager)
    ptr = shim.alloc(GRAN, 0, None)
    assert manager.owns(ptr)
    manager.free(ptr)
    with caplog.at_level(logging.ERROR, logger="npu_platform.memory"):
        shim.free(ptr, GRAN, 0, None)  # torch frees it later: logged, never raised
    assert f"allocator shim: free(0x{ptr:x}) failed" in caplog.text
    assert "no allocation of this memory manager starts at this address" in caplog.text


def test_pool_route_kinds() -> None:
    manager = MemoryManager(HostDriver(granularity=GRAN))
    with pytest.raises(ValueError, match="kind must be 'npu' or 'cuda', got 'tpu'"):
        PoolRoute(manager, "tpu")
    if torch.version.cuda is not None:  # the vLLM 0.33 line's torch is a CUDA build
        pytest.skip("checks a CPU-only torch's refusals of the CUDA calls")
    route = PoolRoute(manager, "cuda")
    with pytest.raises(AssertionError, match="Torch not compiled with CUDA enabled"):
        route.ordinary()  # torch.cuda.current_device()
    with pytest.raises(RuntimeError, match="MemPool"):
        route._new_pool(None)  # torch.cuda.MemPool
    use = route._use(object(), 0)  # torch.cuda.use_mem_pool: a context manager, not entered
    assert hasattr(use, "__enter__") and hasattr(use, "__exit__")


# -- the vLLM sleep-mode backend -------------------------------------------------------------------


@pytest.fixture
def backend(monkeypatch):
    from npu_platform.vllm import sleep

    saver = TorchMemorySaver(driver=HostDriver(granularity=GRAN, populate=False))
    monkeypatch.setattr(tms_module, "torch_memory_saver", saver)
    assert sleep.saver() is saver
    with saver.region("weights", enable_cpu_backup=True):
        weights = saver.empty(1000, torch.float32)
    with saver.region("kv_cache"):
        kv = saver.empty(1000, torch.float32)
    weights.copy_(torch.arange(1000, dtype=torch.float32))
    kv.fill_(3.0)
    yield sleep.NPUSleepModeBackend(), saver, weights, kv
    saver.manager.free_all()


def test_sleep_backend_unavailable_when_the_memory_package_cannot_be_imported(monkeypatch):
    from npu_platform.vllm import sleep

    assert sleep.available() is True
    monkeypatch.delitem(sys.modules, "npu_platform.memory.manager")
    monkeypatch.delitem(sys.modules, "npu_platform.torch_memory_saver")
    monkeypatch.setitem(sys.modules, "npu_platform.memory", None)  # a broken install
    assert sleep.available() is False
    assert sleep.NPUSleepModeBackend.is_supported() is False


def _states(saver: TorchMemorySaver) -> dict[str, State]:
    return {info.tag: info.state for info in saver.manager.allocations()}


@contextlib.contextmanager
def vllm_plugin_log():
    """The text logged to ``vllm.npu_platform`` (any level) while open."""
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.DEBUG)
    handler.emit = records.append  # type: ignore[method-assign]
    log = logging.getLogger("vllm.npu_platform")
    old = log.level
    log.addHandler(handler)
    log.setLevel(logging.DEBUG)
    text: list[str] = []
    try:
        yield text
    finally:
        log.removeHandler(handler)
        log.setLevel(old)
        text.extend(r.getMessage() for r in records)


def test_sleep_backend_selective_discard_and_wake_up(backend) -> None:
    from npu_platform.vllm import sleep

    npu_backend, saver, weights, kv = backend
    assert sleep.NPUSleepModeBackend.preserves_communicators() is True
    assert sleep.NPUSleepModeBackend.is_supported() is True
    with pytest.raises(ValueError, match="sleep level must be 1 or 2, got 3"):
        npu_backend.suspend(level=3)
    assert npu_backend.state() == "RUNNING"
    with vllm_plugin_log() as log:
        npu_backend.discard(("runtime",))  # not managed here: nothing happens
    assert npu_backend.state() == "RUNNING" and log == ["NPU sleep: discarded nothing"]
    npu_backend.discard(("kv_cache", "runtime"))
    assert npu_backend.state() == "SUSPENDED"
    assert _states(saver) == {"weights": State.ACTIVE, "kv_cache": State.PAUSED}
    assert sleep.memory_stats()["kv_cache"]["paused_bytes"] == GRAN
    with vllm_plugin_log() as log:
        npu_backend.resume(["kv_cache", "runtime"])
    assert log == ["NPU wake-up: tags ['runtime'] hold no paused memory here"]
    assert npu_backend.state() == "RUNNING"
    assert _states(saver) == {"weights": State.ACTIVE, "kv_cache": State.ACTIVE}
    npu_backend.suspend(level=1)
    npu_backend.resume(["weights"])  # selective wake-up: the KV cache still sleeps
    assert npu_backend.state() == "SUSPENDED"
    assert torch.equal(weights, torch.arange(1000, dtype=torch.float32))
    npu_backend.resume()
    assert npu_backend.state() == "RUNNING"
