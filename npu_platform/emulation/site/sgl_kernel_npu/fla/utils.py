"""``sgl_kernel_npu.fla.utils`` stand-in: imported by sglang, not runnable on the emulated NPU."""

from sgl_kernel_npu._emulation import Unemulated

__all__ = [
    "fused_qkvzba_split_reshape_cat",
    "fused_qkvzba_split_reshape_cat_contiguous",
    "prepare_chunk_indices",
]

fused_qkvzba_split_reshape_cat = Unemulated(__name__, "fused_qkvzba_split_reshape_cat")
fused_qkvzba_split_reshape_cat_contiguous = Unemulated(
    __name__, "fused_qkvzba_split_reshape_cat_contiguous"
)
prepare_chunk_indices = Unemulated(__name__, "prepare_chunk_indices")
