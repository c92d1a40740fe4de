"""What the start-up finder does once it has to decide: detect, select, apply, log.

Imported by :mod:`npu_platform.patches._boot` only when an NPU is possible (emulation on, or
torch_npu on ``sys.path``) and a watched module is imported. Nothing here raises into the
importing program: a bad ``NPU_PLATFORM_*`` value or a failing patch is logged as a warning
(``npu_platform.patches`` logger) and the process goes on as it would without the patch.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import sys
import threading
from types import ModuleType
from typing import Any

from npu_platform import env

logger = logging.getLogger("npu_platform.patches")

PATCHES = ("cuda", "distributed", "flash_attn", "torch_memory_saver")
"""Every start-up patch, by the name ``NPU_PLATFORM_PATCH_ONLY`` selects it with."""

DEFAULT_PATCHES = ("distributed", "flash_attn", "torch_memory_saver")
"""Applied when ``NPU_PLATFORM_PATCH_ONLY`` is unset. ``cuda`` (torch_npu's
``transfer_to_npu``) changes ``torch.cuda`` process-wide, which sends vLLM and sglang down
CUDA-only paths, so programs written for CUDA (dInfer) ask for it by name."""

#: ``import flash_attn...`` on an NPU gives these npu_platform modules.
FLASH_ATTN_MODULES = {
    "flash_attn": "npu_platform.patches.flash_attn",
    "flash_attn.flash_attn_interface": "npu_platform.patches.flash_attn",
    "flash_attn.bert_padding": "npu_platform.patches.bert_padding",
}

_lock = threading.RLock()
_logged: set[str] = set()
_patched_modules: set[str] = set()


def _log_once(key: str, message: str, *args: object) -> None:
    with _lock:
        if key in _logged:
            return
        _logged.add(key)
    logger.info(message, *args)


def _warn(message: str, *args: object) -> None:
    logger.warning("npu_platform start-up patches: " + message, *args)


def detection_running() -> bool:
    """True while :func:`npu_platform.detect.detect` is computing (in any thread).

    Detection imports torch (and torch_npu) on machines with torch_npu, so the torch
    post-import hook can run *inside* a ``detect()`` call, whose lock is not re-entrant.
    Then the decision waits for the next watched import instead of deadlocking.
    """
    from npu_platform import detect

    return detect.in_progress()


def decide() -> frozenset[str] | None:
    """The patches to apply in this process (empty: none; None: ask again later).

    Never raises.
    """
    try:
        if not env.get("NPU_PLATFORM_PATCHES"):
            return frozenset()
        from npu_platform.detect import detect

        if detection_running():
            return None
        detection = detect()
        if not detection.is_npu:
            logger.debug("start-up patches inactive: %s", detection.reason)
            return frozenset()
        only = env.get("NPU_PLATFORM_PATCH_ONLY")
        selected = frozenset(only) if only else frozenset(DEFAULT_PATCHES)  # type: ignore[arg-type]
    except Exception as exc:
        _warn("not applied in this process: %s", exc)
        return frozenset()
    # One line per process. WARNING when the CUDA redirection is on, since it changes what
    # torch.cuda answers everywhere in the program; INFO for the import/argument rewrites.
    with _lock:
        first = "active" not in _logged
        _logged.add("active")
    if first:
        logger.log(
            logging.WARNING if "cuda" in selected else logging.INFO,
            "npu_platform start-up patches active on the %s NPU: %s",
            detection.target.value,
            ", ".join(sorted(selected)),
        )
    return selected


def activated(finder: Any) -> None:
    """Right after the decision: set up redirects and patch what is already imported."""
    _install_memory_saver(finder)
    from ._boot import POST_IMPORT

    for name in sorted(POST_IMPORT):
        module = sys.modules.get(name)
        spec = getattr(module, "__spec__", None)
        if module is not None and not getattr(spec, "_initializing", False):
            module_loaded(finder, module)


def module_loaded(finder: Any, module: ModuleType) -> None:
    """Patch one module of ``POST_IMPORT`` right after its import (idempotent)."""
    name = module.__name__
    with _lock:
        if name in _patched_modules:
            return
        _patched_modules.add(name)
    try:
        if name == "torch":
            _patch_torch(finder, module)
        elif "distributed" in finder.selected:
            from . import distributed

            changed = distributed.patch_parallel_state(module)
            if changed:
                _log_once(
                    f"distributed:{name}",
                    "patch distributed: %s.%s map backend 'nccl' to '%s'",
                    name,
                    "/".join(changed),
                    distributed.BACKEND,
                )
    except Exception as exc:
        logger.warning("npu_platform start-up patches: patching %s failed", name, exc_info=exc)


def _patch_torch(finder: Any, torch: ModuleType) -> None:
    if "cuda" in finder.selected:
        try:
            from . import cuda

            how = cuda.apply()
            _log_once("cuda", "patch cuda: %s", how)
        except Exception as exc:
            logger.warning("npu_platform start-up patches: patch cuda failed", exc_info=exc)
    if "distributed" in finder.selected:
        from . import distributed

        changed = distributed.patch_torch()
        _log_once(
            "distributed:torch",
            "patch distributed: torch.distributed.%s map backend 'nccl' to '%s'",
            "/".join(changed),
            distributed.BACKEND,
        )


# ---------------------------------------------------------------------------- redirects


def _install_memory_saver(finder: Any) -> bool:
    """The ``torch_memory_saver`` patch: install the sglang integration's redirect.

    :func:`npu_platform.sglang.memory_saver.install` puts the process's one
    ``torch_memory_saver`` finder at the front of ``sys.meta_path`` (the sglang entry points
    install the same one; it is never there twice). Idempotent; logged once per process.
    """
    if "torch_memory_saver" not in finder.selected:
        return False
    try:
        from npu_platform.sglang import memory_saver

        installed = memory_saver.install()
    except Exception as exc:
        _warn("torch_memory_saver redirect failed: %r", exc)
        return False
    if installed:
        _log_once(
            "torch_memory_saver",
            "patch torch_memory_saver: `import torch_memory_saver` gives "
            "npu_platform.torch_memory_saver (ahead of any installed torch_memory_saver)",
        )
    return installed


def memory_saver_spec(finder: Any, fullname: str, path: Any, target: Any) -> Any:
    """The spec for the ``import torch_memory_saver`` during which ``finder`` decided.

    Asked of :mod:`npu_platform.sglang.memory_saver`'s finder, which :func:`activated` has
    just put in front of ``finder``, where this import had already looked.
    """
    if not _install_memory_saver(finder):
        return None
    from npu_platform.sglang import memory_saver

    return memory_saver.find_spec(fullname, path, target)


class _AliasLoader:
    """Loads a redirected name as an existing npu_platform module (the same object)."""

    def __init__(self, target: str) -> None:
        self.target = target
        self._own_spec: Any = None

    def create_module(self, spec: Any) -> ModuleType:
        module = importlib.import_module(self.target)
        self._own_spec = module.__spec__
        return module

    def exec_module(self, module: ModuleType) -> None:
        # The import system set __spec__ to the alias's spec; the module keeps its own.
        if self._own_spec is not None:
            module.__spec__ = self._own_spec


def redirect_spec(finder: Any, fullname: str, path: Any, target: Any) -> Any:
    """The spec answering ``fullname`` (``flash_attn`` and its submodules) on an NPU."""
    head = fullname.partition(".")[0]
    if head not in finder.selected:
        return None
    module = FLASH_ATTN_MODULES.get(fullname)
    if module is None:
        return None  # flash_attn.<other>: ModuleNotFoundError, never the CUDA package's
    _log_once(
        "flash_attn",
        "patch flash_attn: `import flash_attn` gives npu_platform.patches.flash_attn "
        "(npu_fusion_attention through npu_platform.ops)",
    )
    return importlib.util.spec_from_loader(
        fullname, _AliasLoader(module), is_package=fullname == "flash_attn"
    )
