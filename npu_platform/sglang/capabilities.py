"""What sglang's NPU path may assume on this NPU: Triton kernels and graph capture.

sglang's in-tree ``NPUSRTPlatform`` declares ``supports_triton=True`` and
``graph_capture=True``: on Ascend it expects triton-ascend (Triton with an Ascend backend)
and torch_npu's NPU graphs. :class:`npu_platform.sglang.platform.NPUPlatform` asks instead:

* :func:`triton_backend` - is there a Triton backend whose driver is active for the NPU?
  triton-ascend registers one (backend ``npu`` or ``ascend``); the ``triton`` that vLLM and
  sglang pull in from the package index has only ``nvidia`` and ``amd``, and any of their
  kernels sglang launches on an ``npu`` tensor fails with Triton's "0 active drivers".
* :func:`graph_support` - does ``torch.npu`` offer ``NPUGraph`` with capture updates
  (``auto_dispatch_capture``), which sglang's NPU graph runner uses?

Where Triton cannot launch, the platform reports ``supports_triton=False`` (sglang then
uses its torch-native allocator and KV writers) and :func:`register_triton_fallbacks` gives
torch-native versions of the Triton kernels sglang's NPU path launches without asking the
platform: the logits cast/softcap of ``sglang.kernels.ops.activation.softcap``, used for
bf16/fp16 logits when a graph keeps a logits buffer. Each decision is logged once per process
on sglang's logger with its reason.
"""

from __future__ import annotations

import logging
from typing import Any

logger = logging.getLogger("sglang.srt.platforms.npu_platform")

#: Names under which a Triton backend for Ascend NPUs registers (triton-ascend).
NPU_TRITON_BACKENDS = ("npu", "ascend")
SOFTCAP_TARGET = "sglang.kernels.ops.activation.softcap._softcap_logits"

_fallbacks_registered = False


def triton_backend() -> tuple[bool, str]:
    """(Triton can launch kernels on the NPU, why)."""
    try:
        from triton.backends import backends
    except Exception as exc:  # no triton at all
        return False, f"triton is not importable ({type(exc).__name__}: {exc})"
    for name in NPU_TRITON_BACKENDS:
        backend = backends.get(name)
        if backend is None:
            continue
        try:
            if backend.driver.is_active():
                return True, f"Triton backend {name!r} is active"
        except Exception as exc:
            return False, f"Triton backend {name!r} failed its activity check: {exc}"
        return False, f"Triton backend {name!r} is installed but not active"
    return False, (
        "no Triton backend for Ascend NPUs is installed (Triton has "
        f"{', '.join(sorted(backends)) or 'no backends'}; triton-ascend provides one)"
    )


def graph_support() -> tuple[bool, str]:
    """(NPU graph capture as sglang's NPU graph runner uses it is available, why)."""
    from npu_platform import device

    graph_cls = device.backend().graph_class()
    if graph_cls is None:
        return False, "torch.npu has no NPUGraph (torch_npu without graph capture)"
    if not hasattr(graph_cls, "update"):
        return False, "torch.npu.NPUGraph cannot update captured arguments (torch_npu too old)"
    return True, "torch.npu.NPUGraph supports capture with argument updates"


def softcap_logits_native(
    full_logits: Any, final_logit_softcapping: float | None, output: Any = None
) -> Any:
    """Torch-native ``_softcap_logits``: ``tanh(x / cap) * cap`` when ``cap`` is given, in
    place or (with ``output``) into a float32 tensor of the same shape, as the Triton kernel."""
    import torch

    values = full_logits.float() if output is not None else full_logits
    if final_logit_softcapping is not None:
        values = torch.tanh(values / final_logit_softcapping) * final_logit_softcapping
    if output is None:
        if values is not full_logits:
            full_logits.copy_(values)
        return full_logits
    output.copy_(values)
    return output


def register_triton_fallbacks() -> bool:
    """Register the torch-native replacements on sglang's ``HookRegistry`` (once)."""
    global _fallbacks_registered
    if _fallbacks_registered:
        return True
    from sglang.srt.plugins.hook_registry import HookRegistry, HookType

    HookRegistry.register(SOFTCAP_TARGET, softcap_logits_native, HookType.REPLACE)
    _fallbacks_registered = True
    return True
