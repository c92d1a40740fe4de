"""Build fake installed software for tests: distributions, torch_npu, CANN, npu-smi.

Everything here writes real files into temporary folders; nothing is patched in-process.
Put a fake site folder first on ``PYTHONPATH`` of a child interpreter (see
:func:`subprocess_env`) and ``importlib.metadata`` finds the fake distributions before the
real ones in the virtual environment's site-packages (it returns the first match along
``sys.path``), so a fake ``vllm`` 0.20.0 shadows an installed vllm's metadata.

Helpers:

* :func:`make_dist` - a ``<name>-<version>.dist-info`` folder (METADATA, RECORD,
  INSTALLER, optional entry_points.txt) plus the files it owns;
* :func:`make_fake_torch_npu` - an importable ``torch_npu`` package and its metadata, that
  either fails on import like torch_npu without CANN, or registers a tiny ``torch.npu``;
* :func:`make_fake_cann` - empty ``libascendcl.so`` / ``libhccl.so`` files in a folder;
* :func:`make_fake_npu_smi` - an ``npu-smi`` script printing a table (:data:`NPU_SMI_910B_X2`
  by default);
* :func:`make_fake_torch_memory_saver` - the CUDA build or the Ascend port, told apart by the
  strings inside its shared object;
* :func:`subprocess_env` - an environment for a child interpreter, free of the host's
  NPU/CANN settings, with the fake site folders on ``PYTHONPATH``.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import stat
import sys
import textwrap
from collections.abc import Iterable, Mapping
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent

#: Variables removed by :func:`subprocess_env` so the host cannot leak into a test.
HOST_VARIABLES = (
    "PYTHONPATH",
    "PYTHONHOME",
    "LD_LIBRARY_PATH",
    "ASCEND_HOME_PATH",
    "ASCEND_TOOLKIT_HOME",
    "ASCEND_OPP_PATH",
    "ASCEND_RT_VISIBLE_DEVICES",
    "TORCH_DEVICE_BACKEND_AUTOLOAD",
)

#: What ``npu-smi info`` prints on a machine with two Atlas 800I A2 (910B3) NPUs, one chip
#: each, followed by the (empty) process table.
NPU_SMI_910B_X2 = """\
+------------------------------------------------------------------------------------------------+
| npu-smi 24.1.rc2                 Version: 24.1.rc2                                             |
+---------------------------+---------------+----------------------------------------------------+
| NPU   Name                | Health        | Power(W)    Temp(C)           Hugepages-Usage(page)|
| Chip                      | Bus-Id        | AICore(%)   Memory-Usage(MB)  HBM-Usage(MB)        |
+===========================+===============+====================================================+
| 0     910B3               | OK            | 93.5        40                0    / 0             |
| 0                         | 0000:C1:00.0  | 0           0    / 0          3161 / 65536         |
+===========================+===============+====================================================+
| 1     910B3               | OK            | 90.1        39                0    / 0             |
| 0                         | 0000:C2:00.0  | 0           0    / 0          3162 / 65536         |
+===========================+===============+====================================================+
+---------------------------+---------------+----------------------------------------------------+
| NPU     Chip              | Process id    | Process name             | Process memory(MB)      |
+===========================+===============+====================================================+
| No running processes found in NPU 0                                                            |
+===========================+===============+====================================================+
| No running processes found in NPU 1                                                            |
+===========================+===============+====================================================+
"""

#: One Atlas 300I Duo card: one NPU id, two 310P3 chips (two torch devices), one process.
NPU_SMI_310P_DUO = """\
+--------------------------------------------------------------------------------------------+
| npu-smi 23.0.0                               Version: 23.0.0                               |
+---------------------------+-----------------+----------------------------------------------+
| NPU     Name              | Health          | Power(W)     Temp(C)     Hugepages-Usage(page)|
| Chip    Device            | Bus-Id          | AICore(%)    Memory-Usage(MB)                 |
+===========================+=================+==============================================+
| 8       310P3             | OK              | NA           52          0     / 0            |
| 0       0                 | 0000:01:00.0    | 0            1598 / 21527                     |
| 1       1                 | 0000:02:00.0    | 0            1432 / 21527                     |
+===========================+=================+==============================================+
+---------------------------+-----------------+----------------------------------------------+
| NPU     Chip              | Process id      | Process name          | Process memory(MB)   |
+===========================+=================+==============================================+
| 8       0                 | 41220           | python3               | 103                  |
+===========================+=================+==============================================+
"""


def dist_info_name(name: str, version: str) -> str:
    """The ``.dist-info`` folder name a wheel installer would write for ``name``/``version``."""
    return f"{re.sub(r'[-_.]+', '_', name).lower()}-{version}.dist-info"


def _record_line(rel: str, data: bytes | None) -> str:
    if data is None:
        return f"{rel},,"
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{rel},sha256={digest},{len(data)}"


def make_dist(
    site_dir: str | os.PathLike[str],
    name: str,
    version: str,
    files: Mapping[str, bytes | str] | None = None,
    entry_points: str | None = None,
    *,
    requires: Iterable[str] = (),
) -> Path:
    """Install a fake distribution into ``site_dir``; return its ``.dist-info`` folder.

    ``files`` maps paths relative to ``site_dir`` (``"pkg/__init__.py"``) to their content
    (``str`` is written as UTF-8). They are written and listed in RECORD, so
    ``importlib.metadata.distribution(name).files`` returns them. ``entry_points`` is the
    text of ``entry_points.txt`` (INI style, e.g. ``"[torch.backends]\\nx = pkg:fn\\n"``).
    ``requires`` become ``Requires-Dist`` lines.
    """
    site = Path(site_dir)
    site.mkdir(parents=True, exist_ok=True)
    info_dir = site / dist_info_name(name, version)
    info_dir.mkdir()
    written: dict[str, bytes | None] = {}

    def write(rel: str, content: bytes | str) -> None:
        data = content.encode() if isinstance(content, str) else content
        path = site / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        written[rel] = data

    for rel, content in (files or {}).items():
        write(Path(rel).as_posix(), content)
    metadata = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
    metadata += "".join(f"Requires-Dist: {req}\n" for req in requires)
    write(f"{info_dir.name}/METADATA", metadata)
    write(f"{info_dir.name}/INSTALLER", "fakedist\n")
    if entry_points is not None:
        write(f"{info_dir.name}/entry_points.txt", textwrap.dedent(entry_points).lstrip())
    written[f"{info_dir.name}/RECORD"] = None
    record = "".join(_record_line(rel, data) + "\n" for rel, data in written.items())
    (info_dir / "RECORD").write_text(record)
    return info_dir


def make_fake_torch_npu(
    site_dir: str | os.PathLike[str],
    version: str = "2.13.0",
    *,
    import_error: str | None = None,
    device_count: int = 0,
    autoload: bool = True,
) -> Path:
    """Install an importable fake ``torch_npu`` package into ``site_dir``.

    * ``import_error``: ``import torch_npu`` raises ``OSError(import_error)``, as the real one
      does when CANN is missing (e.g. ``"libhccl.so: cannot open shared object file: No
      such file or directory"``).
    * otherwise ``import torch_npu`` imports torch and sets ``torch.npu`` to a small
      namespace whose ``device_count()`` returns ``device_count`` (``is_available()`` is
      ``device_count > 0``).
    * ``autoload``: register ``torch_npu = torch_npu:_autoload`` in the ``torch.backends``
      entry-point group, like the real torch_npu, so ``import torch`` imports torch_npu
      unless ``TORCH_DEVICE_BACKEND_AUTOLOAD`` is set to anything but ``1``.

    Returns the ``.dist-info`` folder.
    """
    if import_error is not None:
        body = f"raise OSError({import_error!r})\n"
    else:
        body = textwrap.dedent(
            f"""\
            import types

            import torch

            _COUNT = {int(device_count)}
            torch.npu = types.SimpleNamespace(
                device_count=lambda: _COUNT,
                is_available=lambda: _COUNT > 0,
                current_device=lambda: 0,
            )
            """
        )
    source = (
        '"""Fake torch_npu written by tests/fakedist.py."""\n\n'
        f"__version__ = {version!r}\n\n"
        f"{body}\n\n"
        "def _autoload():\n"
        "    pass\n"
    )
    return make_dist(
        site_dir,
        "torch_npu",
        version,
        files={"torch_npu/__init__.py": source},
        entry_points="[torch.backends]\ntorch_npu = torch_npu:_autoload\n" if autoload else None,
    )


def make_fake_cann(
    lib_dir: str | os.PathLike[str],
    libraries: Iterable[str] = ("libascendcl.so", "libhccl.so"),
) -> Path:
    """Create placeholder CANN libraries (never loaded, only looked for) in ``lib_dir``.

    Point ``LD_LIBRARY_PATH`` at ``lib_dir``, or create it as ``<root>/lib64`` and set
    ``ASCEND_HOME_PATH=<root>``.
    """
    folder = Path(lib_dir)
    folder.mkdir(parents=True, exist_ok=True)
    for lib in libraries:
        (folder / lib).write_bytes(b"\x7fELF fake " + lib.encode())
    return folder


def make_executable(path: str | os.PathLike[str], script: str) -> Path:
    """Write ``script`` to ``path`` and make it executable."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(script)
    target.chmod(target.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return target


def make_fake_npu_smi(
    bin_dir: str | os.PathLike[str], table: str = NPU_SMI_910B_X2, *, exit_status: int = 0
) -> Path:
    """An ``npu-smi`` in ``bin_dir`` that prints ``table`` for ``npu-smi info``.

    Any other subcommand prints a usage line and exits 2. Prepend ``bin_dir`` to ``PATH``.
    """
    script = textwrap.dedent(
        f"""\
        #!{sys.executable}
        import sys
        if sys.argv[1:2] != ["info"]:
            print("usage: npu-smi info", file=sys.stderr)
            sys.exit(2)
        sys.stdout.write({table!r})
        sys.exit({int(exit_status)})
        """
    )
    return make_executable(Path(bin_dir) / "npu-smi", script)


def make_fake_torch_memory_saver(
    site_dir: str | os.PathLike[str], flavor: str = "cuda", version: str = "0.0.9"
) -> Path:
    """Install a fake ``torch_memory_saver`` whose shared object references CUDA or Ascend.

    ``flavor="cuda"``: the PyPI build, its ``.so`` mentions ``libcudart.so`` and
    ``cuMemCreate``; ``flavor="ascend"``: the sgl-kernel-npu port, mentioning
    ``libascendcl.so`` and ``aclrtMallocPhysical``. Returns the ``.dist-info`` folder.
    """
    strings = {
        "cuda": b"\x00libcudart.so.12\x00cuMemCreate\x00cuMemMap\x00",
        "ascend": b"\x00libascendcl.so\x00aclrtMallocPhysical\x00aclrtMapMem\x00",
    }[flavor]
    return make_dist(
        site_dir,
        "torch_memory_saver",
        version,
        files={
            "torch_memory_saver/__init__.py": '"""Fake torch_memory_saver."""\n',
            "torch_memory_saver_hook_mode_preload.abi3.so": b"\x7fELF\x02\x01\x01" + strings,
        },
    )


def subprocess_env(
    site_dirs: Iterable[str | os.PathLike[str]] = (),
    path_dirs: Iterable[str | os.PathLike[str]] = (),
    **overrides: str | None,
) -> dict[str, str]:
    """An environment for ``[sys.executable, "-m", ...]`` children that sees only the fakes.

    Starts from ``os.environ`` without the host's ``NPU_PLATFORM_*`` and
    :data:`HOST_VARIABLES`; ``PYTHONPATH`` is ``site_dirs`` followed by the repository root
    (so ``npu_platform`` imports from this checkout); ``PATH`` is ``path_dirs`` followed by
    ``/usr/bin:/bin`` (so a host ``npu-smi`` is not found). ``overrides`` set variables, or
    remove them when ``None``.
    """
    environ = {
        key: value
        for key, value in os.environ.items()
        if key not in HOST_VARIABLES and not key.startswith("NPU_PLATFORM_")
    }
    environ["PYTHONPATH"] = os.pathsep.join([*map(str, site_dirs), str(REPO_ROOT)])
    environ["PATH"] = os.pathsep.join([*map(str, path_dirs), "/usr/bin", "/bin"])
    environ["PYTHONNOUSERSITE"] = "1"
    environ["PYTHONDONTWRITEBYTECODE"] = "1"
    for key, value in overrides.items():
        if value is None:
            environ.pop(key, None)
        else:
            environ[key] = value
    return environ
