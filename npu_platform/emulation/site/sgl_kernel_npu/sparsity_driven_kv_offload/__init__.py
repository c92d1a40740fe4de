"""``sgl_kernel_npu.sparsity_driven_kv_offload`` stand-in.

Imported by sglang; not runnable on the emulated NPU (calls raise NotImplementedError).
"""

from sgl_kernel_npu._emulation import Unemulated

__all__ = ["create_shm_tensor", "slot_map_lookup", "unidex_copy_inplace"]

create_shm_tensor = Unemulated(__name__, "create_shm_tensor")
slot_map_lookup = Unemulated(__name__, "slot_map_lookup")
unidex_copy_inplace = Unemulated(__name__, "unidex_copy_inplace")
