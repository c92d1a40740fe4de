"""``sgl_kernel_npu.norm.fused_split_qk_norm`` stand-in.

Imported by sglang; not runnable on the emulated NPU (calls raise NotImplementedError).
"""

from sgl_kernel_npu._emulation import Unemulated

__all__ = ["fused_split_qk_norm"]

fused_split_qk_norm = Unemulated(__name__, "fused_split_qk_norm")
