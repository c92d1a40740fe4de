"""``sgl_kernel_npu.fla.kda_target_verify`` stand-in.

Imported by sglang; not runnable on the emulated NPU (calls raise NotImplementedError).
"""

from sgl_kernel_npu._emulation import Unemulated

__all__ = ["kda_target_verify_npu"]

kda_target_verify_npu = Unemulated(__name__, "kda_target_verify_npu")
