"""``sgl_kernel_npu.norm.rmsnorm_split`` stand-in.

Imported by sglang; not runnable on the emulated NPU (calls raise NotImplementedError).
"""

from sgl_kernel_npu._emulation import Unemulated

__all__ = ["fused_rsqrt_mul", "fused_variance"]

fused_rsqrt_mul = Unemulated(__name__, "fused_rsqrt_mul")
fused_variance = Unemulated(__name__, "fused_variance")
