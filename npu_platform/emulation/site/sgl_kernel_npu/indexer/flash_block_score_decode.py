"""``sgl_kernel_npu.indexer.flash_block_score_decode`` stand-in.

Imported by sglang; not runnable on the emulated NPU (calls raise NotImplementedError).
"""

from sgl_kernel_npu._emulation import Unemulated

__all__ = ["append_local_block_to_topk_idx", "flash_decode_bnsd_with_topk_idx"]

append_local_block_to_topk_idx = Unemulated(__name__, "append_local_block_to_topk_idx")
flash_decode_bnsd_with_topk_idx = Unemulated(__name__, "flash_decode_bnsd_with_topk_idx")
