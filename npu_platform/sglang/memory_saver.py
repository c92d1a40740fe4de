"""Back sglang's ``TorchMemorySaverAdapter`` with npu_platform's memory manager on NPUs.

sglang's ``sglang/srt/utils/torch_memory_saver_adapter.py`` runs ``import torch_memory_saver``
when it is imported and uses whatever that gives. On an NPU (real or emulated) that must be
:mod:`npu_platform.torch_memory_saver`; elsewhere nothing may change. This module does it
with an import redirect:

* :func:`install` puts a small finder at the front of ``sys.meta_path``. It answers for the
  one name ``torch_memory_saver`` and only when :func:`npu_platform.detect.detect` says
  there is an NPU; the module it hands out *is* :mod:`npu_platform.torch_memory_saver`
  (``sys.modules["torch_memory_saver"] is npu_platform.torch_memory_saver``). So an
  installed CUDA ``torch_memory_saver`` (or the sgl-kernel-npu port of it) is shadowed on
  NPU machines only. The facade is a plain module, not a package, so
  ``import torch_memory_saver.<submodule>`` then fails ("not a package") instead of
  reaching the CUDA package's submodules. Where ``torch_memory_saver`` or sglang's adapter
  module had already been imported with something else, :func:`install` rebinds them.
* This finder is the only one in the process that answers ``torch_memory_saver``; every
  other path calls :func:`install`, which keeps at most one instance on ``sys.meta_path``.
  Callers: the ``sglang.srt.platforms`` entry point (which sglang runs on ``import`` of
  ``sglang.srt.utils.common``, before the adapter's own import, in every sglang process),
  the ``sglang.srt.plugins`` general plugin, ``NPUPlatform``, and the start-up hook
  (:mod:`npu_platform.patches`, for processes that never resolve sglang's platform, once it
  has detected an NPU). All calls are idempotent and cheap. ``install(defer_detection=True)``
  installs the finder without detecting anything now (no torch import); detection then runs
  the first time something imports ``torch_memory_saver``. :func:`find_spec` asks the
  installed finder directly, for an import that had already walked past the front of
  ``sys.meta_path`` when :func:`install` ran (the start-up hook decides *during* the first
  ``import torch_memory_saver`` of a process).
* Which implementation sglang gets is a choice, made per process on the first
  ``import torch_memory_saver`` and logged once there (at INFO when another
  ``torch_memory_saver`` is installed, since that one is then shadowed; at DEBUG otherwise).
  ``NPU_PLATFORM_TORCH_MEMORY_SAVER`` (:data:`CHOICE_VARIABLE`) selects it:

  - ``npu_platform`` (the default): npu-platform's facade, whatever else is installed. The
    CUDA package cannot work on an NPU (it intercepts ``cudaMalloc``); sgl-kernel-npu's
    Ascend port of ``torch_memory_saver`` works on Ascend hardware but keeps its own
    allocator, outside npu-platform's memory manager (which also serves vLLM's sleep mode
    and the device budget), and does not run on the emulated NPU;
  - ``installed``: the redirect steps aside and ``import torch_memory_saver`` finds the
    installed package (for example sgl-kernel-npu's port), exactly as without npu-platform.
    ``--enable-memory-saver`` then uses that package, and npu-platform does not check it.

* :func:`adapter_cuda_graph_hook` fixes a call sglang cannot make otherwise: the NPU graph
  backend calls ``adapter.cuda_graph(graph, pool=..., stream=...,
  auto_dispatch_capture=True, tag=...)`` with the graph *positionally*, and
  ``_TorchMemorySaverAdapterReal.cuda_graph(self, **kwargs)`` takes keywords only. It is
  registered on sglang's ``HookRegistry`` (:func:`register_hooks`) and can be applied
  directly (:func:`patch_adapter`) where ``load_plugins()`` never runs.

Standard library only at import time.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import logging
import sys
import threading
from dataclasses import dataclass
from types import ModuleType
from typing import Any

logger = logging.getLogger("npu_platform.sglang")

TMS_MODULE = "torch_memory_saver"
FACADE_MODULE = "npu_platform.torch_memory_saver"
ADAPTER_MODULE = "sglang.srt.utils.torch_memory_saver_adapter"
ADAPTER_REAL_CLASS = f"{ADAPTER_MODULE}._TorchMemorySaverAdapterReal"
CUDA_GRAPH_TARGET = f"{ADAPTER_REAL_CLASS}.cuda_graph"

_PATCH_MARK = "_npu_platform_cuda_graph_patch"

_lock = threading.RLock()
_finder: _TorchMemorySaverRedirect | None = None
_hooks_registered = False


#: Selects the implementation (see the module docstring); parsed by :mod:`npu_platform.env`.
CHOICE_VARIABLE = "NPU_PLATFORM_TORCH_MEMORY_SAVER"
OURS = "npu_platform"
INSTALLED = "installed"

_choice_logged = False


def _npu_present() -> bool:
    from npu_platform.detect import detect

    return detect().is_npu


def choice() -> str:
    """``"npu_platform"`` or ``"installed"`` (``NPU_PLATFORM_TORCH_MEMORY_SAVER``); a bad
    value raises :class:`npu_platform.errors.ConfigError` naming the accepted ones."""
    from npu_platform import env

    return str(env.get(CHOICE_VARIABLE))


def installed_elsewhere() -> str | None:
    """Where another ``torch_memory_saver`` is installed (its file), or None."""
    spec = importlib.machinery.PathFinder.find_spec(TMS_MODULE)
    if spec is None:
        return None
    return str(spec.origin or (list(spec.submodule_search_locations or []) or [TMS_MODULE])[0])


def _log_choice(selected: str) -> None:
    """Say once per process which torch_memory_saver sglang gets, and what it shadows."""
    global _choice_logged
    if _choice_logged:
        return
    _choice_logged = True
    other = installed_elsewhere()
    if selected == OURS:
        if other is None:
            logger.debug("npu_platform: torch_memory_saver is npu_platform.torch_memory_saver")
            return
        logger.info(
            "npu_platform: torch_memory_saver is npu_platform.torch_memory_saver; the "
            "installed %s is not used on this NPU (set %s=installed to use it)",
            other,
            CHOICE_VARIABLE,
        )
    else:
        logger.info(
            "npu_platform: torch_memory_saver is the installed package (%s), as %s=installed "
            "asks; npu-platform's memory manager does not back sglang's memory saver",
            other or "none installed: the import will fail",
            CHOICE_VARIABLE,
        )


class _FacadeLoader(importlib.abc.Loader):
    """Loads ``torch_memory_saver`` by putting the facade module itself in its place."""

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return None  # a throwaway module; exec_module replaces it in sys.modules

    def exec_module(self, module: ModuleType) -> None:
        facade = importlib.import_module(FACADE_MODULE)
        # The "sys.modules replacement" case of the import system: what import returns is
        # whatever sys.modules holds under the name after exec_module, i.e. the facade,
        # with its own __name__ and __spec__ left alone.
        sys.modules[module.__name__] = facade


class _TorchMemorySaverRedirect(importlib.abc.MetaPathFinder):
    """``import torch_memory_saver`` gives npu_platform's facade, on NPUs only."""

    def find_spec(
        self, fullname: str, path: Any = None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname != TMS_MODULE:
            return None
        if not _npu_present():
            return None  # CUDA machines and machines without an NPU: the normal import
        selected = choice()
        _log_choice(selected)
        if selected == INSTALLED:
            return None  # the user's choice: the installed package, found as usual
        return importlib.util.spec_from_loader(
            fullname, _FacadeLoader(), origin=f"redirected to {FACADE_MODULE} by npu_platform"
        )


def _facade() -> ModuleType:
    return importlib.import_module(FACADE_MODULE)


def is_ours(saver: object) -> bool:
    """True when ``saver`` is npu_platform's ``torch_memory_saver`` singleton or module."""
    facade = sys.modules.get(FACADE_MODULE)
    if facade is None or saver is None:
        return False
    return saver is facade or saver is getattr(facade, "torch_memory_saver", None)


def install(*, defer_detection: bool = False) -> bool:
    """Make ``torch_memory_saver`` mean npu_platform's facade in this process, on NPUs.

    Idempotent and cheap. Returns ``True`` when the redirect is installed. Without
    ``defer_detection`` it detects now and does nothing (returns ``False``) where there is
    no NPU, real or emulated. With ``defer_detection=True`` the finder is installed
    unconditionally and decides on the first ``import torch_memory_saver``; nothing imports
    torch until then.
    """
    global _finder
    if not defer_detection and not _npu_present():
        return False
    with _lock:
        if _finder is None:
            _finder = _TorchMemorySaverRedirect()
        if _finder not in sys.meta_path:
            sys.meta_path.insert(0, _finder)
        # Something imported before the finder was there: rebind it (detecting now).
        loaded = sys.modules.get(TMS_MODULE)
        adapter = sys.modules.get(ADAPTER_MODULE)
        stale = (loaded is not None and not is_ours(loaded)) or (
            adapter is not None and not is_ours(getattr(adapter, "_memory_saver", None))
        )
        if stale and (not defer_detection or _npu_present()) and choice() == OURS:
            _rebind()
    return True


def _rebind() -> None:
    facade = _facade()
    loaded = sys.modules.get(TMS_MODULE)
    if loaded is not None and loaded is not facade:
        logger.warning(
            "npu_platform: replacing the already imported torch_memory_saver (%s) with "
            "npu_platform.torch_memory_saver: the CUDA memory saver cannot work on an NPU",
            getattr(loaded, "__file__", None) or loaded,
        )
    sys.modules[TMS_MODULE] = facade
    adapter = sys.modules.get(ADAPTER_MODULE)
    if adapter is None:
        return
    # The adapter may be half-imported (this runs from sglang's platform resolution, which
    # its own imports trigger); its `import torch_memory_saver` then finds the facade anyway.
    adapter.torch_memory_saver = facade  # type: ignore[attr-defined]
    if hasattr(adapter, "_memory_saver") or hasattr(adapter, "import_error"):
        adapter._memory_saver = facade.torch_memory_saver  # type: ignore[attr-defined]
        adapter.import_error = None  # type: ignore[attr-defined]
        logger.info("npu_platform: sglang's TorchMemorySaverAdapter now uses npu_platform")
    patch_adapter()


def uninstall() -> None:
    """Undo :func:`install` (for tests): remove the finder and our module bindings.

    A ``torch_memory_saver`` or adapter module bound to the facade is dropped from
    ``sys.modules``, so the next import starts afresh.
    """
    with _lock:
        if _finder is not None:
            while _finder in sys.meta_path:
                sys.meta_path.remove(_finder)
        if is_ours(sys.modules.get(TMS_MODULE)):
            del sys.modules[TMS_MODULE]
        adapter = sys.modules.get(ADAPTER_MODULE)
        if adapter is not None and is_ours(getattr(adapter, "_memory_saver", None)):
            del sys.modules[ADAPTER_MODULE]


def installed() -> bool:
    return _finder is not None and _finder in sys.meta_path


def find_spec(
    fullname: str, path: Any = None, target: ModuleType | None = None
) -> importlib.machinery.ModuleSpec | None:
    """What the installed redirect answers for ``fullname`` (``None`` when not installed).

    For an import that is already past the front of ``sys.meta_path`` when :func:`install`
    puts the finder there: the start-up hook's finder decides during such an import and
    hands this answer on, so the redirect itself stays in this one finder.
    """
    finder = _finder
    if finder is None or finder not in sys.meta_path:
        return None
    return finder.find_spec(fullname, path, target)


# ---------------------------------------------------------------------------- adapter fix


def adapter_cuda_graph_hook(original_fn: Any, self: Any, *args: Any, **kwargs: Any) -> Any:
    """``HookRegistry`` AROUND hook for ``_TorchMemorySaverAdapterReal.cuda_graph``.

    With npu_platform's saver behind the adapter, pass every argument through (the graph may
    come positionally, and ``auto_dispatch_capture`` is accepted); otherwise sglang's own
    method runs unchanged.
    """
    adapter = sys.modules.get(ADAPTER_MODULE)
    saver = getattr(adapter, "_memory_saver", None)
    if is_ours(saver):
        return saver.cuda_graph(*args, **kwargs)  # type: ignore[union-attr]
    return original_fn(self, *args, **kwargs)


def patch_adapter() -> bool:
    """Apply :func:`adapter_cuda_graph_hook` to the adapter class directly (idempotent).

    For processes where sglang's ``load_plugins()`` never runs. Returns ``False`` when the
    adapter module is not imported (yet).
    """
    adapter = sys.modules.get(ADAPTER_MODULE)
    cls = getattr(adapter, "_TorchMemorySaverAdapterReal", None)
    if cls is None:
        return False
    with _lock:
        current = cls.__dict__.get("cuda_graph")
        if current is None or getattr(current, _PATCH_MARK, False):
            return True

        def cuda_graph(self: Any, *args: Any, **kwargs: Any) -> Any:
            return adapter_cuda_graph_hook(current, self, *args, **kwargs)

        cuda_graph.__doc__ = current.__doc__
        cuda_graph.__wrapped__ = current  # type: ignore[attr-defined]
        setattr(cuda_graph, _PATCH_MARK, True)
        cls.cuda_graph = cuda_graph
    return True


def register_hooks() -> bool:
    """Register our hooks on sglang's ``HookRegistry`` (once per process).

    ``load_plugins()`` applies them (it runs in sglang's engine, scheduler, detokenizer and
    DP-controller processes). Returns ``True`` when registered now or before.
    """
    global _hooks_registered
    with _lock:
        if _hooks_registered:
            return True
        from sglang.srt.plugins.hook_registry import HookRegistry, HookType

        HookRegistry.register(CUDA_GRAPH_TARGET, adapter_cuda_graph_hook, HookType.AROUND)
        _hooks_registered = True
    return True


# ---------------------------------------------------------------------------- inspection


@dataclass(frozen=True)
class Status:
    """Where the memory saver stands in this process."""

    redirect_installed: bool
    #: What ``sys.modules["torch_memory_saver"]`` holds: ``"npu_platform"``, the file of
    #: another implementation, or ``None`` when not imported.
    torch_memory_saver: str | None
    adapter_imported: bool
    #: The adapter module's ``_memory_saver`` is npu_platform's singleton (None: adapter
    #: not imported).
    adapter_backed_by_npu_platform: bool | None


def _describe(module: object) -> str | None:
    if module is None:
        return None
    if is_ours(module):
        return "npu_platform"
    return str(getattr(module, "__file__", None) or module)


def status() -> Status:
    adapter = sys.modules.get(ADAPTER_MODULE)
    return Status(
        redirect_installed=installed(),
        torch_memory_saver=_describe(sys.modules.get(TMS_MODULE)),
        adapter_imported=adapter is not None,
        adapter_backed_by_npu_platform=(
            None if adapter is None else is_ours(getattr(adapter, "_memory_saver", None))
        ),
    )


def adapter_backed_by_manager(adapter: object) -> bool:
    """True when an adapter sglang created (``TorchMemorySaverAdapter.create(enable=True)``)
    forwards to npu_platform's memory manager."""
    module = sys.modules.get(ADAPTER_MODULE)
    if module is None or not isinstance(adapter, module._TorchMemorySaverAdapterReal):
        return False
    return is_ours(getattr(module, "_memory_saver", None)) and bool(adapter.enabled)
