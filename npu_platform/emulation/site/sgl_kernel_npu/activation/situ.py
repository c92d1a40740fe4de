"""``sgl_kernel_npu.activation.situ`` stand-in.

Imported by sglang; not runnable on the emulated NPU (calls raise NotImplementedError).
"""

from sgl_kernel_npu._emulation import Unemulated

__all__ = ["situ", "situ_and_mul"]

situ = Unemulated(__name__, "situ")
situ_and_mul = Unemulated(__name__, "situ_and_mul")
