"""Let ``import torchvision`` work when its C++ ops cannot load next to a CPU torch.

Installed into the virtual environment by ``scripts/setup.sh`` (copied to site-packages as
``_npu_platform_torchvision_cpu_ops.py``, with a ``.pth`` line calling :func:`install`); it is
part of the development environment, not of the npu-platform package.

Why: the package index's ``torchvision==0.28.0`` (the version vLLM 0.32.0 pins, and what
sglang's Engine imports through ``sglang.srt.configs``) is a CUDA build. Its ``_C``
extension links ``libtorch_cuda.so``, which a CPU torch does not have, so it cannot load.
torchvision expects that case (``torchvision.extension._has_ops()`` answers False and its
ops raise a clear error when called), except that ``torchvision/_meta_registrations.py``
registers fake kernels for ``torchvision::nms`` and ``torchvision::qnms`` unconditionally,
and registering a kernel for an operator that was never defined raises ``RuntimeError:
operator torchvision::nms does not exist``: the whole ``import torchvision`` fails.

What: on the first ``import torchvision`` of a process, before torchvision runs, try to load
its ``_C`` extension exactly as torchvision would; only if that fails, define the schemas of
those two operators (with torchvision's own signatures), so the fake-kernel registration
succeeds. No kernel is registered: ``torchvision.ops.nms`` still raises torchvision's own
"Couldn't load custom C++ ops" error, while everything that needs no C++ op (``transforms``,
``datasets``, ``io`` fallbacks) works. With a torchvision whose ``_C`` loads (a CPU build,
or a CUDA build next to a CUDA torch) nothing is defined and nothing changes.

Cost: the ``.pth`` line puts one finder at the front of ``sys.meta_path``; it answers
``None`` after one string comparison for every other import and removes itself at the first
``import torchvision``. Standard library only until then.
"""

from __future__ import annotations

import os
import sys

MODULE = "torchvision"
#: torchvision 0.28's schemas of the two operators its meta registrations name
#: (``torchvision/csrc/ops/nms.cpp``).
SCHEMAS = (
    "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
)

_library = None  # keeps the torch.library.Library fragment (and so its schemas) alive
_outcome: str | None = None


def _extension_path(package_dir: str) -> str | None:
    import importlib.machinery

    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        path = os.path.join(package_dir, "_C" + suffix)
        if os.path.exists(path):
            return path
    return None


def prepare(package_dir: str) -> str:
    """Load torchvision's ``_C`` or, where it cannot load, define the two op schemas.

    Returns what was done: ``"loaded"``, ``"defined"`` (the schemas), ``"absent"`` (no
    ``_C`` extension in ``package_dir``) or ``"present"`` (the operators already exist).
    Idempotent.
    """
    global _library, _outcome
    # Called under the import lock of ``torchvision`` (from the finder), or by hand.
    if _outcome is not None:
        return _outcome
    import torch

    if _has_schema(torch, "nms"):
        _outcome = "present"
        return _outcome
    path = _extension_path(package_dir)
    if path is None:
        _outcome = "absent"
        return _outcome
    try:
        torch.ops.load_library(path)
    except OSError:
        library = torch.library.Library(MODULE, "FRAGMENT")
        for schema in SCHEMAS:
            library.define(schema)
        _library = library
        _outcome = "defined"
    else:
        _outcome = "loaded"
    return _outcome


def _has_schema(torch: object, name: str) -> bool:
    try:
        torch._C._get_schema(f"torchvision::{name}", "")  # type: ignore[attr-defined]
    except RuntimeError:
        return False
    return True


class _Finder:
    """Runs :func:`prepare` when ``torchvision`` is first imported, then steps aside."""

    def find_spec(self, fullname: str, path: object = None, target: object = None) -> None:
        if fullname != MODULE:
            return None
        self._remove()
        try:
            import importlib.machinery

            spec = importlib.machinery.PathFinder.find_spec(fullname, path)
            locations = list(getattr(spec, "submodule_search_locations", None) or [])
            if locations:
                prepare(locations[0])
        except Exception as exc:  # never make an import fail that would otherwise work
            sys.stderr.write(f"torchvision_cpu_ops: not applied: {exc!r}\n")
        return None  # the normal finders import torchvision

    def _remove(self) -> None:
        while self in sys.meta_path:
            sys.meta_path.remove(self)


def install() -> None:
    """Put the finder at the front of ``sys.meta_path`` (from the ``.pth`` line)."""
    if MODULE in sys.modules or any(isinstance(f, _Finder) for f in sys.meta_path):
        return
    sys.meta_path.insert(0, _Finder())
