"""``sgl_kernel_npu.attention.sinks_attention`` stand-in.

Imported by sglang; not runnable on the emulated NPU (calls raise NotImplementedError).
"""

from sgl_kernel_npu._emulation import Unemulated

__all__ = ["attention_sinks_prefill_triton", "attention_sinks_triton"]

attention_sinks_prefill_triton = Unemulated(__name__, "attention_sinks_prefill_triton")
attention_sinks_triton = Unemulated(__name__, "attention_sinks_triton")
