"""``sgl_kernel_npu.kimi_k3.attn_residual`` stand-in.

Imported by sglang; not runnable on the emulated NPU (calls raise NotImplementedError).
"""

from sgl_kernel_npu._emulation import Unemulated

__all__ = ["mix_fused"]

mix_fused = Unemulated(__name__, "mix_fused")
