"""Server-argument defaults and checks of npu_platform's sglang platform.

sglang calls ``current_platform.apply_server_args_defaults(cfg)`` once while it resolves
``ServerArgs`` (``srt/arg_groups/platform_hook.py::handle_platform_defaults``), after its own
NPU defaults (``handle_npu_backends``) and the device auto-detection. ``cfg`` reads the
arguments as resolved so far; every field assigned on it becomes a recorded default
(``record_foreign_defaults``). An exception stops the launch with its message.

:func:`apply_defaults` works on any object with the ``ServerArgs`` field names, which
keeps it testable without sglang's resolution machinery.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

from npu_platform.errors import NPUPlatformError

logger = logging.getLogger("npu_platform.sglang")

#: sglang's switch for pausable graph memory (read by its graph backends).
CUDA_GRAPH_SAVER_ENV = "SGLANG_MEMORY_SAVER_CUDA_GRAPH"
_TRUE = ("1", "true", "yes", "on")


class UnsupportedSetting(NPUPlatformError, ValueError):
    """A server setting that cannot work on an Ascend NPU; the message says what to do."""


def _device_type(device: object) -> str | None:
    if device is None:
        return None
    return str(device).split(":", 1)[0]


def _preloaded_memory_saver(environ: Mapping[str, str]) -> list[str]:
    """Entries of ``LD_PRELOAD`` that are torch_memory_saver's preload-mode library."""
    entries = environ.get("LD_PRELOAD", "").replace(":", " ").split()
    return [e for e in entries if "torch_memory_saver" in os.path.basename(e)]


def check_memory_saver(environ: Mapping[str, str] | None = None) -> None:
    """Raise :class:`UnsupportedSetting` where ``--enable-memory-saver`` cannot work.

    * ``hook_mode="preload"``: upstream torch_memory_saver's preload mode works by
      ``LD_PRELOAD``-ing a library that intercepts ``cudaMalloc``; torch_npu reaches its
      allocator through ``dlsym``, so nothing would be intercepted and nothing released.
      sglang itself never selects preload mode on NPU (it sets ``hook_mode`` only on XPU,
      to ``"torch"``), so this is an ``LD_PRELOAD`` set by hand or by another launcher.
    * ``torch_memory_saver`` in this process is not npu_platform's (the redirect could not
      be installed, or something replaced it): sglang would call a CUDA-only library.
    """
    env = os.environ if environ is None else environ
    preloaded = _preloaded_memory_saver(env)
    if preloaded:
        raise UnsupportedSetting(
            "--enable-memory-saver with torch_memory_saver's preload hook mode cannot work on "
            f"an Ascend NPU: LD_PRELOAD contains {', '.join(preloaded)}, but torch_npu "
            "finds its device allocator through dlsym, so a preloaded library never sees its "
            "allocations and nothing could be released. Remove it from LD_PRELOAD: "
            "npu-platform's memory saver uses hook mode 'torch' (torch_npu's pluggable "
            "allocator) and needs no preloading."
        )
    from npu_platform.sglang import memory_saver

    if memory_saver.choice() == memory_saver.INSTALLED:
        return  # NPU_PLATFORM_TORCH_MEMORY_SAVER=installed: the user's package, unchecked
    memory_saver.install()
    state = memory_saver.status()
    saver_module = state.torch_memory_saver
    if saver_module not in (None, "npu_platform") or state.adapter_backed_by_npu_platform is False:
        raise UnsupportedSetting(
            "--enable-memory-saver on an Ascend NPU needs npu-platform's torch_memory_saver, "
            f"but this process uses {saver_module or 'another implementation'} (the "
            "CUDA build, or the sgl-kernel-npu port) and it could not be replaced. Make sure "
            "nothing imports torch_memory_saver before sglang, or import "
            "npu_platform.sglang.memory_saver and call install() first."
        )
    facade = memory_saver._facade()
    mode = getattr(facade.torch_memory_saver, "hook_mode", "torch")
    if mode != "torch":  # the facade refuses anything else; belt and braces
        raise UnsupportedSetting(
            f"torch_memory_saver.hook_mode is {mode!r}; only 'torch' works on an Ascend NPU"
        )


#: Attention backends whose NPU kernels take float16/bfloat16 only (sglang's ``ascend``).
_HALF_ONLY_BACKENDS = (None, "ascend")
_FLOAT32 = ("float32", "float")


def check_dtype(cfg: Any) -> None:
    """Raise :class:`UnsupportedSetting` for ``--dtype float32`` with the ascend backend.

    sglang's ``ascend`` attention backend computes attention with ATB's
    SelfAttentionOperation (PREFIX_ENCODER, prefill), ATB's PagedAttentionOperation (eager
    decode) and ``npu_fused_infer_attention_score`` (graph decode), and writes the KV cache
    with ATB's ReshapeAndCacheOperation. Their documentation accepts float16 and bfloat16
    only on Atlas A2/A3 (CANN ATB operator pages; torch_npu 2.13.0 ``_op_plugin_docs.py``
    for FIA; the rules are in :mod:`npu_platform.spec.rules`), so a float32 model would fail
    at its first attention call. ``--dtype auto`` never gives float32 (sglang serves float32
    checkpoints in float16).
    """
    dtype = str(getattr(cfg, "dtype", "auto") or "auto").lower()
    if dtype not in _FLOAT32:
        return
    backends = {
        getattr(cfg, name, None)
        for name in ("attention_backend", "prefill_attention_backend", "decode_attention_backend")
    }
    if backends <= set(_HALF_ONLY_BACKENDS):
        raise UnsupportedSetting(
            f"--dtype {dtype} cannot run on an Ascend NPU with sglang's ascend attention "
            "backend: its kernels (ATB SelfAttention/PagedAttention/ReshapeAndCache and "
            "npu_fused_infer_attention_score) accept float16 and bfloat16 only. Use "
            "--dtype bfloat16 (or float16, or auto)."
        )


def apply_defaults(cfg: Any, environ: Mapping[str, str] | None = None) -> None:
    """npu_platform's defaults and checks for sglang's ``ServerArgs`` (see module doc)."""
    env = os.environ if environ is None else environ
    device = _device_type(getattr(cfg, "device", None))
    if device is None:
        # sglang auto-detects "npu" before this runs; keep it so if that ever changes.
        cfg.device = "npu"
        device = "npu"
    if device != "npu":
        logger.warning(
            "npu-platform's Ascend platform is active but --device is %r; its NPU defaults "
            "and checks are skipped. Pass --device npu (or leave it unset) to run on the NPU.",
            device,
        )
        return

    check_dtype(cfg)
    memory_saver_on = bool(getattr(cfg, "enable_memory_saver", False))
    backups = [
        flag
        for flag in ("enable_weights_cpu_backup", "enable_draft_weights_cpu_backup")
        if getattr(cfg, flag, False)
    ]
    if not memory_saver_on:
        if backups:
            logger.warning(
                "%s has no effect without --enable-memory-saver",
                ", ".join("--" + b.replace("_", "-") for b in backups),
            )
        return
    check_memory_saver(env)
    if env.get(CUDA_GRAPH_SAVER_ENV, "").strip().lower() not in _TRUE:
        logger.info(
            "--enable-memory-saver on NPU: graph memory is released only with %s=1 "
            "(release_memory_occupation(tags=['cuda_graph']) frees nothing otherwise)",
            CUDA_GRAPH_SAVER_ENV,
        )
