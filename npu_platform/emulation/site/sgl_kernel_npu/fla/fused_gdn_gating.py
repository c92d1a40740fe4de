"""``sgl_kernel_npu.fla.fused_gdn_gating`` stand-in.

Imported by sglang; not runnable on the emulated NPU (calls raise NotImplementedError).
"""

from sgl_kernel_npu._emulation import Unemulated

__all__ = ["fused_gdn_gating_kernel_without_sigmoid", "fused_gdn_gating_npu"]

fused_gdn_gating_kernel_without_sigmoid = Unemulated(
    __name__, "fused_gdn_gating_kernel_without_sigmoid"
)
fused_gdn_gating_npu = Unemulated(__name__, "fused_gdn_gating_npu")
