"""Emulated NPU: route CPU tensor allocations made inside regions to the memory manager.

On the emulated NPU "device" tensors are CPU tensors, so for ``torch.empty(...)`` inside a
``torch_memory_saver`` region to be pausable, c10's CPU allocator itself must send them to
the manager. :file:`cpu_hook.cpp` does that: a wrapper around the CPU allocator that was
installed before it, which

* on a thread whose region state says "intercepting" calls back into Python
  (:func:`_on_alloc` -> :meth:`MemoryManager.malloc`) and gives the tensor a deleter that
  calls :func:`_on_free` (-> :meth:`MemoryManager.free`) whenever and wherever the storage
  dies, also after the region has closed;
* delegates every other allocation, untouched, to the previous allocator.

The C++ file is compiled on first use with ``g++`` (``$CXX`` if set) against the installed
torch's c10 headers, with torch's C++ ABI setting, and cached under
``$XDG_CACHE_HOME/npu_platform`` (default ``~/.cache/npu_platform``) keyed by the torch
version and a hash of the source and flags; compiling takes a second or two, once per
machine and torch version. The library is loaded with ctypes.

Each manager that uses the hook registers a region listener (:func:`attach`): whenever a
thread's region state changes, the listener records which manager (if any) intercepts on that
thread and mirrors the yes/no into the hook's C++ thread-local flag, so allocations outside
regions never enter Python. Other threads are unaffected: the flag is per thread.

Limits: every allocation is rounded up to the manager's granularity (2 MiB with the default
host driver), and each live allocation holds one memfd, so regions suit large tensors
(weights, KV caches) rather than many tiny ones. Only memory that comes from c10's CPU
allocator is captured (not ``pin_memory=True`` tensors, ``torch.from_numpy`` or
``torch.frombuffer``). Touching a paused tensor faults, as an illegal device access would.
"""

from __future__ import annotations

import atexit
import ctypes
import hashlib
import logging
import os
import re
import shlex
import shutil
import subprocess
import tempfile
import threading
import time
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from npu_platform.errors import EnvironmentProblem

if TYPE_CHECKING:
    from npu_platform.memory.manager import MemoryManager
    from npu_platform.memory.regions import RegionSettings

__all__ = ["CpuHook", "attach", "build", "cache_dir", "device_scope", "load"]

logger = logging.getLogger("npu_platform.memory")

SOURCE = Path(__file__).with_name("cpu_hook.cpp")
# c10 keeps the CPU allocator with the highest priority set so far (ties: the later one);
# torch's own default is registered with 0. A higher number keeps later default-priority
# registrations from silently bypassing the hook.
PRIORITY = 100
_STD = "-std=c++20"  # what torch 2.13's own extension builder uses

_ALLOC_CB = ctypes.CFUNCTYPE(ctypes.c_size_t, ctypes.c_size_t)
_FREE_CB = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_size_t)


class CompilerMissing(EnvironmentProblem):
    """No C++ compiler to build the CPU allocator hook with."""


class HookBuildError(EnvironmentProblem):
    """The CPU allocator hook did not compile or load."""


# --------------------------------------------------------------------------- building


def cache_dir() -> Path:
    """Where compiled hooks are kept: ``$XDG_CACHE_HOME/npu_platform`` or ``~/.cache/...``."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "npu_platform"


def _compiler() -> list[str]:
    cxx = os.environ.get("CXX", "").strip()
    if cxx:
        command = shlex.split(cxx)
        if shutil.which(command[0]):
            return command
        raise CompilerMissing(
            f"CXX is set to {cxx!r}, but {command[0]!r} is not an executable on PATH. The "
            "emulated NPU compiles a small C++ CPU-allocator hook on first use of "
            "torch_memory_saver.region(); point CXX at g++ or unset it."
        )
    for name in ("g++", "c++"):
        path = shutil.which(name)
        if path:
            return [path]
    raise CompilerMissing(
        "the emulated NPU needs a C++ compiler (g++) to build its CPU-allocator hook, which "
        "sends torch.empty() inside torch_memory_saver.region() to the memory manager, and "
        "neither g++ nor c++ is on PATH. Install g++ (Debian/Ubuntu: apt-get install g++) "
        "or set CXX to a C++ compiler. Without it, use TorchMemorySaver.empty() for "
        "pausable tensors in emulation."
    )


def _torch_build_facts() -> tuple[str, Path, Path, int]:
    import torch

    root = Path(torch.__file__).resolve().parent
    abi = int(bool(getattr(torch._C, "_GLIBCXX_USE_CXX11_ABI", True)))
    return torch.__version__, root / "include", root / "lib", abi


def _command(compiler: list[str], out: Path, include: Path, lib: Path, abi: int) -> list[str]:
    return [
        *compiler,
        "-O2",
        "-shared",
        "-fPIC",
        _STD,
        "-fvisibility=hidden",
        f"-D_GLIBCXX_USE_CXX11_ABI={abi}",
        "-isystem",
        str(include),
        "-o",
        str(out),
        str(SOURCE),
        f"-L{lib}",
        "-lc10",
        f"-Wl,-rpath,{lib}",
    ]


_build_lock = threading.Lock()
last_build_seconds: float | None = None  # for diagnostics: how long the last compile took


def build() -> Path:
    """The compiled hook for this torch: from the cache, or compiled now."""
    global last_build_seconds
    version, include, lib, abi = _torch_build_facts()
    source = SOURCE.read_bytes()
    key = hashlib.sha256()
    key.update(source)
    key.update(f"\0{version}\0{abi}\0{_STD}\0{PRIORITY}".encode())
    safe_version = re.sub(r"[^A-Za-z0-9.]+", "_", version)
    name = f"cpu_hook-torch{safe_version}-{key.hexdigest()[:16]}.so"
    with _build_lock:
        for folder in _cache_candidates():
            cached = folder / name
            if cached.is_file():
                return cached
        compiler = _compiler()
        folder = _writable_cache()
        target = folder / name
        fd, tmp_name = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=folder)
        os.close(fd)
        tmp = Path(tmp_name)
        command = _command(compiler, tmp, include, lib, abi)
        started = time.perf_counter()
        try:
            proc = subprocess.run(command, capture_output=True, text=True, check=False)
            if proc.returncode != 0:
                output = (proc.stderr or proc.stdout).strip()
                raise HookBuildError(
                    "compiling the emulated NPU's CPU-allocator hook failed (exit status "
                    f"{proc.returncode}).\ncommand: {shlex.join(command)}\n"
                    f"{output[-4000:]}\nIt needs a C++20 compiler and torch's C++ headers "
                    f"({include})."
                )
            os.replace(tmp, target)  # atomic: concurrent builders race harmlessly
        finally:
            tmp.unlink(missing_ok=True)
        last_build_seconds = time.perf_counter() - started
        logger.info("compiled the CPU allocator hook in %.1f s: %s", last_build_seconds, target)
        return target


def _cache_candidates() -> list[Path]:
    return [cache_dir(), _fallback_cache()]


def _fallback_cache() -> Path:
    return Path(tempfile.gettempdir()) / f"npu_platform-{os.getuid()}"


def _writable_cache() -> Path:
    for folder in _cache_candidates():
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError:
            continue
        if os.access(folder, os.W_OK):
            return folder
    raise HookBuildError(
        f"no writable folder for the compiled CPU allocator hook (tried {cache_dir()} and "
        f"{_fallback_cache()}); set XDG_CACHE_HOME to a writable folder"
    )


# --------------------------------------------------------------------------- dispatch

# Thread state mirrored from the managers' regions: the managers intercepting on this
# thread (innermost last) and the device of the innermost facade region.
_local = threading.local()
# address -> manager, for every hook allocation still held by a torch storage
_owners: dict[int, MemoryManager] = {}
_owners_lock = threading.Lock()


def _active() -> list[MemoryManager]:
    active = getattr(_local, "active", None)
    if active is None:
        active = _local.active = []
    return active


def _devices() -> list[int]:
    devices = getattr(_local, "devices", None)
    if devices is None:
        devices = _local.devices = []
    return devices


@contextmanager
def device_scope(device: int) -> Iterator[None]:
    """Allocations captured on this thread inside get ``device`` (default 0)."""
    devices = _devices()
    devices.append(int(device))
    depth = len(devices)
    try:
        yield
    finally:
        del devices[depth - 1 :]


def _on_alloc(size: int) -> int:
    hook = _hook
    try:
        active = _active()
        if not active:  # the C++ flag and our state disagree: refuse rather than guess
            raise RuntimeError("no memory manager is intercepting on this thread")
        manager = active[-1]
        devices = _devices()
        address = manager.malloc(size, devices[-1] if devices else 0)
        with _owners_lock:
            _owners[address] = manager
        return address
    except BaseException as exc:  # never let an exception cross into C++
        if hook is not None:
            hook.set_error(f"{type(exc).__name__}: {exc}")
        return 0


def _on_free(address: int) -> int:
    with _owners_lock:
        manager = _owners.pop(address, None)
    if manager is None:
        logger.error("CPU allocator hook: free of 0x%x, which no manager handed out", address)
        return 1
    try:
        manager.free(address)
    except BaseException as exc:  # runs from a tensor deleter: report, never raise
        logger.error("freeing 0x%x when its tensor died failed: %s", address, exc)
        return 1
    return 0


# --------------------------------------------------------------------------- the library


class CpuHook:
    """The loaded hook library (one per process; see :func:`load`)."""

    def __init__(self, path: Path) -> None:
        import torch  # noqa: F401  (libc10 must be loaded first)

        self.path = path
        lib = ctypes.CDLL(str(path))
        lib.npu_platform_cpu_hook_install.argtypes = [ctypes.c_int]
        lib.npu_platform_cpu_hook_install.restype = ctypes.c_int
        lib.npu_platform_cpu_hook_installed.argtypes = []
        lib.npu_platform_cpu_hook_installed.restype = ctypes.c_int
        lib.npu_platform_cpu_hook_set_callbacks.argtypes = [_ALLOC_CB, _FREE_CB]
        lib.npu_platform_cpu_hook_set_callbacks.restype = None
        lib.npu_platform_cpu_hook_set_intercepting.argtypes = [ctypes.c_int]
        lib.npu_platform_cpu_hook_set_intercepting.restype = None
        lib.npu_platform_cpu_hook_intercepting.argtypes = []
        lib.npu_platform_cpu_hook_intercepting.restype = ctypes.c_int
        lib.npu_platform_cpu_hook_set_error.argtypes = [ctypes.c_char_p]
        lib.npu_platform_cpu_hook_set_error.restype = None
        lib.npu_platform_cpu_hook_live.argtypes = []
        lib.npu_platform_cpu_hook_live.restype = ctypes.c_int64
        lib.npu_platform_cpu_hook_leaked.argtypes = []
        lib.npu_platform_cpu_hook_leaked.restype = ctypes.c_int64
        self._lib = lib
        # Kept alive for the life of the process: C++ holds their addresses.
        self._alloc_cb = _ALLOC_CB(_on_alloc)
        self._free_cb = _FREE_CB(_on_free)
        lib.npu_platform_cpu_hook_set_callbacks(self._alloc_cb, self._free_cb)
        if lib.npu_platform_cpu_hook_install(PRIORITY) != 0:
            lib.npu_platform_cpu_hook_set_callbacks(_ALLOC_CB(), _FREE_CB())
            raise HookBuildError(
                "could not install the emulated NPU's CPU allocator hook: another CPU "
                f"allocator was registered with c10 at a priority above {PRIORITY}, so "
                "c10::SetCPUAllocator kept it"
            )
        atexit.register(self._detach)

    def _detach(self) -> None:
        """At exit: storages freed from now on leave their memory to the OS."""
        self._lib.npu_platform_cpu_hook_set_callbacks(_ALLOC_CB(), _FREE_CB())

    @property
    def installed(self) -> bool:
        """Is the hook c10's current CPU allocator?"""
        return bool(self._lib.npu_platform_cpu_hook_installed())

    def set_intercepting(self, on: bool) -> None:
        self._lib.npu_platform_cpu_hook_set_intercepting(1 if on else 0)

    def intercepting(self) -> bool:
        """This thread's C++ flag."""
        return bool(self._lib.npu_platform_cpu_hook_intercepting())

    def set_error(self, message: str) -> None:
        self._lib.npu_platform_cpu_hook_set_error(message.encode("utf-8", "replace"))

    def live(self) -> int:
        """Manager allocations currently held by torch storages (all managers)."""
        return int(self._lib.npu_platform_cpu_hook_live())

    def leaked(self) -> int:
        """Frees that did not reach a manager (after exit began, or failed)."""
        return int(self._lib.npu_platform_cpu_hook_leaked())


_hook: CpuHook | None = None
_load_lock = threading.Lock()


def load() -> CpuHook:
    """Build (or find) the hook, load it and install it as c10's CPU allocator; once."""
    global _hook
    hook = _hook
    if hook is not None:
        return hook
    with _load_lock:
        if _hook is None:
            _hook = CpuHook(build())
        return _hook


def _set_thread_state(manager: MemoryManager, intercepting: bool, hook: CpuHook) -> None:
    active = _active()
    if manager in active:
        active.remove(manager)
    if intercepting:
        active.append(manager)
    hook.set_intercepting(bool(active))


_attached: weakref.WeakSet[MemoryManager] = weakref.WeakSet()
_attach_lock = threading.Lock()


def attach(manager: MemoryManager) -> CpuHook:
    """Load the hook and mirror ``manager``'s region state into it (once per manager).

    Raises :class:`CompilerMissing` / :class:`HookBuildError` when the hook cannot be built.
    """
    hook = load()
    with _attach_lock:
        if manager in _attached:
            return hook

        def listener(settings: RegionSettings) -> None:
            _set_thread_state(manager, settings.intercepting, hook)

        manager.add_region_listener(listener)
        _attached.add(manager)
    # A region of this manager may already be open on this thread.
    _set_thread_state(manager, manager.intercepting(), hook)
    return hook
