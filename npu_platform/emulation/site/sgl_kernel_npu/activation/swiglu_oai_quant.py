"""``sgl_kernel_npu.activation.swiglu_oai_quant`` stand-in.

Imported by sglang; not runnable on the emulated NPU (calls raise NotImplementedError).
"""

from sgl_kernel_npu._emulation import Unemulated

__all__ = ["swiglu_oai_quant"]

swiglu_oai_quant = Unemulated(__name__, "swiglu_oai_quant")
