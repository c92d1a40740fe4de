"""npu_platform's sglang platform for Ascend NPUs.

``NPUPlatform`` subclasses sglang's in-tree ``NPUSRTPlatform`` and keeps its identity
(``PlatformEnum.NPU``, device ``"npu"``): every in-tree NPU code path stays selected (the
``ascend`` attention backend, the NPU graph runner, the NPU KV pools,
``init_npu_backend()``). What it adds:

* the memory saver: constructing the platform (which sglang does in every process that
  resolves ``current_platform``) installs the ``torch_memory_saver`` redirect and registers
  the adapter fix on ``HookRegistry`` (:mod:`npu_platform.sglang.memory_saver`);
* server-argument defaults and checks (:func:`npu_platform.sglang.server_args.apply_defaults`),
  e.g. a clear error for ``--enable-memory-saver`` with the preload hook mode.

sglang loads this class by name on an NPU, real or emulated, and nowhere else (see
``npu_platform.entry_points.sglang``).
"""

from __future__ import annotations

import logging
from typing import Any

from sglang.srt.platforms.npu import NPUSRTPlatform

from npu_platform.sglang import memory_saver, server_args

logger = logging.getLogger("npu_platform.sglang")


class NPUPlatform(NPUSRTPlatform):
    """sglang's NPU platform plus npu-platform's memory saver and server-argument checks."""

    def __init__(self) -> None:
        super().__init__()
        memory_saver.install()
        try:
            memory_saver.register_hooks()
        except ImportError as exc:  # a trimmed sglang without the plugin framework
            logger.warning("npu-platform: cannot register sglang hooks: %s", exc)

    def apply_server_args_defaults(self, server_args_view: Any) -> None:
        super().apply_server_args_defaults(server_args_view)
        server_args.apply_defaults(server_args_view)
