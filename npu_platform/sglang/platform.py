"""npu_platform's sglang platform for Ascend NPUs.

``NPUPlatform`` subclasses sglang's in-tree ``NPUSRTPlatform`` and keeps its identity
(``PlatformEnum.NPU``, device ``"npu"``): every in-tree NPU code path stays selected (the
``ascend`` attention backend, the NPU graph runner, the NPU KV pools and paged allocator,
``init_npu_backend()``). What it adds:

* the memory saver: constructing the platform (which sglang does in every process that
  resolves ``current_platform``) installs the ``torch_memory_saver`` redirect and registers
  the adapter fix on ``HookRegistry`` (:mod:`npu_platform.sglang.memory_saver`);
* capabilities as this NPU has them (:mod:`npu_platform.sglang.capabilities`): the in-tree
  class declares Triton and graph capture unconditionally; ours declares Triton only where a
  Triton backend for the NPU is active (triton-ascend), with torch-native replacements for
  the Triton kernels sglang launches without asking, and graph capture only where
  ``torch.npu.NPUGraph`` supports it. Each "no" is logged with its reason on sglang's logger
  when the server arguments are resolved;
* server-argument defaults and checks (:func:`npu_platform.sglang.server_args.apply_defaults`),
  e.g. a clear error for ``--enable-memory-saver`` with the preload hook mode.

sglang loads this class by name on an NPU, real or emulated, and nowhere else (see
``npu_platform.entry_points.sglang``).
"""

from __future__ import annotations

from typing import Any

import msgspec
from sglang.srt.platforms.npu import NPUSRTPlatform

from npu_platform.sglang import capabilities, memory_requests, memory_saver, server_args

logger = capabilities.logger


class NPUPlatform(NPUSRTPlatform):
    """sglang's NPU platform plus npu-platform's memory saver, capabilities and checks."""

    def __init__(self) -> None:
        super().__init__()
        memory_saver.install()
        try:
            memory_saver.register_hooks()
            memory_requests.register_hooks()
        except ImportError as exc:  # a trimmed sglang without the plugin framework
            logger.warning("npu-platform: cannot register sglang hooks: %s", exc)
        self.triton, self.triton_reason = capabilities.triton_backend()
        self.graphs, self.graphs_reason = capabilities.graph_support()
        # An instance attribute: sglang reads current_platform.capabilities.
        self.capabilities = msgspec.structs.replace(
            NPUSRTPlatform.capabilities,
            supports_triton=NPUSRTPlatform.capabilities.supports_triton and self.triton,
            graph_capture=NPUSRTPlatform.capabilities.graph_capture and self.graphs,
        )
        if not self.triton:
            try:
                capabilities.register_triton_fallbacks()
            except ImportError as exc:
                logger.warning("npu-platform: cannot register sglang hooks: %s", exc)

    def apply_server_args_defaults(self, server_args_view: Any) -> None:
        super().apply_server_args_defaults(server_args_view)
        if not self.triton:
            logger.info(
                "npu-platform: Triton kernels off on this NPU: %s; sglang uses its "
                "torch-native allocator and KV writers, and npu-platform's torch-native "
                "logits cast",
                self.triton_reason,
            )
        if not self.graphs:
            logger.info(
                "npu-platform: NPU graphs off (decode runs eagerly): %s", self.graphs_reason
            )
        server_args.apply_defaults(server_args_view)
