"""``sgl_kernel_npu.norm.l1_norm`` stand-in.

Imported by sglang; not runnable on the emulated NPU (calls raise NotImplementedError).
"""

from sgl_kernel_npu._emulation import Unemulated

__all__ = ["l1_norm"]

l1_norm = Unemulated(__name__, "l1_norm")
