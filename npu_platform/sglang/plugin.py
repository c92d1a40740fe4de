"""What the ``sglang.srt.plugins`` general plugin does on an NPU (real or emulated).

sglang's ``load_plugins()`` calls the entry point once per process (engine, scheduler,
detokenizer, DP controller), then applies every hook registered on ``HookRegistry``. We:

* install the ``torch_memory_saver`` redirect (idempotent: the platform entry point has
  usually done it already; this also covers processes where sglang resolved another
  platform, e.g. one chosen with ``SGLANG_PLATFORM``);
* register the AROUND hook that lets the NPU graph backend call the adapter's
  ``cuda_graph`` with the graph positionally and ``auto_dispatch_capture=True``;
* register the checks of release/resume requests (:mod:`npu_platform.sglang.memory_requests`).
"""

from __future__ import annotations

from npu_platform.sglang import memory_requests, memory_saver


def register_all() -> None:
    memory_saver.install()
    memory_saver.register_hooks()
    memory_requests.register_hooks()
