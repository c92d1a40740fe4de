"""``sgl_kernel_npu.fla.chunk`` stand-in: imported by sglang, not runnable on the emulated NPU."""

from sgl_kernel_npu._emulation import Unemulated

__all__ = ["chunk_gated_delta_rule_npu"]

chunk_gated_delta_rule_npu = Unemulated(__name__, "chunk_gated_delta_rule_npu")
