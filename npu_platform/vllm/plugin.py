"""What the ``vllm.general_plugins`` entry point registers, once per process.

vLLM calls general plugins in many processes (the API server, the engine core, every worker,
argument parsing) and sometimes more than once in one process; :func:`register_all` is
idempotent and cheap on every call after the first.

It registers, when the NPU platform is vLLM's current platform:

* the attention backend ``NPU_ATTN`` (so ``--attention-backend NPU_ATTN`` parses and the
  attention layer can look its name up in ``AttentionBackendEnum``);
* out-of-tree replacements for the custom ops ``RMSNorm``, ``RotaryEmbedding`` (neox and
  GPT-J style) and ``SiluAndMul`` that call :mod:`npu_platform.ops`;
* the sleep-mode backend ``npu`` (``SleepModeBackendFactory``, present since vLLM 0.32).
"""

from __future__ import annotations

import logging
import threading

logger = logging.getLogger("vllm.npu_platform")

_lock = threading.Lock()
_done = False
#: What this process registered, in order (tests read it; each name appears at most once).
registered: list[str] = []


def _our_platform_is_current() -> bool:
    from vllm.platforms import current_platform

    from npu_platform.vllm.platform import NPUPlatform

    return isinstance(current_platform, NPUPlatform)


def register_all() -> bool:
    """Register everything (first call) or nothing (later calls). True if this call did."""
    global _done
    if _done:
        return False
    with _lock:
        if _done:
            return False
        if not _our_platform_is_current():
            # Emulation or an NPU was detected but another platform won (for example
            # VLLM_TARGET_DEVICE=cpu): registering our ops would only get in its way.
            logger.debug("npu-platform: vLLM's platform is not ours; registering nothing")
            _done = True
            return False
        _register_attention_backend()
        _register_custom_ops()
        _register_sleep_backend()
        _done = True
        return True


def _register_attention_backend() -> None:
    from vllm.v1.attention.backends.registry import AttentionBackendEnum, register_backend

    from npu_platform.vllm.platform import ATTENTION_BACKEND_NAME, ATTENTION_BACKEND_PATH

    if ATTENTION_BACKEND_NAME not in AttentionBackendEnum.__members__:
        register_backend(ATTENTION_BACKEND_NAME, ATTENTION_BACKEND_PATH)
        registered.append(f"attention:{ATTENTION_BACKEND_NAME}")


def _register_custom_ops() -> None:
    from vllm.model_executor.custom_op import CustomOp, op_registry_oot

    from npu_platform.vllm import custom_ops

    for name, cls in custom_ops.OOT_OPS.items():
        existing = op_registry_oot.get(name)
        if existing is cls:
            continue
        if existing is not None:
            logger.warning(
                "npu-platform: custom op %s is already replaced by %s.%s; leaving it.",
                name,
                existing.__module__,
                existing.__qualname__,
            )
            continue
        CustomOp.register_oot(cls, name=name)
        registered.append(f"custom_op:{name}")


def _register_sleep_backend() -> None:
    try:
        from vllm.device_allocator.sleep_mode_backend import SleepModeBackendFactory
    except ImportError:  # vLLM < 0.32: sleep goes through NPUWorker.sleep/wake_up only
        return

    from npu_platform.vllm.platform import SLEEP_BACKEND_NAME

    if SLEEP_BACKEND_NAME not in SleepModeBackendFactory._registry:
        SleepModeBackendFactory.register_backend(
            SLEEP_BACKEND_NAME, "npu_platform.vllm.sleep", "NPUSleepModeBackend"
        )
        registered.append(f"sleep_backend:{SLEEP_BACKEND_NAME}")
