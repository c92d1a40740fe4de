"""CUDA spellings sent to the NPU: torch_npu's ``transfer_to_npu``, for programs written for CUDA.

``import torch_npu.contrib.transfer_to_npu``, torch_npu's own migration module, does the
work: it replaces ``torch.cuda.*`` (and ``torch.cuda.amp.*``) with ``torch.npu.*``,
``Tensor.cuda``/``Module.cuda`` with ``.npu``, maps ``"cuda"`` device arguments of the tensor
factories, ``Tensor.to``/``new_*``, ``Module.to``/``to_empty``, ``torch.load`` and DDP/FSDP
to ``"npu"``, and ``nccl`` to ``hccl`` in ``init_process_group``. As side effects it also
makes ``torch.cuda.is_available()`` True, disables ``torch.jit.script`` and reports Triton
as absent. Added here, where it leaves gaps: ``torch.cuda.CUDAGraph`` is
``torch.npu.NPUGraph`` and ``torch.cuda.graph(g, pool, stream, capture_error_mode)`` calls
``torch.npu.graph`` with keywords (its fourth positional parameter differs), and
``torch._C._cuda_cudaCachingAllocator_is_enabled``, which inductor asks for
``torch.compile(mode="reduce-overhead")`` once ``torch.cuda.is_available()`` is True, answers
for the NPU (a torch build without CUDA has no such binding).

Those side effects are process-wide, so this patch is not in the default set: vLLM and
sglang have native NPU paths, and a process where ``torch.cuda.is_available()`` answers True
sends them down CUDA-only paths. It is applied when ``NPU_PLATFORM_PATCH_ONLY`` names
``cuda`` (for example ``NPU_PLATFORM_PATCH_ONLY=cuda,distributed,flash_attn,torch_memory_saver``
for dInfer).
"""

from __future__ import annotations

import threading
from typing import Any

_lock = threading.Lock()
_applied: str | None = None


def apply() -> str:
    """Apply the redirection once per process; returns what was done."""
    global _applied
    with _lock:
        if _applied is None:
            _applied = _apply()
        return _applied


def _apply() -> str:
    import torch
    import torch_npu  # noqa: F401  (registers torch.npu)
    import torch_npu.contrib.transfer_to_npu  # noqa: F401  (patches torch on import)

    npu = torch.npu
    torch.cuda.CUDAGraph = npu.NPUGraph  # type: ignore[attr-defined,misc]

    def graph(
        cuda_graph: Any,
        pool: Any = None,
        stream: Any = None,
        capture_error_mode: str = "global",
        **kwargs: Any,
    ) -> Any:
        return npu.graph(
            cuda_graph,
            pool=pool,
            stream=stream,
            capture_error_mode=capture_error_mode,
            **kwargs,
        )

    torch.cuda.graph = graph  # type: ignore[assignment]
    if not hasattr(torch._C, "_cuda_cudaCachingAllocator_is_enabled"):
        # Inductor's CUDA-graph check (torch.compile(mode="reduce-overhead")) asks this
        # binding once torch.cuda.is_available() is True; a torch build without CUDA lacks
        # it. It answers for the NPU's caching allocator; inductor then skips CUDA graphs
        # for the npu device and compiles without them.
        torch._C._cuda_cudaCachingAllocator_is_enabled = _npu_caching_allocator_is_enabled  # type: ignore[attr-defined]
    return "torch_npu.contrib.transfer_to_npu, plus torch.cuda.CUDAGraph/graph on NPU graphs"


def _npu_caching_allocator_is_enabled() -> bool:
    """Whether torch_npu's caching allocator is on (``PYTORCH_NO_NPU_MEMORY_CACHING`` unset)."""
    import os

    return os.environ.get("PYTORCH_NO_NPU_MEMORY_CACHING", "") in ("", "0")
