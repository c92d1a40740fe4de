"""vLLM's entry points into npu-platform (installed as ``npu_platform.entry_points.vllm``).

pyproject registers two functions here:

* ``vllm.platform_plugins`` -> :func:`platform_plugin`. vLLM calls it in every process the
  first time ``vllm.platforms.current_platform`` is touched. It answers the class path of our
  platform when :func:`npu_platform.detect.detect` sees a real or an emulated NPU and the
  installed vLLM is inside :data:`npu_platform.versions.SUPPORTED`, and ``None`` otherwise
  (outside the range with one warning: vLLM then resolves what it would without us). It
  must stay cheap: on a machine without torch_npu and with emulation off it imports neither
  torch nor anything of vLLM's.
* ``vllm.general_plugins`` -> :func:`register`. vLLM calls it once per process (engine
  core, workers, argument parsing). It registers our attention backend, custom ops and
  sleep-mode backend, idempotently, and only when the NPU platform is the one in use (an
  NPU, and a supported vLLM).

This module imports the standard library, :mod:`npu_platform.detect` and, when there is an
NPU, :mod:`npu_platform.versions` (``packaging``; the vLLM version is read from metadata).
"""

from __future__ import annotations

import functools
import logging

from npu_platform.detect import Detection, detect
from npu_platform.errors import ConfigError

logger = logging.getLogger("vllm.npu_platform")

NPU_PLATFORM = "npu_platform.vllm.platform.NPUPlatform"


def _detect_or_warn() -> Detection | None:
    try:
        return detect()
    except ConfigError as exc:
        # vLLM swallows exceptions from platform plugins (logged at debug level only).
        logger.warning("npu-platform is inactive: %s", exc)
        return None


@functools.cache
def _vllm_supported() -> bool:
    """Is the installed vLLM inside :data:`npu_platform.versions.SUPPORTED`? When it is not,
    one warning per process says so (read from metadata: vLLM is not imported)."""
    from npu_platform import versions

    status = versions.support("vllm")
    if status.supported is False:
        logger.warning(
            "npu-platform is inactive: the installed vLLM %s is outside the range it supports "
            "(%s, the versions it is tested with), so vLLM runs without the NPU platform. "
            "Install a supported vLLM: pip install '%s'.",
            status.installed,
            status.requirement,
            status.requirement,
        )
        return False
    return True


def platform_plugin() -> str | None:
    """The platform class path for vLLM, or ``None`` when there is no NPU (real or emulated)
    or the installed vLLM is outside the supported range (then with one warning)."""
    decision = _detect_or_warn()
    if decision is None:
        return None
    if decision.is_npu and not _vllm_supported():
        return None
    if decision.is_npu:
        return NPU_PLATFORM
    logger.debug("npu-platform stays inactive: %s", decision.reason)
    return None


def register() -> None:
    """Register the attention backend, custom ops and sleep backend (once per process)."""
    decision = _detect_or_warn()
    if decision is None or not decision.is_npu or not _vllm_supported():
        return
    from npu_platform.vllm.plugin import register_all

    register_all()
