"""``sgl_kernel_npu.activation.situ_mxfp8_quant`` stand-in.

Imported by sglang; not runnable on the emulated NPU (calls raise NotImplementedError).
"""

from sgl_kernel_npu._emulation import Unemulated

__all__ = ["situ_mxfp8_quant"]

situ_mxfp8_quant = Unemulated(__name__, "situ_mxfp8_quant")
