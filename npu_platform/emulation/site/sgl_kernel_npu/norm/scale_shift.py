"""``sgl_kernel_npu.norm.scale_shift`` stand-in.

Imported by sglang; not runnable on the emulated NPU (calls raise NotImplementedError).
"""

from sgl_kernel_npu._emulation import Unemulated

__all__ = ["fused_scale_shift"]

fused_scale_shift = Unemulated(__name__, "fused_scale_shift")
