"""Compile the fake CUDA driver (``tests/fake_cuda/fake_cuda.c``) into a ``libcuda.so.1``.

The C file includes the real ``cuda.h``, so every fake definition is checked against the real
prototype by the compiler. The header comes from a CUDA toolkit (``CUDA_HOME``,
``CUDA_PATH``, ``/usr/local/cuda*``) or, failing that, from the copy that the triton wheel
(a vLLM dependency) or an ``nvidia-cuda-*`` wheel ships.
"""

from __future__ import annotations

import glob
import importlib.util
import os
import sysconfig

from tests.fake_acl import build as acl_build

SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fake_cuda.c")
LIBRARY_NAME = "libcuda.so.1"


def cuda_include_dirs() -> list[str]:
    """Folders that may hold ``cuda.h``, best first."""
    folders = [
        os.path.join(os.environ[var], "include")
        for var in ("CUDA_HOME", "CUDA_PATH")
        if os.environ.get(var)
    ]
    folders += ["/usr/local/cuda/include", *sorted(glob.glob("/usr/local/cuda-*/include"))]
    spec = importlib.util.find_spec("triton")
    if spec is not None and spec.submodule_search_locations:
        for location in spec.submodule_search_locations:
            folders.append(os.path.join(location, "backends", "nvidia", "include"))
    folders += sorted(
        glob.glob(os.path.join(sysconfig.get_paths()["purelib"], "nvidia", "*", "include"))
    )
    return folders


def cuda_include_dir() -> str | None:
    """The first folder holding ``cuda.h``, or ``None``."""
    for folder in cuda_include_dirs():
        if os.path.isfile(os.path.join(folder, "cuda.h")):
            return folder
    return None


def build_fake_libcuda(out_dir: str, include_dir: str) -> str:
    """Build the fake into ``out_dir`` against ``include_dir``/cuda.h; return its path."""
    os.makedirs(out_dir, exist_ok=True)
    return acl_build.compile_shared(SOURCE, os.path.join(out_dir, LIBRARY_NAME), [include_dir])
