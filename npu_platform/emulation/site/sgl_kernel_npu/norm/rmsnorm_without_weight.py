"""``sgl_kernel_npu.norm.rmsnorm_without_weight`` stand-in.

Imported by sglang; not runnable on the emulated NPU (calls raise NotImplementedError).
"""

from sgl_kernel_npu._emulation import Unemulated

__all__ = ["fused_rmsnorm_without_weight"]

fused_rmsnorm_without_weight = Unemulated(__name__, "fused_rmsnorm_without_weight")
