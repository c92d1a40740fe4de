"""``sgl_kernel_npu.norm.split_qkv_tp_rmsnorm_rope`` stand-in.

Imported by sglang; not runnable on the emulated NPU (calls raise NotImplementedError).
"""

from sgl_kernel_npu._emulation import Unemulated

__all__ = ["split_qkv_tp_rmsnorm_rope"]

split_qkv_tp_rmsnorm_rope = Unemulated(__name__, "split_qkv_tp_rmsnorm_rope")
