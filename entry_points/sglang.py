"""sglang's entry points into npu-platform (installed as ``npu_platform.entry_points.sglang``).

pyproject registers two functions here, both under the name ``npu_platform`` (so
``SGLANG_PLATFORM=npu_platform`` selects the platform and ``SGLANG_PLUGINS`` lists it):

* ``sglang.srt.platforms`` -> :func:`platform_plugin`. sglang calls it in every process
  the first time ``sglang.srt.platforms.current_platform`` is touched (which
  ``import sglang.srt.utils.common`` does). It answers the class path of our platform on
  an NPU (real or emulated) and ``None`` everywhere else, so sglang then resolves exactly
  what it would without the plugin. On an NPU it also installs the
  ``torch_memory_saver`` redirect (a finder on ``sys.meta_path``; no torch import), which
  is in place before sglang's memory-saver adapter is imported.
* ``sglang.srt.plugins`` -> :func:`register`. sglang's ``load_plugins()`` calls it once per
  process; on an NPU (real or emulated) it installs the redirect and registers our
  ``HookRegistry`` hooks.

Without torch_npu and with emulation off, both return after a cheap detection that imports
neither torch nor sglang. This module imports the standard library and
:mod:`npu_platform.detect` only.
"""

from __future__ import annotations

import logging
import os

from npu_platform.detect import detect

logger = logging.getLogger("npu_platform.sglang")

NPU_PLATFORM = "npu_platform.sglang.platform.NPUPlatform"


def _cpu_engine_requested() -> bool:
    # sglang's own opt-in for its CPU engine wins over any accelerator (as in its
    # _resolve_platform fallbacks); we step aside so it keeps working on Ascend hosts.
    return os.environ.get("SGLANG_USE_CPU_ENGINE", "0") == "1"


def platform_plugin() -> str | None:
    """Our platform's class path on an NPU (real or emulated), else ``None``."""
    if _cpu_engine_requested():
        logger.debug("npu-platform stays inactive for sglang: SGLANG_USE_CPU_ENGINE=1")
        return None
    decision = detect()
    if not decision.is_npu:
        logger.debug("npu-platform stays inactive for sglang: %s", decision.reason)
        return None
    from npu_platform.sglang import memory_saver

    memory_saver.install()
    return NPU_PLATFORM


def register() -> None:
    """General plugin: memory-saver redirect and HookRegistry hooks, on NPUs only."""
    if _cpu_engine_requested() or not detect().is_npu:
        return
    from npu_platform.sglang.plugin import register_all

    register_all()
