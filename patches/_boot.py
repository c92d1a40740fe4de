"""The start-up hook: what ``npu_platform-startup.pth`` runs in every Python process.

It must cost (almost) nothing, because it runs at every interpreter start in the
environment, on machines with or without an NPU. So it imports only ``os``, ``sys`` and
``_thread`` (already loaded by then) and does two things:

1. reads ``NPU_PLATFORM_PATCHES``; an explicit off value (``0``, ``false``, ``no``, ``off``,
   empty) stops here;
2. puts a :class:`StartupFinder` at the front of ``sys.meta_path``.

The finder looks only at a handful of module names (:data:`POST_IMPORT`, :data:`REDIRECTED`,
:data:`DECIDED_ELSEWHERE`) and answers ``None`` for everything else after one set lookup. The
first time one of those names is imported it decides whether to act, cheaply first: with
``NPU_PLATFORM_EMULATE`` unset (or off) and no ``torch_npu`` on ``sys.path`` there can be no
NPU, so the finder removes itself without having imported anything (``python -X importtime -c
"import torch"`` lists no npu_platform module beyond this one). Otherwise it imports
:mod:`npu_platform.patches._activate`, which asks :func:`npu_platform.detect.detect` and
applies the selected patches.

Post-import hooks: for a name in :data:`POST_IMPORT` the finder asks the finders behind it for
the real spec and wraps its loader, so that right after the module has executed (and before
the importer gets it) :func:`npu_platform.patches._activate.module_loaded` can patch it.
Nothing here imports torch; torch is patched after its own import has finished.

``torch_memory_saver`` is not redirected here: the one finder for it is
:mod:`npu_platform.sglang.memory_saver`'s, which activation installs (the sglang entry points
install the same one). Its import is only one more occasion to decide.
"""

import os
import sys
from _thread import RLock

PATCHES_VARIABLE = "NPU_PLATFORM_PATCHES"
EMULATE_VARIABLE = "NPU_PLATFORM_EMULATE"
_OFF = ("0", "false", "no", "off", "")

#: Modules patched right after they are imported, when the hook is active.
POST_IMPORT = frozenset(
    {
        "torch",
        "vllm.distributed.parallel_state",
        "sglang.srt.distributed.parallel_state",
        "sglang.multimodal_gen.runtime.distributed.parallel_state",
    }
)

#: Top-level names whose import (and submodules') this finder answers on an NPU.
REDIRECTED = frozenset({"flash_attn"})

#: Names whose import makes the finder decide but which another finder answers: on an NPU,
#: activation installs :mod:`npu_platform.sglang.memory_saver`'s redirect for
#: ``torch_memory_saver`` (see :meth:`StartupFinder._decided_during`).
DECIDED_ELSEWHERE = frozenset({"torch_memory_saver"})

_HEADS = frozenset(name.partition(".")[0] for name in POST_IMPORT | REDIRECTED | DECIDED_ELSEWHERE)

# Decision states.
UNDECIDED = "undecided"
DECIDING = "deciding"
ACTIVE = "active"
INACTIVE = "inactive"


def _off(value: str | None) -> bool:
    return value is not None and value.strip().lower() in _OFF


class _PostImportLoader:
    """Wraps a module's real loader; calls back once the module has executed."""

    def __init__(self, finder: "StartupFinder", loader: object) -> None:
        self._finder = finder
        self._loader = loader

    def __getattr__(self, name: str) -> object:
        return getattr(self._loader, name)

    def create_module(self, spec: object) -> object:
        create = getattr(self._loader, "create_module", None)
        return None if create is None else create(spec)

    def exec_module(self, module: object) -> None:
        # Put the real loader back first, so the module looks exactly as without us.
        spec = getattr(module, "__spec__", None)
        if spec is not None and spec.loader is self:
            spec.loader = self._loader
        if getattr(module, "__loader__", None) is self:
            module.__loader__ = self._loader  # type: ignore[attr-defined]
        self._loader.exec_module(module)  # type: ignore[attr-defined]
        self._finder.module_loaded(module)


class StartupFinder:
    """Meta path finder armed at start-up; see the module docstring."""

    def __init__(self) -> None:
        self.state = UNDECIDED
        self.selected: frozenset[str] = frozenset()
        self._lock = RLock()

    # ------------------------------------------------------------------ import protocol

    def find_spec(self, fullname: str, path: object = None, target: object = None) -> object:
        if fullname.partition(".")[0] not in _HEADS:
            return None
        if fullname in POST_IMPORT:
            if self.state == INACTIVE or not self._maybe_npu():
                return None
            return self._wrapped_spec(fullname, path, target)
        if fullname in DECIDED_ELSEWHERE:
            return self._decided_during(fullname, path, target)
        head = fullname.partition(".")[0]
        if head not in REDIRECTED:
            return None
        if self.decide() != ACTIVE:
            return None
        from . import _activate

        return _activate.redirect_spec(self, fullname, path, target)

    def invalidate_caches(self) -> None:
        return None

    def _decided_during(self, fullname: str, path: object, target: object) -> object:
        """``torch_memory_saver``: decide, but leave the answer to its own finder.

        Once active, :mod:`npu_platform.sglang.memory_saver`'s finder sits at the front of
        ``sys.meta_path`` and answers before this one is asked, so this one answers
        ``None``. Only the import during which the decision is taken has already walked past
        that place; for it the answer is asked of that finder and handed on.
        """
        if self.state == ACTIVE or self.decide() != ACTIVE:
            return None
        from . import _activate

        return _activate.memory_saver_spec(self, fullname, path, target)

    # ------------------------------------------------------------------ decision

    def _maybe_npu(self) -> bool:
        """Cheap pre-check, no imports: could :func:`detect` answer real or emulated?

        False means certainly not (emulation off and no torch_npu on ``sys.path``); the
        finder then removes itself. True means "ask detect".
        """
        if self.state != UNDECIDED:
            return self.state != INACTIVE
        if not _off(os.environ.get(EMULATE_VARIABLE, "0")):
            return True  # on, or a bad value that detect() will report
        if "torch_npu" in sys.modules or self._others_find("torch_npu") is not None:
            return True
        self._set_inactive()
        return False

    def decide(self) -> str:
        """UNDECIDED -> ACTIVE or INACTIVE, once per process.

        While one thread decides, the others wait; the deciding thread itself sees DECIDING
        if detection imports a watched module (that module is then patched once the
        decision is taken, by :func:`npu_platform.patches._activate.activated`).
        """
        state = self.state
        if state in (ACTIVE, INACTIVE):
            return state
        with self._lock:
            if self.state != UNDECIDED:
                return self.state
            if not self._maybe_npu():
                return self.state
            self.state = DECIDING
            selected = None
            try:
                from . import _activate

                selected = _activate.decide()  # never raises: warns and answers ()
            finally:
                if selected is None:  # detection is running: decide on a later import
                    self.state = UNDECIDED
                elif not selected:
                    self._set_inactive()
            if self.state != DECIDING:
                return self.state
            self.selected = selected
            self.state = ACTIVE
        _activate.activated(self)
        return self.state

    def _set_inactive(self) -> None:
        self.state = INACTIVE
        uninstall(self)

    # ------------------------------------------------------------------ post-import

    def module_loaded(self, module: object) -> None:
        if self.decide() != ACTIVE:
            return  # INACTIVE; or DECIDING/UNDECIDED: activated() patches it once decided
        from . import _activate

        _activate.module_loaded(self, module)

    def _others_find(self, fullname: str, path: object = None, target: object = None) -> object:
        for finder in list(sys.meta_path):
            if finder is self:
                continue
            find_spec = getattr(finder, "find_spec", None)
            if find_spec is None:
                continue
            spec = find_spec(fullname, path, target)
            if spec is not None:
                return spec
        return None

    def _wrapped_spec(self, fullname: str, path: object, target: object) -> object:
        spec = self._others_find(fullname, path, target)
        loader = getattr(spec, "loader", None)
        if loader is None or not hasattr(loader, "exec_module"):
            return spec
        spec.loader = _PostImportLoader(self, loader)  # type: ignore[union-attr]
        return spec


_finder: "StartupFinder | None" = None


def finder() -> "StartupFinder | None":
    """The finder this process installed (None when the hook is off)."""
    return _finder


def uninstall(which: "StartupFinder | None" = None) -> None:
    which = which or _finder
    while which is not None and which in sys.meta_path:
        sys.meta_path.remove(which)


def install() -> "StartupFinder | None":
    """Arm the hook unless ``NPU_PLATFORM_PATCHES`` switches it off. Never raises."""
    global _finder
    try:
        if _off(os.environ.get(PATCHES_VARIABLE)):
            return None
        if _finder is None:
            _finder = StartupFinder()
        if _finder not in sys.meta_path:
            sys.meta_path.insert(0, _finder)
        return _finder
    except Exception as exc:  # a start-up hook must never stop the interpreter
        sys.stderr.write(f"npu_platform: start-up hook not installed: {exc!r}\n")
        return None
