"""Build and load the native emulated ``npu`` device (:file:`csrc/npu_device.cpp`).

The C++ extension is compiled once per machine against the *installed* torch's headers and
libraries, with a direct compiler call (``$CXX``, else ``g++`` or ``c++``), and cached as
``npu_device-torch<version>-py<version>-<hash>.so`` under ``$XDG_CACHE_HOME/npu_platform``
(default ``~/.cache/npu_platform``), or under ``<tmp>/npu_platform-<uid>`` when that is not
writable. The hash covers the source, the torch and Python versions, torch's C++ ABI and
the compiler flags, so a changed source or an upgraded torch builds anew. Builds from
several processes at once are serialised with an ``fcntl`` lock next to the cache entry;
each compiles into a temporary name and renames it into place, so a reader never sees a
half-written library.

:func:`load` returns the loaded module (once per process, thread-safe); its functions are
described in :mod:`npu_platform.emulation`. :func:`install_device` is what the emulated
``torch_npu`` calls: rename PrivateUse1 to ``npu``, load, ``init`` and generate torch's
``npu`` convenience methods, all idempotent. Registering the ``torch.npu`` module is left
to the caller; torch needs it before any ``device="npu"`` factory call or
``torch.accelerator`` call (torch imports ``torch.npu`` to lazily initialise the device).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.util
import logging
import os
import re
import shlex
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

from npu_platform.errors import EnvironmentProblem

__all__ = [
    "CompilerMissing",
    "NativeBuildError",
    "build",
    "cache_dir",
    "install_device",
    "load",
]

logger = logging.getLogger("npu_platform.emulation")

SOURCE = Path(__file__).with_name("csrc") / "npu_device.cpp"
MODULE_NAME = "_npu_device"  # the extension's PyInit_ name
BACKEND_NAME = "npu"
# -O1: the kernels are torch's, this file is glue; higher levels only lengthen the build.
FLAGS = ("-O1", "-std=c++20", "-fPIC", "-shared", "-fvisibility=hidden")

last_build_seconds: float | None = None  # how long this process's last compile took


class NativeBuildError(EnvironmentProblem):
    """The native emulated npu device did not compile or load."""


class CompilerMissing(NativeBuildError):
    """No C++ compiler to build the native emulated npu device with."""


# --------------------------------------------------------------------------- building


def cache_dir() -> Path:
    """The preferred cache folder: ``$XDG_CACHE_HOME/npu_platform`` or ``~/.cache/...``."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "npu_platform"


def _fallback_dir() -> Path:
    return Path(tempfile.gettempdir()) / f"npu_platform-{os.getuid()}"


def _compiler() -> list[str]:
    cxx = os.environ.get("CXX", "").strip()
    if cxx:
        command = shlex.split(cxx)
        if shutil.which(command[0]):
            return command
        raise CompilerMissing(
            f"CXX is set to {cxx!r}, but {command[0]!r} is not an executable on PATH. The "
            "emulated NPU compiles its native npu device on first use; point CXX at g++ or "
            "unset it."
        )
    for name in ("g++", "c++"):
        path = shutil.which(name)
        if path:
            return [path]
    raise CompilerMissing(
        "the emulated NPU compiles its native npu device (a C++ torch extension) on first "
        "use, and neither g++ nor c++ is on PATH. Install g++ (Debian/Ubuntu: apt-get "
        "install g++) or set CXX to a C++20 compiler."
    )


def _torch_facts() -> tuple[str, Path, int]:
    import torch

    root = Path(torch.__file__).resolve().parent
    abi = int(bool(getattr(torch._C, "_GLIBCXX_USE_CXX11_ABI", True)))
    return torch.__version__, root, abi


def _python_include() -> Path:
    include = Path(sysconfig.get_paths()["include"])
    if not (include / "Python.h").is_file():
        raise NativeBuildError(
            f"Python's C headers are missing ({include / 'Python.h'}); the native emulated "
            "npu device needs them to compile. Install the Python development package "
            f"(Debian/Ubuntu: apt-get install python{sys.version_info[0]}."
            f"{sys.version_info[1]}-dev)."
        )
    return include


def _command(compiler: list[str], out: Path, torch_root: Path, abi: int) -> list[str]:
    include, lib = torch_root / "include", torch_root / "lib"
    return [
        *compiler,
        *FLAGS,
        f"-D_GLIBCXX_USE_CXX11_ABI={abi}",
        f"-DTORCH_EXTENSION_NAME={MODULE_NAME}",
        "-isystem",
        str(include),
        "-isystem",
        str(include / "torch" / "csrc" / "api" / "include"),
        "-isystem",
        str(_python_include()),
        "-o",
        str(out),
        str(SOURCE),
        f"-L{lib}",
        "-lc10",
        "-ltorch_cpu",
        "-ltorch",
        "-ltorch_python",
        f"-Wl,-rpath,{lib}",
    ]


def _library_name(torch_version: str, abi: int) -> str:
    key = hashlib.sha256(SOURCE.read_bytes())
    python = f"{sys.version_info[0]}.{sys.version_info[1]}"
    key.update(f"\0{torch_version}\0{python}\0{abi}\0{' '.join(FLAGS)}".encode())
    safe_torch = re.sub(r"[^A-Za-z0-9.]+", "_", torch_version)
    return f"npu_device-torch{safe_torch}-py{python}-{key.hexdigest()[:16]}.so"


def _writable_dir() -> Path:
    tried = []
    for folder in (cache_dir(), _fallback_dir()):
        tried.append(str(folder))
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError:
            continue
        if os.access(folder, os.W_OK | os.X_OK):
            return folder
    raise NativeBuildError(
        f"no writable folder for the compiled npu device (tried {', '.join(tried)}); set "
        "XDG_CACHE_HOME to a writable folder"
    )


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    with open(path, "a+b") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


_build_lock = threading.Lock()


def build() -> Path:
    """The compiled extension for the installed torch: from the cache, or compiled now."""
    global last_build_seconds
    version, torch_root, abi = _torch_facts()
    name = _library_name(version, abi)
    with _build_lock:
        for folder in (cache_dir(), _fallback_dir()):
            if (folder / name).is_file():
                return folder / name
        folder = _writable_dir()
        target = folder / name
        with _file_lock(folder / f".{name}.lock"):
            if target.is_file():  # another process built it while we waited
                return target
            command_head = _compiler()
            fd, tmp_name = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=folder)
            os.close(fd)
            tmp = Path(tmp_name)
            command = _command(command_head, tmp, torch_root, abi)
            logger.info(
                "compiling the emulated npu device (20-60 s, once per torch version): %s", target
            )
            started = time.perf_counter()
            try:
                proc = subprocess.run(command, capture_output=True, text=True, check=False)
                if proc.returncode != 0:
                    output = (proc.stderr or proc.stdout).strip()
                    raise NativeBuildError(
                        "compiling the emulated npu device failed (exit status "
                        f"{proc.returncode}).\ncommand: {shlex.join(command)}\n"
                        f"{output[-4000:]}\nIt needs a C++20 compiler and the installed "
                        f"torch's C++ headers ({torch_root / 'include'})."
                    )
                os.replace(tmp, target)
            finally:
                tmp.unlink(missing_ok=True)
            last_build_seconds = time.perf_counter() - started
            logger.info("compiled the emulated npu device in %.1f s", last_build_seconds)
            return target


# --------------------------------------------------------------------------- loading

_module: ModuleType | None = None
_load_lock = threading.Lock()


def load() -> ModuleType:
    """The native module, built if needed and loaded once per process."""
    global _module
    with _load_lock:
        if _module is None:
            import torch  # noqa: F401  (the extension needs torch's libraries and types loaded)

            path = build()
            qualified = f"{__package__}.{MODULE_NAME}"
            spec = importlib.util.spec_from_file_location(qualified, path)
            if spec is None or spec.loader is None:
                raise NativeBuildError(f"cannot load the compiled npu device {path}")
            module = importlib.util.module_from_spec(spec)
            try:
                spec.loader.exec_module(module)
            except ImportError as exc:
                raise NativeBuildError(
                    f"the compiled npu device {path} does not load ({exc}); delete it to rebuild"
                ) from exc
            sys.modules[qualified] = module
            _module = module
    return _module


_install_lock = threading.Lock()


def install_device(device_count: int, memory_per_device: int) -> ModuleType:
    """Make ``npu`` a working torch device with ``device_count`` devices of that much memory.

    Renames PrivateUse1 to ``npu`` (unless done), loads the native module, initialises it
    and generates torch's ``npu`` methods (``Tensor.npu()``, ``Tensor.is_npu``,
    ``Module.npu()``, storage methods), and loads the emulated ACL runtime
    (:mod:`npu_platform.emulation.acl`). Calling it again with the same values does nothing;
    other values raise, as the device table is fixed for the life of the process.
    """
    import torch

    with _install_lock:
        current = torch._C._get_privateuse1_backend_name()
        if current != BACKEND_NAME:
            if current != "privateuseone":
                raise EnvironmentProblem(
                    f"torch's PrivateUse1 backend is already renamed to {current!r} in this "
                    "process, so it cannot become the emulated 'npu' device; another device "
                    "plugin was loaded first"
                )
            torch.utils.rename_privateuse1_backend(BACKEND_NAME)
        module = load()
        module.init(device_count, memory_per_device)
        # The device's ACL runtime, loaded as torch_npu loads CANN's: the plugin's ACL memory
        # driver then finds it as libascendcl.so.
        from npu_platform.emulation import acl

        acl.load(device_count, memory_per_device)
        if not hasattr(torch.Tensor, f"is_{BACKEND_NAME}"):
            torch.utils.generate_methods_for_privateuse1_backend(for_storage=True)
        return module
