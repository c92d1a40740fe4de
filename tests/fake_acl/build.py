"""Compile the emulated ACL runtime (``npu_platform/emulation/csrc/ascendcl.c``) into a
``libascendcl.so`` against torch_npu's real ACL headers.

The C file includes ``acl/acl_rt.h`` from the torch-npu wheel (located with
:mod:`npu_platform.torch_npu_data`), so every fake definition is checked against the real
prototype by the compiler.
"""

from __future__ import annotations

import os
import shutil
import subprocess

from npu_platform import torch_npu_data

SOURCE = os.path.join(
    os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
    "npu_platform",
    "emulation",
    "csrc",
    "ascendcl.c",
)
LIBRARY_NAME = "libascendcl.so"
CFLAGS = ("-std=gnu11", "-O2", "-Wall", "-Wextra", "-Werror", "-pthread")


class BuildError(RuntimeError):
    """The compiler rejected a source file; the message holds its command and output."""


def compiler() -> str | None:
    """The C compiler to use (``$CC``, else cc, gcc or clang on PATH), or ``None``."""
    for candidate in (os.environ.get("CC"), "cc", "gcc", "clang"):
        if candidate and shutil.which(candidate):
            return candidate
    return None


def acl_include_dir() -> str:
    """The folder holding ``acl/acl_rt.h`` (raises EnvironmentProblem when there is none)."""
    header = torch_npu_data.find(torch_npu_data.ACL_RT_HEADER)
    return os.path.dirname(os.path.dirname(header))


def compile_shared(source: str, output: str, include_dirs: list[str] | None = None) -> str:
    """Compile ``source`` into the shared library ``output``; raise :class:`BuildError`.

    ``include_dirs`` defaults to the ACL include folder.
    """
    cc = compiler()
    if cc is None:
        raise BuildError("no C compiler found (set CC or install gcc)")
    includes = [acl_include_dir()] if include_dirs is None else include_dirs
    flags = [arg for folder in includes for arg in ("-I", folder)]
    cmd = [cc, "-shared", "-fPIC", *CFLAGS, *flags, "-o", output, source]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise BuildError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr}")
    return output


def build_fake_ascendcl(out_dir: str) -> str:
    """Build the fake library into ``out_dir``; return the path of ``libascendcl.so``."""
    os.makedirs(out_dir, exist_ok=True)
    return compile_shared(SOURCE, os.path.join(out_dir, LIBRARY_NAME))
