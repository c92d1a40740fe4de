"""vLLM's entry points into npu-platform (installed as ``npu_platform.entry_points.vllm``).

pyproject registers two functions here:

* ``vllm.platform_plugins`` -> :func:`platform_plugin`. vLLM calls it in every process the
  first time ``vllm.platforms.current_platform`` is touched. It answers the class path of our
  platform when :func:`npu_platform.detect.detect` sees a real or an emulated NPU, and
  ``None`` otherwise. It must stay cheap: on a machine without torch_npu and with emulation
  off it imports neither torch nor anything of vLLM's.
* ``vllm.general_plugins`` -> :func:`register`. vLLM calls it once per process (engine
  core, workers, argument parsing). It registers our attention backend, custom ops and
  sleep-mode backend, idempotently, and only when the NPU platform is the one in use.

This module imports the standard library and :mod:`npu_platform.detect` only.
"""

from __future__ import annotations

import logging

from npu_platform.detect import Detection, Target, detect
from npu_platform.errors import ConfigError

logger = logging.getLogger("vllm.npu_platform")

NPU_PLATFORM = "npu_platform.vllm.platform.NPUPlatform"
EMULATED_PLATFORM = "npu_platform.vllm.platform.EmulatedNPUPlatform"


def _detect_or_warn() -> Detection | None:
    try:
        return detect()
    except ConfigError as exc:
        # vLLM swallows exceptions from platform plugins (logged at debug level only).
        logger.warning("npu-platform is inactive: %s", exc)
        return None


def platform_plugin() -> str | None:
    """The platform class path for vLLM, or ``None`` when there is no NPU (real or emulated)."""
    decision = _detect_or_warn()
    if decision is None:
        return None
    if decision.target is Target.REAL:
        return NPU_PLATFORM
    if decision.target is Target.EMULATED:
        return EMULATED_PLATFORM
    logger.debug("npu-platform stays inactive: %s", decision.reason)
    return None


def register() -> None:
    """Register the attention backend, custom ops and sleep backend (once per process)."""
    decision = _detect_or_warn()
    if decision is None or not decision.is_npu:
        return
    from npu_platform.vllm.plugin import register_all

    register_all()
