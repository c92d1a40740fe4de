"""``sgl_kernel_npu.fla.kda_gate`` stand-in.

Imported by sglang; not runnable on the emulated NPU (calls raise NotImplementedError).
"""

from sgl_kernel_npu._emulation import Unemulated

__all__ = ["fused_kda_gate_npu"]

fused_kda_gate_npu = Unemulated(__name__, "fused_kda_gate_npu")
