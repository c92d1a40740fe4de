"""torch_memory_saver's public API (0.0.10) on npu_platform's memory manager.

Use it where code does ``from torch_memory_saver import torch_memory_saver``::

    from npu_platform.torch_memory_saver import torch_memory_saver

    with torch_memory_saver.region(tag="kv_cache"):
        ...                                   # allocations made here can be paused
    torch_memory_saver.pause("kv_cache")      # physical memory goes back to the device
    torch_memory_saver.resume("kv_cache")     # same addresses, fresh memory

Same names and semantics as upstream, with these differences:

* Errors are exceptions (subclasses of :class:`npu_platform.errors.NPUPlatformError`), never
  ``exit(1)``; pausing what is paused or resuming what is active is a logged no-op; running
  out of memory in ``resume`` leaves a consistent state that a later ``resume`` completes.
* The driver follows detection: ACL on an Ascend NPU (the emulated one included), CUDA on
  an NVIDIA GPU, else host memory. ``TorchMemorySaver(driver=...)`` overrides it.
* Only ``hook_mode = "torch"`` exists. On Ascend, ``"preload"`` cannot work because
  torch_npu reaches its allocator through ``dlsym``, which ``LD_PRELOAD`` does not
  intercept; setting it raises :class:`NotSupported`. :func:`configure_subprocess` is
  therefore a no-op context manager, kept for compatibility.
* Disk backup (``enable_disk_backup``, :meth:`TorchMemorySaver.set_disk_backup_dir`) is not
  implemented and raises :class:`NotSupported`; ``cpu_backup_backend`` is accepted and
  ignored (the driver decides how host memory is allocated).
* ``cuda_graph`` wraps ``torch.npu.graph`` on Ascend and ``torch.cuda.graph`` on CUDA,
  passing every argument by keyword.
* Getters exist for ``hook_mode`` and ``memory_margin_bytes`` (upstream: set-only).

How torch allocations reach the manager is an *allocator route*
(:class:`AllocatorRoute`, installed per driver by
:func:`npu_platform.memory.torch_route.default_route`): on a device (Ascend, CUDA) it is a
pluggable allocator (the package's C shim) plus one memory pool per (tag, backup, device).
With the host driver there is no torch route: :meth:`TorchMemorySaver.empty` (an
npu_platform extension) allocates manager memory directly.

Importing this module does not import torch; the first call that needs it does.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Protocol

from npu_platform.memory.errors import NotSupported
from npu_platform.memory.regions import DEFAULT_TAG
from npu_platform.memory.table import PoolKey

if TYPE_CHECKING:
    import torch

    from npu_platform.memory.driver import Driver
    from npu_platform.memory.manager import MemoryManager

__all__ = [
    "AllocatorRoute",
    "NotSupported",
    "TorchMemorySaver",
    "configure_subprocess",
    "torch_memory_saver",
]

logger = logging.getLogger("npu_platform.memory")

_HOOK_MODES = ("torch", "preload")
_BACKUP_BACKENDS = ("pinned", "mmap")


class AllocatorRoute(Protocol):
    """How torch allocations made inside a region end up in the manager."""

    def region(self, key: PoolKey) -> contextlib.AbstractContextManager[Any]:
        """Route this thread's torch allocations to the pool of ``key`` while open."""

    def ordinary(self) -> contextlib.AbstractContextManager[Any]:
        """Route this thread's torch allocations to ordinary memory while open."""

    def graph_pool(self, key: PoolKey) -> object | None:
        """The graph-pool handle of ``key`` for graph capture (None: let torch choose)."""


class ThreadStateRoute:
    """Regions only set the manager's thread-local state (no torch pools, no hook)."""

    def region(self, key: PoolKey) -> contextlib.AbstractContextManager[Any]:
        return contextlib.nullcontext()

    def ordinary(self) -> contextlib.AbstractContextManager[Any]:
        return contextlib.nullcontext()

    def graph_pool(self, key: PoolKey) -> object | None:
        return None


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


class TorchMemorySaver:
    """The torch_memory_saver API over a :class:`MemoryManager` (created on first use)."""

    def __init__(
        self,
        *,
        driver: Driver | None = None,
        manager: MemoryManager | None = None,
        route: AllocatorRoute | None = None,
    ) -> None:
        self._init_lock = threading.Lock()
        self._driver = driver
        self._manager = manager
        self._route = route
        self._hook_mode = "torch"

    # ------------------------------------------------------------------ set-up

    @property
    def manager(self) -> MemoryManager:
        """The underlying :class:`MemoryManager` (creating it and its driver if needed)."""
        manager = self._manager
        if manager is None:
            manager = self._initialize()
        return manager

    def _initialize(self) -> MemoryManager:
        with self._init_lock:
            if self._manager is not None:
                return self._manager
            from npu_platform.memory.manager import MemoryManager

            driver = self._driver
            if driver is None:
                from npu_platform.memory.drivers import default_driver_name, load_driver

                driver = load_driver(default_driver_name())
            manager = MemoryManager(driver, retain_cpu_backup=_env_flag("TMS_RETAIN_CPU_BACKUP"))
            for name in ("TMS_INIT_ENABLE", "TMS_INIT_ENABLE_CPU_BACKUP", "TMS_DISK_BACKUP_DIR"):
                if os.environ.get(name):
                    logger.warning(
                        "%s is set but ignored: npu_platform's torch_memory_saver has no "
                        "preload mode (TMS_INIT_*) and no disk backup",
                        name,
                    )
            if self._route is None:
                from npu_platform.memory.torch_route import default_route

                self._route = default_route(manager)
            self._driver = driver
            self._manager = manager
            return manager

    def set_allocator_route(self, route: AllocatorRoute) -> None:
        """Install how torch allocations reach the manager (npu_platform extension)."""
        self._route = route

    @property
    def driver(self) -> Driver:
        return self.manager.driver

    def _current_device(self) -> int:
        name = self.manager.driver.name
        try:
            if name == "acl":
                from npu_platform import device

                return device.current_device()
            if name == "cuda":
                import torch

                return int(torch.cuda.current_device())
        except Exception:  # no device context yet: device 0, like torch would pick
            return 0
        return 0

    # ------------------------------------------------------------------ regions

    @contextlib.contextmanager
    def region(
        self,
        tag: str = DEFAULT_TAG,
        enable_cpu_backup: bool = False,
        enable_disk_backup: bool = False,
        cpu_backup_backend: str | None = None,
    ) -> Iterator[None]:
        """Allocations made on this thread inside can be paused; regions nest."""
        _check_backup_options(enable_cpu_backup, enable_disk_backup, cpu_backup_backend)
        manager = self.manager
        route = self._route
        assert route is not None
        key = PoolKey(tag, bool(enable_cpu_backup), self._current_device())
        with route.region(key), manager.region(tag, enable_cpu_backup):
            yield

    @contextlib.contextmanager
    def cuda_graph(
        self,
        cuda_graph: Any,
        pool: Any = None,
        stream: Any = None,
        capture_error_mode: str = "global",
        tag: str = DEFAULT_TAG,
        enable_cpu_backup: bool = False,
        auto_dispatch_capture: bool = False,
        cpu_backup_backend: str | None = None,
    ) -> Iterator[None]:
        """Graph capture whose memory is tagged (and pausable).

        Ascend: ``torch.npu.graph(cuda_graph, pool=, stream=, auto_dispatch_capture=,
        capture_error_mode=)``; CUDA: ``torch.cuda.graph(cuda_graph, pool=, stream=,
        capture_error_mode=)``; the host driver: no capture (the body runs), tagged region.
        """
        _check_backup_options(enable_cpu_backup, False, cpu_backup_backend)
        manager = self.manager
        route = self._route
        assert route is not None
        key = PoolKey(tag, bool(enable_cpu_backup), self._current_device())
        # The capture allocates from the tag's pool, even when the caller names a pool of
        # its own (sglang's NPU graph runner passes graph_pool_handle()): torch_npu's
        # caching allocator serves a capture from the first matching pool registered, so a
        # caller's pool would take the graph's memory away from the manager. Graphs of one
        # tag still share memory, through that tag's pool.
        tag_pool = route.graph_pool(key)
        if tag_pool is not None:
            if pool is not None and pool != tag_pool:
                logger.debug("cuda_graph(tag=%r): capturing into the tag's pool", tag)
            pool = tag_pool
        name = manager.driver.name
        if name == "acl":
            from npu_platform import device

            capture = device.graph(
                cuda_graph,
                pool=pool,
                stream=stream,
                auto_dispatch_capture=auto_dispatch_capture,
                capture_error_mode=capture_error_mode,
            )
        elif name == "cuda":
            import torch

            capture = torch.cuda.graph(
                cuda_graph, pool=pool, stream=stream, capture_error_mode=capture_error_mode
            )
        else:
            capture = contextlib.nullcontext()
        with capture, route.region(key), manager.region(tag, enable_cpu_backup):
            yield

    @contextlib.contextmanager
    def disable(self) -> Iterator[None]:
        """Inside a region: allocations on this thread go to ordinary memory."""
        manager = self.manager
        route = self._route
        assert route is not None
        with route.ordinary(), manager.disable():
            yield

    # ------------------------------------------------------------------ pause / resume

    def pause(self, tag: str | None = None) -> None:
        """Release the memory of ``tag``'s allocations (every tag for None)."""
        self.manager.pause(tag)

    def resume(self, tag: str | None = None) -> None:
        """Give ``tag``'s allocations memory again at the same addresses (None: all)."""
        self.manager.resume(tag)

    # ------------------------------------------------------------------ settings

    @property
    def enabled(self) -> bool:
        return True

    @property
    def hook_mode(self) -> str:
        return self._hook_mode

    @hook_mode.setter
    def hook_mode(self, mode: str) -> None:
        if mode not in _HOOK_MODES:
            raise ValueError(f"hook_mode must be 'torch' or 'preload', got {mode!r}")
        if mode == "preload":
            raise NotSupported(_preload_explanation(self._driver_name_hint()))
        self._hook_mode = mode

    def _driver_name_hint(self) -> str:
        if self._manager is not None:
            return self._manager.driver.name
        if self._driver is not None:
            return self._driver.name
        from npu_platform.memory.drivers import default_driver_name

        try:
            return default_driver_name()
        except Exception:
            return "unknown"

    @property
    def memory_margin_bytes(self) -> int:
        return self.manager.memory_margin_bytes

    @memory_margin_bytes.setter
    def memory_margin_bytes(self, value: int) -> None:
        self.manager.memory_margin_bytes = value

    @property
    def retain_cpu_backup(self) -> bool:
        return self.manager.retain_cpu_backup

    @retain_cpu_backup.setter
    def retain_cpu_backup(self, value: bool) -> None:
        self.manager.retain_cpu_backup = value

    def get_cpu_backup(self, x: torch.Tensor, zero_copy: bool = False) -> torch.Tensor | None:
        """The CPU backup of ``x`` (same dtype and shape), or None if it has none.

        While ``x`` is paused this is its data; while active it is the retained snapshot of
        the last pause (``retain_cpu_backup``) or None.
        """
        return self.manager.get_cpu_backup(x, zero_copy=zero_copy)

    def set_disk_backup_dir(self, path: str) -> None:
        raise NotSupported(
            "disk backup is not implemented by npu_platform's torch_memory_saver; use "
            "region(..., enable_cpu_backup=True) to keep paused data in host memory"
        )

    # ------------------------------------------------------------------ extensions

    def empty(self, shape: int | tuple[int, ...], dtype: torch.dtype | None = None) -> torch.Tensor:
        """npu_platform extension: a tensor in manager memory, tagged by the current region.

        Needs a driver whose memory the CPU can address (the host driver).
        """
        from npu_platform.memory import tensors

        manager = self.manager
        if manager.driver.name != "host":
            raise NotSupported(
                "TorchMemorySaver.empty() makes CPU tensors over manager memory and only "
                "works with the host driver; on a device allocate tensors inside region()"
            )
        # The tag and backup setting of the current region apply (disable() keeps them).
        with manager.disable():
            return tensors.empty(manager, shape, dtype, device=self._current_device())


def _check_backup_options(
    enable_cpu_backup: bool, enable_disk_backup: bool, cpu_backup_backend: str | None
) -> None:
    if enable_disk_backup:
        raise NotSupported(
            "enable_disk_backup=True is not implemented by npu_platform's torch_memory_saver; "
            "use enable_cpu_backup=True to keep paused data in host memory"
        )
    if cpu_backup_backend is not None:
        if not enable_cpu_backup:
            raise ValueError("cpu_backup_backend requires enable_cpu_backup=True")
        if cpu_backup_backend not in _BACKUP_BACKENDS:
            raise ValueError(
                f"cpu_backup_backend must be one of {_BACKUP_BACKENDS}, got {cpu_backup_backend!r}"
            )


def _preload_explanation(driver_name: str) -> str:
    if driver_name == "acl":
        return (
            "hook_mode='preload' cannot work on Ascend NPUs: torch_npu resolves its device "
            "allocator (aclrtMallocAlign32) through dlsym, so an LD_PRELOAD library never sees "
            "the calls. Use hook_mode='torch' (the default), which routes allocations through "
            "torch_npu's pluggable allocator."
        )
    if driver_name == "host":
        return (
            "hook_mode='preload' has nothing to intercept with the host driver (there is no "
            "device allocator library to preload); use hook_mode='torch' (the default)"
        )
    return (
        "npu_platform's torch_memory_saver implements only hook_mode='torch' (the default); "
        "for LD_PRELOAD interception use the upstream torch_memory_saver package"
    )


@contextlib.contextmanager
def configure_subprocess() -> Iterator[None]:
    """Compatibility no-op: hook_mode='torch' needs no environment in child processes."""
    yield


torch_memory_saver = TorchMemorySaver()
