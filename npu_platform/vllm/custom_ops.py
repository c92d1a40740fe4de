"""Out-of-tree replacements of vLLM custom ops, routed to :mod:`npu_platform.ops`.

Registered with ``CustomOp.register_oot`` under the in-tree class names (``RMSNorm``,
``RotaryEmbedding``, ``SiluAndMul``), so every place vLLM instantiates those classes gets
ours. Each subclass only overrides ``forward_oot``, which vLLM dispatches to on an
out-of-tree platform when the op is enabled (our platform sets ``custom_ops=["all"]``).
Cases the NPU kernels do not cover fall back to vLLM's own ``forward_native``.
"""

from __future__ import annotations

import torch
from vllm.model_executor.layers.activation import SiluAndMul
from vllm.model_executor.layers.layernorm import RMSNorm
from vllm.model_executor.layers.rotary_embedding.base import RotaryEmbedding

from npu_platform import ops


class NPURMSNorm(RMSNorm):
    """RMSNorm and fused add + RMSNorm on ``npu_rms_norm`` / ``npu_add_rms_norm``."""

    def forward_oot(
        self,
        x: torch.Tensor,
        residual: torch.Tensor | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        if self.variance_size_override is not None or not self.has_weight:
            # Partial-width variance and weightless norms have no NPU kernel.
            return self.forward_native(x, residual)
        weight = self.weight.data
        if residual is None:
            return ops.rms_norm(x, weight, self.variance_epsilon)
        return ops.add_rms_norm(x, residual, weight, self.variance_epsilon)


class NPURotaryEmbedding(RotaryEmbedding):
    """Rotary embedding (GPT-NeoX rotate-half and GPT-J interleaved) on ``npu_rotary_mul``."""

    def forward_oot(
        self,
        positions: torch.Tensor,
        query: torch.Tensor,
        key: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        cos_sin_cache = self._match_cos_sin_cache_dtype(query)
        positions = positions.flatten()
        cos, sin = cos_sin_cache.index_select(0, positions).chunk(2, dim=-1)
        return ops.rotary_embedding(
            query,
            key,
            cos,
            sin,
            is_neox=self.is_neox_style,
            head_size=self.head_size,
        )


class NPUSiluAndMul(SiluAndMul):
    """SwiGLU activation on ``npu_swiglu``."""

    def forward_oot(self, x: torch.Tensor) -> torch.Tensor:
        return ops.silu_and_mul(x)


#: In-tree class name -> our replacement (what the general plugin registers).
OOT_OPS: dict[str, type] = {
    "RMSNorm": NPURMSNorm,
    "RotaryEmbedding": NPURotaryEmbedding,
    "SiluAndMul": NPUSiluAndMul,
}
