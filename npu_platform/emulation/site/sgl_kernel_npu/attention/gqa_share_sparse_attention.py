"""``sgl_kernel_npu.attention.gqa_share_sparse_attention`` stand-in.

Imported by sglang; not runnable on the emulated NPU (calls raise NotImplementedError).
"""

from sgl_kernel_npu._emulation import Unemulated

__all__ = ["_get_native_sparse_op", "flash_decode_bnsd_with_gqa_share_sparse"]

_get_native_sparse_op = Unemulated(__name__, "_get_native_sparse_op")
flash_decode_bnsd_with_gqa_share_sparse = Unemulated(
    __name__, "flash_decode_bnsd_with_gqa_share_sparse"
)
