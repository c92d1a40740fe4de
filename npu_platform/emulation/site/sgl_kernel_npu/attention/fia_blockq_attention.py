"""``sgl_kernel_npu.attention.fia_blockq_attention`` stand-in.

Imported by sglang; not runnable on the emulated NPU (calls raise NotImplementedError).
"""

from sgl_kernel_npu._emulation import Unemulated

__all__ = ["flash_prefill_bnsd_blockq_sparse_fia"]

flash_prefill_bnsd_blockq_sparse_fia = Unemulated(__name__, "flash_prefill_bnsd_blockq_sparse_fia")
