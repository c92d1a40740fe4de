"""Finding the CANN runtime libraries without loading them.

Used by detection (to answer "none" before ``import torch`` can trip over torch_npu's
autoload) and by the doctor. Standard library only.
"""

from __future__ import annotations

import os

CANN_LIBRARIES = ("libascendcl.so", "libhccl.so")
DEFAULT_ASCEND_ROOT = "/usr/local/Ascend"
_LD_CACHE = "/etc/ld.so.cache"


def search_dirs(environ: dict[str, str] | None = None) -> list[str]:
    """Folders the dynamic loader or a CANN install would use, in the order we look."""
    env = os.environ if environ is None else environ
    dirs: list[str] = []
    for entry in env.get("LD_LIBRARY_PATH", "").split(os.pathsep):
        if entry:
            dirs.append(entry)
    for var in ("ASCEND_HOME_PATH", "ASCEND_TOOLKIT_HOME"):
        root = env.get(var)
        if root:
            dirs += [os.path.join(root, "lib64"), os.path.join(root, "lib")]
    dirs += [
        os.path.join(DEFAULT_ASCEND_ROOT, "ascend-toolkit", "latest", "lib64"),
        os.path.join(DEFAULT_ASCEND_ROOT, "cann", "lib64"),
        os.path.join(DEFAULT_ASCEND_ROOT, "driver", "lib64"),
    ]
    seen: set[str] = set()
    return [d for d in dirs if not (d in seen or seen.add(d))]


def _in_ld_cache(name: str) -> str | None:
    try:
        with open(_LD_CACHE, "rb") as fh:
            data = fh.read()
    except OSError:
        return None
    return f"{_LD_CACHE} (system library cache)" if name.encode() in data else None


def find_library(name: str, environ: dict[str, str] | None = None) -> str | None:
    """Where ``name`` would be found, or ``None``; looks at files only, loads nothing."""
    for folder in search_dirs(environ):
        path = os.path.join(folder, name)
        if os.path.exists(path):
            return path
    return _in_ld_cache(name)


def find_cann(environ: dict[str, str] | None = None) -> dict[str, str | None]:
    """Map each CANN library we need to where it is, or ``None`` when missing."""
    return {lib: find_library(lib, environ) for lib in CANN_LIBRARIES}
