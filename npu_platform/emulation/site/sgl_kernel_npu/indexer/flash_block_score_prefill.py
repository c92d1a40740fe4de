"""``sgl_kernel_npu.indexer.flash_block_score_prefill`` stand-in.

Imported by sglang; not runnable on the emulated NPU (calls raise NotImplementedError).
"""

from sgl_kernel_npu._emulation import Unemulated

__all__ = [
    "_build_qblock_mappings",
    "flash_prefill_bnsd_indexer",
    "flash_prefill_bnsd_with_topk_idx",
]

_build_qblock_mappings = Unemulated(__name__, "_build_qblock_mappings")
flash_prefill_bnsd_indexer = Unemulated(__name__, "flash_prefill_bnsd_indexer")
flash_prefill_bnsd_with_topk_idx = Unemulated(__name__, "flash_prefill_bnsd_with_topk_idx")
