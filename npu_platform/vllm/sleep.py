"""vLLM sleep mode on the NPU, over npu-platform's sleep/wake memory manager.

vLLM (0.32) lets a platform plug in the mechanism behind ``LLM.sleep()`` /
``LLM.wake_up()`` as a *sleep-mode backend* (``SleepModeBackendFactory``); ours is
registered as ``npu`` by the general plugin and chosen automatically by the platform when
``enable_sleep_mode`` is on. The worker's memory tags map onto memory-manager regions
(:mod:`npu_platform.torch_memory_saver`, whose manager keeps virtual addresses stable, so
tensors stay valid across a pause):

* ``weights``: a region **with** host backup: sleep (level 1) copies the weights to host
  memory and frees the device memory; wake-up maps fresh memory at the same addresses and
  copies them back.
* ``kv_cache``: a region **without** backup: sleep frees it, wake-up maps fresh memory
  (its content is undefined until written). vLLM clears its prefix cache when it goes to sleep.
* ``runtime`` and ``workspace`` (small per-step state and scratch) are not routed to the
  manager: they stay resident, as on a device without sleep mode.

Levels: level 1 offloads the weights and drops the KV cache. Level 2 drops both, weights
included, without a host copy (``MemoryManager.pause(..., discard_backup=True)``): as on
CUDA, the caller restores them after waking the weights up, with vLLM's in-place reload::

    llm.sleep(level=2)
    llm.wake_up(tags=["weights"])           # fresh (zeroed) memory at the same addresses
    llm.collective_rpc("reload_weights")    # or new weights from a trainer
    llm.wake_up(tags=["kv_cache"])

The worker saves and restores the model's buffers (and any
``sleep_preserve_parameter_names``) for level 2, as vLLM's GPU worker does. Selective
wake-up is supported, and so is :meth:`NPUSleepModeBackend.discard` (vLLM's
``release_kv_cache_memory``): it drops tagged memory without a copy, whatever the level.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
from typing import TYPE_CHECKING, Any

from vllm.device_allocator.sleep_mode_backend import SleepModeBackend

if TYPE_CHECKING:
    from vllm.config import VllmConfig

logger = logging.getLogger("vllm.npu_platform")

#: The worker tags routed to the memory manager, and whether each keeps a host backup.
MANAGED_TAGS: dict[str, bool] = {"weights": True, "kv_cache": False}


def available() -> bool:
    """Whether the sleep/wake memory manager can back vLLM's sleep mode here."""
    try:
        return all(
            importlib.util.find_spec(name) is not None
            for name in ("npu_platform.memory.manager", "npu_platform.torch_memory_saver")
        )
    except (ImportError, ValueError):
        return False


def saver() -> Any:
    """The process's memory saver (npu_platform's torch_memory_saver instance)."""
    from npu_platform.torch_memory_saver import torch_memory_saver

    return torch_memory_saver


def _sleep_enabled(vllm_config: VllmConfig) -> bool:
    model_config = vllm_config.model_config
    return bool(model_config is not None and model_config.enable_sleep_mode)


def memory_pool(tag: str, vllm_config: VllmConfig) -> contextlib.AbstractContextManager:
    """Context under which the worker allocates memory tagged ``tag``."""
    if not _sleep_enabled(vllm_config) or tag not in MANAGED_TAGS:
        return contextlib.nullcontext()
    return saver().region(tag, enable_cpu_backup=MANAGED_TAGS[tag])


def memory_stats() -> dict[str, dict[str, int]]:
    """Per-tag byte counts of the memory manager (active, paused, backed up)."""
    stats = saver().manager.stats()
    return {tag: stats[tag] for tag in MANAGED_TAGS if tag in stats}


class NPUSleepModeBackend(SleepModeBackend):
    """``--sleep-mode-backend npu``: pause/resume the worker's tagged memory."""

    @classmethod
    def is_supported(cls) -> bool:
        return available()

    @classmethod
    def preserves_communicators(cls) -> bool:
        return True  # HCCL / gloo groups are not touched

    def suspend(self, level: int = 1) -> None:
        if level not in (1, 2):
            raise ValueError(f"sleep level must be 1 or 2, got {level}")
        self._state = "SUSPENDED"
        manager = saver().manager
        # Level 2 forgets the weights (the caller reloads them): no host copy.
        discard = level == 2
        for tag in MANAGED_TAGS:
            manager.pause(tag, discard_backup=discard)
        logger.info(
            "NPU sleep (level %d): paused %s%s",
            level,
            ", ".join(MANAGED_TAGS),
            " without host copies" if discard else "",
        )

    def discard(self, tags: tuple[str, ...]) -> None:
        """Drop the memory of ``tags`` without preserving it (``wake_up(tags)`` maps fresh
        memory); tags this backend does not manage are ignored."""
        manager = saver().manager
        wanted = [tag for tag in tags if tag in MANAGED_TAGS]
        for tag in wanted:
            manager.pause(tag, discard_backup=True)
        if wanted:
            self._state = "SUSPENDED"
        logger.info("NPU sleep: discarded %s", ", ".join(wanted) or "nothing")

    def resume(self, tags: list[str] | None = None) -> None:
        self._state = "RESUMING"
        wanted = list(MANAGED_TAGS) if tags is None else [t for t in tags if t in MANAGED_TAGS]
        ignored = sorted(set(tags or ()) - set(MANAGED_TAGS))
        if ignored:
            logger.debug("NPU wake-up: tags %s hold no paused memory here", ignored)
        memory = saver()
        for tag in wanted:
            memory.resume(tag)
        paused = {tag for tag, stats in memory_stats().items() if stats.get("paused_bytes", 0) > 0}
        self._state = "SUSPENDED" if paused else "RUNNING"
