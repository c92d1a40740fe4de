"""Allocator routes: how torch allocations made inside a region reach the memory manager.

:func:`default_route` picks one per driver for :class:`npu_platform.torch_memory_saver`:

* ``acl`` (Ascend) and ``cuda``: :class:`PoolRoute`. One torch ``MemPool`` per
  (tag, backup, device) key, created over a *pluggable allocator* whose two C entry points
  live in the package's C shim (``_alloc_shim.so``, built by ``pip install``) and forward
  to :meth:`MemoryManager.malloc` / :meth:`MemoryManager.free`; a region activates its
  key's pool on this thread with ``use_mem_pool``. ``disable()`` activates a pool over
  torch's ordinary device allocator instead. Ascend goes through :mod:`npu_platform.device`
  (``torch_npu.npu.memory.NPUPluggableAllocator``, ``torch.npu.MemPool``,
  ``torch.npu.use_mem_pool``); CUDA through ``torch.cuda.memory``.
* ``host``: no torch route (host-driver memory is reached through
  :meth:`TorchMemorySaver.empty`); regions only set the manager's thread state.

The shim's callbacks run on the allocating thread, so the manager's thread-local region
settings (tag, backup) apply to the memory they create. Freed blocks stay cached in their
pool (one pool per key, so never shared across keys) until torch empties the cache.

Nested regions on a device nest ``use_mem_pool`` contexts: which pool then serves an
allocation is the caching allocator's choice, which can differ between torch versions.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import logging
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from npu_platform.memory.errors import NotSupported
from npu_platform.memory.table import PoolKey

if TYPE_CHECKING:
    from npu_platform.memory.manager import MemoryManager

__all__ = [
    "ALLOC_FN",
    "FREE_FN",
    "AllocShim",
    "PoolRoute",
    "default_route",
    "shim_path",
]

logger = logging.getLogger("npu_platform.memory")

ALLOC_FN = "npu_platform_alloc"
FREE_FN = "npu_platform_free"

# void* (size_t size, int device, void* stream) / void (void* ptr, size_t, int, void*)
_ALLOC_CB = ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_void_p)
_FREE_CB = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_void_p)


def default_route(manager: MemoryManager) -> Any:
    """The route for ``manager``'s driver (see the module docstring)."""
    name = manager.driver.name
    if name in ("acl", "cuda"):
        return PoolRoute(manager, "npu" if name == "acl" else "cuda")
    from npu_platform.torch_memory_saver import ThreadStateRoute

    return ThreadStateRoute()


# --------------------------------------------------------------------------- the C shim


def shim_path() -> Path:
    """Where ``pip install`` puts the compiled shim (inside ``npu_platform/memory``)."""
    return Path(__file__).with_name("_alloc_shim.so")


class AllocShim:
    """The C shim loaded with ctypes, its callbacks forwarding to one manager.

    The shim keeps one pair of callbacks per process; :meth:`connect` installs ours. torch
    loads the same file (``NPUPluggableAllocator(path, ...)``), and ``dlopen`` gives both
    the same copy of the library, so its calls reach these callbacks.
    """

    _instance: AllocShim | None = None
    _instance_lock = threading.Lock()

    def __init__(self, path: Path | None = None) -> None:
        path = shim_path() if path is None else path
        if not path.is_file():
            raise NotSupported(
                f"the allocator shim {path} is missing: it is compiled by `pip install` of "
                "npu-platform, which needs a C compiler (cc/gcc) at install time. Install "
                "one and reinstall npu-platform (pip install --force-reinstall --no-deps ...)."
            )
        self.path = path
        lib = ctypes.CDLL(str(path))
        lib.npu_platform_set_callbacks.argtypes = [_ALLOC_CB, _FREE_CB]
        lib.npu_platform_set_callbacks.restype = None
        lib.npu_platform_has_callbacks.argtypes = []
        lib.npu_platform_has_callbacks.restype = ctypes.c_int
        lib.npu_platform_alloc.argtypes = [ctypes.c_size_t, ctypes.c_int, ctypes.c_void_p]
        lib.npu_platform_alloc.restype = ctypes.c_void_p
        lib.npu_platform_free.argtypes = [
            ctypes.c_void_p,
            ctypes.c_size_t,
            ctypes.c_int,
            ctypes.c_void_p,
        ]
        lib.npu_platform_free.restype = None
        self.lib = lib
        self.manager: MemoryManager | None = None
        # address -> manager for everything handed out and not yet freed
        self._owners: dict[int, MemoryManager] = {}
        self._owners_lock = threading.Lock()
        # Per thread: the managers of the regions open on it (innermost last). The callbacks
        # run on the allocating thread, so each facade's regions get its own manager.
        self._serving = threading.local()
        # Kept alive as long as the shim may call them.
        self._alloc_cb = _ALLOC_CB(self._on_alloc)
        self._free_cb = _FREE_CB(self._on_free)
        # Tensors still alive when the interpreter shuts down are freed after Python's
        # modules are torn down, when a callback into Python can no longer run: from then on
        # the shim drops frees (the process's memory goes back to the system as it exits).
        atexit.register(self.disconnect)

    @classmethod
    def shared(cls) -> AllocShim:
        """The process-wide instance over :func:`shim_path`."""
        with cls._instance_lock:
            if cls._instance is None:
                cls._instance = cls()
            return cls._instance

    def connect(self, manager: MemoryManager) -> None:
        """Send the shim's allocations to ``manager``; frees go to whoever handed out."""
        previous, self.manager = self.manager, manager
        if previous is not None and previous is not manager:
            logger.warning(
                "the allocator shim now allocates from %r instead of %r", manager, previous
            )
        self.lib.npu_platform_set_callbacks(self._alloc_cb, self._free_cb)

    @contextlib.contextmanager
    def serving(self, manager: MemoryManager) -> Iterator[None]:
        """While open, this thread's shim allocations come from ``manager``."""
        stack = self._serving.__dict__.setdefault("stack", [])
        stack.append(manager)
        try:
            yield
        finally:
            stack.pop()

    def disconnect(self) -> None:
        """No callbacks: the shim's allocations fail (NULL) and its frees do nothing."""
        self.lib.npu_platform_set_callbacks(_ALLOC_CB(), _FREE_CB())
        self.manager = None

    @property
    def connected(self) -> bool:
        return bool(self.lib.npu_platform_has_callbacks())

    def _on_alloc(self, size: int, device: int, stream: int | None) -> int | None:
        stack = getattr(self._serving, "stack", None)
        manager = stack[-1] if stack else self.manager
        if manager is None:
            return None
        try:
            address = manager.malloc(size, device)
        except BaseException as exc:  # NULL makes torch raise its out-of-memory error
            logger.error("allocator shim: malloc(%d, device %d) failed: %s", size, device, exc)
            return None
        with self._owners_lock:
            self._owners[address] = manager
        return address

    def _on_free(self, ptr: int | None, size: int, device: int, stream: int | None) -> None:
        if not ptr:
            return
        with self._owners_lock:
            manager = self._owners.pop(ptr, None)
        if manager is None:
            logger.error("allocator shim: free of 0x%x, which it did not hand out", ptr)
            return
        try:
            manager.free(ptr)
        except BaseException as exc:  # called from torch: report, never raise
            logger.error("allocator shim: free(0x%x) failed: %s", ptr, exc)

    # What torch calls, for tests and diagnostics.
    def alloc(self, size: int, device: int = 0, stream: int | None = None) -> int:
        """``npu_platform_alloc(size, device, stream)``: the address, 0 for NULL."""
        return int(self.lib.npu_platform_alloc(size, device, stream) or 0)

    def free(self, ptr: int, size: int, device: int = 0, stream: int | None = None) -> None:
        """``npu_platform_free(ptr, size, device, stream)``."""
        self.lib.npu_platform_free(ptr, size, device, stream)


# --------------------------------------------------------------------------- devices


class PoolRoute:
    """A device: one ``MemPool`` per key over the pluggable allocator (set up lazily)."""

    def __init__(self, manager: MemoryManager, kind: str) -> None:
        if kind not in ("npu", "cuda"):
            raise ValueError(f"kind must be 'npu' or 'cuda', got {kind!r}")
        self.manager = manager
        self.kind = kind
        self._lock = threading.Lock()
        self._allocator: Any = None
        self._pools: dict[PoolKey, Any] = {}
        self._ordinary: dict[int, Any] = {}

    # The three torch calls, per device kind.
    def _pluggable(self, path: str) -> Any:
        if self.kind == "npu":
            from npu_platform import device

            return device.pluggable_allocator(path, ALLOC_FN, FREE_FN).allocator()
        import torch

        return torch.cuda.memory.CUDAPluggableAllocator(path, ALLOC_FN, FREE_FN).allocator()

    def _new_pool(self, allocator: Any) -> Any:
        if self.kind == "npu":
            from npu_platform import device

            return device.mem_pool(allocator)
        import torch

        return torch.cuda.MemPool(allocator=allocator)

    def _use(self, pool: Any, index: int) -> contextlib.AbstractContextManager[Any]:
        if self.kind == "npu":
            from npu_platform import device

            return device.use_mem_pool(pool, index)
        import torch

        return torch.cuda.use_mem_pool(pool, index)

    def _setup(self) -> Any:
        if self._allocator is None:
            try:
                shim = AllocShim.shared()
                allocator = self._pluggable(str(shim.path))
                shim.connect(self.manager)
                self._allocator = allocator
            except NotSupported:
                raise
            except Exception as exc:
                raise self._unsupported(exc) from exc
        return self._allocator

    def _unsupported(self, exc: Exception) -> NotSupported:
        return NotSupported(
            f"torch_memory_saver.region() on {self.kind.upper()} needs an allocator route "
            "through torch's pluggable allocator and memory pools, and setting it up failed: "
            f"{type(exc).__name__}: {exc}"
        )

    def pool(self, key: PoolKey) -> Any:
        """The pool of ``key`` (created on first use)."""
        with self._lock:
            pool = self._pools.get(key)
            if pool is None:
                allocator = self._setup()
                try:
                    pool = self._new_pool(allocator)
                except Exception as exc:
                    # e.g. a CUDA build of torch on a machine without a driver: the allocator
                    # loads, the pool raises "Found no NVIDIA driver".
                    raise self._unsupported(exc) from exc
                self._pools[key] = pool
            return pool

    @contextlib.contextmanager
    def region(self, key: PoolKey) -> Iterator[None]:
        pool = self.pool(key)
        with AllocShim.shared().serving(self.manager), self._use(pool, key.device):
            yield

    def ordinary(self) -> contextlib.AbstractContextManager[Any]:
        index = self._device_index()
        with self._lock:
            pool = self._ordinary.get(index)
            if pool is None:
                pool = self._ordinary[index] = self._new_pool(None)
        return self._use(pool, index)

    def graph_pool(self, key: PoolKey) -> object | None:
        return self.pool(key).id

    def _device_index(self) -> int:
        if self.kind == "npu":
            from npu_platform import device

            return device.current_device()
        import torch

        return int(torch.cuda.current_device())
