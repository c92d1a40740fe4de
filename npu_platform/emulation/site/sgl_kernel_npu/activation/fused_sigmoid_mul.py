"""``sgl_kernel_npu.activation.fused_sigmoid_mul`` stand-in.

Imported by sglang; not runnable on the emulated NPU (calls raise NotImplementedError).
"""

from sgl_kernel_npu._emulation import Unemulated

__all__ = ["fused_sigmoid_mul", "fused_sigmoid_mul_broadcast"]

fused_sigmoid_mul = Unemulated(__name__, "fused_sigmoid_mul")
fused_sigmoid_mul_broadcast = Unemulated(__name__, "fused_sigmoid_mul_broadcast")
