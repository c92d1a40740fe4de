"""The emulated ACL runtime: ``csrc/ascendcl.c`` built into a ``libascendcl.so`` and loaded.

On an Ascend machine torch_npu links CANN's ``libascendcl.so``, so by the time the plugin's
ACL memory driver asks the dynamic loader for ``libascendcl.so`` the library is in the
process. The emulated torch_npu does the same with this one: :func:`load` compiles it once
per machine (against the ACL headers of the torch_npu wheel, so every definition is checked
against the real prototype), caches it, and loads it with ``RTLD_GLOBAL`` under the soname
``libascendcl.so``; a later ``ctypes.CDLL("libascendcl.so")`` then gets this copy.

Its virtual-memory calls run on host memory (``memfd`` + ``mmap``) and enforce the documented
constraints (2 MB granularity, unmap before release, a per-device memory limit).
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

from npu_platform import torch_npu_data

SOURCE = Path(__file__).with_name("csrc") / "ascendcl.c"
SONAME = "libascendcl.so"
CFLAGS = ("-std=gnu11", "-O2", "-Wall", "-Wextra", "-Werror", "-pthread")

_lock = threading.Lock()
_library: ctypes.CDLL | None = None


class EmulatedACLBuildError(RuntimeError):
    """The emulated libascendcl.so could not be compiled; the message says why and what to do."""


def cache_dir() -> Path:
    """``$XDG_CACHE_HOME/npu_platform`` (or ``~/.cache/npu_platform``), else a temp folder."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    for folder in (Path(base) / "npu_platform", Path(tempfile.gettempdir()) / "npu_platform"):
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError:
            continue
        if os.access(folder, os.W_OK):
            return folder
    raise EmulatedACLBuildError(
        "no writable cache folder for the emulated libascendcl.so; set XDG_CACHE_HOME to one"
    )


def _compiler() -> str:
    for candidate in (os.environ.get("CC"), "cc", "gcc", "clang"):
        if candidate and shutil.which(candidate):
            return candidate
    raise EmulatedACLBuildError(
        "the emulated NPU compiles its ACL runtime (libascendcl.so) with a C compiler, and "
        "none was found: install gcc (apt-get install gcc) or set CC"
    )


def build() -> Path:
    """The compiled library for this source and header: from the cache, or compiled now."""
    header = Path(torch_npu_data.find(torch_npu_data.ACL_RT_HEADER))
    include = header.parent.parent
    key = hashlib.sha256(SOURCE.read_bytes() + header.read_bytes() + repr(CFLAGS).encode())
    target = cache_dir() / f"libascendcl-emulated-{key.hexdigest()[:16]}.so"
    if target.is_file():
        return target
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    command = [
        _compiler(),
        "-shared",
        "-fPIC",
        *CFLAGS,
        f"-Wl,-soname,{SONAME}",
        "-I",
        str(include),
        "-o",
        tmp,
        str(SOURCE),
    ]
    try:
        proc = subprocess.run(command, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise EmulatedACLBuildError(
                f"compiling the emulated libascendcl.so failed ({proc.returncode}):\n"
                f"{' '.join(command)}\n{proc.stderr[-4000:]}"
            )
        os.replace(tmp, target)  # atomic: processes building at once race harmlessly
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


def load(device_count: int, memory_per_device: int) -> ctypes.CDLL:
    """Build (once) and load the library process-wide; set its device count and memory."""
    global _library
    with _lock:
        if _library is None:
            lib = ctypes.CDLL(str(build()), mode=ctypes.RTLD_GLOBAL)
            lib.fake_acl_set_device_count.argtypes = [ctypes.c_int]
            lib.fake_acl_set_mem_limit.argtypes = [ctypes.c_size_t]
            lib.fake_acl_set_device_count(device_count)
            lib.fake_acl_set_mem_limit(memory_per_device)
            _library = lib
        return _library
