"""What are we running on: a real Ascend NPU, the emulated NPU, or nothing?

This sits at the bottom of the layer stack and is called from entry points that run in
every vLLM / sglang process, so the "no" answer must be cheap: when torch_npu is not
installed and emulation is off we answer without importing torch (measured by the tests,
target under 10 ms). Standard library only at import time.
"""

from __future__ import annotations

import enum
import importlib.util
import os
import sys
import threading

from npu_platform import cann, env


class Target(str, enum.Enum):
    REAL = "real"
    EMULATED = "emulated"
    NONE = "none"


class Detection:
    """The decision, why it was taken, and how many devices it sees."""

    __slots__ = ("device_count", "reason", "target")

    def __init__(self, target: Target, reason: str, device_count: int = 0) -> None:
        self.target = target
        self.reason = reason
        self.device_count = device_count

    @property
    def is_npu(self) -> bool:
        """True for a real or an emulated NPU: the plugin should act."""
        return self.target is not Target.NONE

    @property
    def emulated(self) -> bool:
        return self.target is Target.EMULATED

    def as_dict(self) -> dict[str, object]:
        return {
            "target": self.target.value,
            "reason": self.reason,
            "device_count": self.device_count,
        }

    def __repr__(self) -> str:
        return (
            f"Detection({self.target.value!r}, devices={self.device_count}, reason={self.reason!r})"
        )


_lock = threading.Lock()
_cached: Detection | None = None
_deciding = False

_AUTOLOAD_FIX = (
    "Source CANN's set_env.sh (for example /usr/local/Ascend/ascend-toolkit/set_env.sh) so that "
    "libascendcl.so and libhccl.so can be found, or uninstall torch_npu, or set "
    "TORCH_DEVICE_BACKEND_AUTOLOAD=0 to keep `import torch` from loading torch_npu."
)


def _torch_npu_installed() -> bool:
    if "torch_npu" in sys.modules:
        return True
    try:
        return importlib.util.find_spec("torch_npu") is not None
    except (ImportError, ValueError):
        return False


def _describe(exc: BaseException) -> str:
    """The exception and its causes: torch wraps autoload failures in a generic RuntimeError."""
    parts = []
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        parts.append(f"{type(current).__name__}: {current}")
        current = current.__cause__ or current.__context__
    return " <- caused by ".join(parts)


def _emulated_torch_npu_loaded() -> bool:
    """The torch_npu in this process is the emulation's (loaded while it was switched on)."""
    module = sys.modules.get("torch_npu")
    where = getattr(module, "__file__", None) or ""
    return os.sep.join(("npu_platform", "emulation", "site")) in where


def _probe_real() -> Detection:
    if _emulated_torch_npu_loaded():
        return Detection(
            Target.NONE,
            "the emulated torch_npu is loaded in this process but NPU_PLATFORM_EMULATE is off",
        )
    missing = [lib for lib, where in cann.find_cann().items() if where is None]
    if missing and "torch_npu" not in sys.modules:
        # torch autoloads device backends only when this is exactly "1" (its default).
        autoload_on = os.environ.get("TORCH_DEVICE_BACKEND_AUTOLOAD", "1") == "1"
        trap = (
            " Because torch autoloads torch_npu, `import torch` itself fails in this environment."
            if autoload_on
            else ""
        )
        return Detection(
            Target.NONE,
            f"torch_npu is installed but the CANN libraries {', '.join(missing)} were not found "
            f"(looked in LD_LIBRARY_PATH, ASCEND_HOME_PATH, {cann.DEFAULT_ASCEND_ROOT} and the "
            f"system library cache).{trap} {_AUTOLOAD_FIX}",
        )
    try:
        import torch
        import torch_npu  # noqa: F401  (registers torch.npu)

        count = int(torch.npu.device_count())
    except Exception as exc:  # a broken stack must not crash detection
        return Detection(
            Target.NONE,
            f"torch_npu is installed but importing it failed ({_describe(exc)}). {_AUTOLOAD_FIX}",
        )
    if count < 1:
        return Detection(
            Target.NONE,
            "torch_npu imported but reports no NPU device; check `npu-smi info` and "
            "ASCEND_RT_VISIBLE_DEVICES.",
        )
    return Detection(Target.REAL, f"torch_npu reports {count} Ascend NPU device(s)", count)


def _decide() -> Detection:
    if env.get("NPU_PLATFORM_EMULATE"):
        count = env.get("NPU_PLATFORM_EMULATE_DEVICES")
        return Detection(
            Target.EMULATED,
            f"NPU_PLATFORM_EMULATE=1: the emulated NPU (CPU-backed, {count} device(s)) is in use",
            int(count),  # type: ignore[arg-type]
        )
    if not _torch_npu_installed():
        return Detection(
            Target.NONE,
            "torch_npu is not installed, so there is no Ascend NPU stack; "
            "set NPU_PLATFORM_EMULATE=1 to use the emulated NPU",
        )
    return _probe_real()


def detect(*, refresh: bool = False) -> Detection:
    """Return the :class:`Detection` for this process (cached; ``refresh`` recomputes).

    Raises :class:`npu_platform.errors.ConfigError` when an ``NPU_PLATFORM_*`` variable holds
    a bad value.
    """
    global _cached, _deciding
    with _lock:
        if _cached is None or refresh:
            _deciding = True
            try:
                _cached = _decide()
            finally:
                _deciding = False
        return _cached


def in_progress() -> bool:
    """True while a :func:`detect` call is deciding (it may be importing torch_npu).

    Import hooks that run during that import (the start-up patches) must not call
    :func:`detect` then: the call would wait for itself.
    """
    return _deciding


def is_npu() -> bool:
    """Shortcut for entry points: real or emulated."""
    return detect().is_npu


def is_emulated() -> bool:
    return detect().target is Target.EMULATED
