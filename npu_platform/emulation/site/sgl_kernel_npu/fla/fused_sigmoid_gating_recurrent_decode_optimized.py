"""``sgl_kernel_npu.fla.fused_sigmoid_gating_recurrent_decode_optimized`` stand-in.

Imported by sglang; not runnable on the emulated NPU (calls raise NotImplementedError).
"""

from sgl_kernel_npu._emulation import Unemulated

__all__ = ["fused_sigmoid_gating_delta_rule_update_decode_npu"]

fused_sigmoid_gating_delta_rule_update_decode_npu = Unemulated(
    __name__, "fused_sigmoid_gating_delta_rule_update_decode_npu"
)
