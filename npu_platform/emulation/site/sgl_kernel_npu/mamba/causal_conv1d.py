"""``sgl_kernel_npu.mamba.causal_conv1d`` stand-in.

Imported by sglang; not runnable on the emulated NPU (calls raise NotImplementedError).
"""

from sgl_kernel_npu._emulation import Unemulated

__all__ = ["causal_conv1d_fn_npu", "causal_conv1d_update_npu"]

causal_conv1d_fn_npu = Unemulated(__name__, "causal_conv1d_fn_npu")
causal_conv1d_update_npu = Unemulated(__name__, "causal_conv1d_update_npu")
