"""``sgl_kernel_npu.mamba.mamba_state_update_triton`` stand-in.

Imported by sglang; not runnable on the emulated NPU (calls raise NotImplementedError).
"""

from sgl_kernel_npu._emulation import Unemulated

__all__ = ["conv_state_rollback", "move_intermediate_cache", "move_intermediate_cache_kda"]

conv_state_rollback = Unemulated(__name__, "conv_state_rollback")
move_intermediate_cache = Unemulated(__name__, "move_intermediate_cache")
move_intermediate_cache_kda = Unemulated(__name__, "move_intermediate_cache_kda")
