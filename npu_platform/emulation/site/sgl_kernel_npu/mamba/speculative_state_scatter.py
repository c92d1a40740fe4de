"""``sgl_kernel_npu.mamba.speculative_state_scatter`` stand-in.

Imported by sglang; not runnable on the emulated NPU (calls raise NotImplementedError).
"""

from sgl_kernel_npu._emulation import Unemulated

__all__ = ["speculative_state_scatter_npu"]

speculative_state_scatter_npu = Unemulated(__name__, "speculative_state_scatter_npu")
