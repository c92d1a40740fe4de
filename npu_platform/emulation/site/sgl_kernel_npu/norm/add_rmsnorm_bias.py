"""``sgl_kernel_npu.norm.add_rmsnorm_bias`` stand-in.

Imported by sglang; not runnable on the emulated NPU (calls raise NotImplementedError).
"""

from sgl_kernel_npu._emulation import Unemulated

__all__ = ["add_rmsnorm_bias"]

add_rmsnorm_bias = Unemulated(__name__, "add_rmsnorm_bias")
