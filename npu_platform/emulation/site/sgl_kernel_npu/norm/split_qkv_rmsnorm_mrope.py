"""``sgl_kernel_npu.norm.split_qkv_rmsnorm_mrope`` stand-in.

Imported by sglang; not runnable on the emulated NPU (calls raise NotImplementedError).
"""

from sgl_kernel_npu._emulation import Unemulated

__all__ = ["triton_split_qkv_rmsnorm_mrope"]

triton_split_qkv_rmsnorm_mrope = Unemulated(__name__, "triton_split_qkv_rmsnorm_mrope")
