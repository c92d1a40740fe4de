"""``sgl_kernel_npu.fla.layernorm_gated`` stand-in.

Imported by sglang; not runnable on the emulated NPU (calls raise NotImplementedError).
"""

from sgl_kernel_npu._emulation import Unemulated

__all__ = ["layer_norm_fwd_npu"]

layer_norm_fwd_npu = Unemulated(__name__, "layer_norm_fwd_npu")
