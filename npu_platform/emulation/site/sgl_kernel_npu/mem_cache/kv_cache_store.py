"""``sgl_kernel_npu.mem_cache.kv_cache_store`` stand-in.

Imported by sglang; not runnable on the emulated NPU (calls raise NotImplementedError).
"""

from sgl_kernel_npu._emulation import Unemulated

__all__ = ["store_kv_cache_prefix_valid_npu_triton"]

store_kv_cache_prefix_valid_npu_triton = Unemulated(
    __name__, "store_kv_cache_prefix_valid_npu_triton"
)
