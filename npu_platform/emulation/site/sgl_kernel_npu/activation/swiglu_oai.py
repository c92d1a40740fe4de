"""``sgl_kernel_npu.activation.swiglu_oai`` stand-in.

Imported by sglang; not runnable on the emulated NPU (calls raise NotImplementedError).
"""

from sgl_kernel_npu._emulation import Unemulated

__all__ = ["swiglu_oai_triton"]

swiglu_oai_triton = Unemulated(__name__, "swiglu_oai_triton")
