"""``sgl_kernel_npu.fla.l2norm`` stand-in: imported by sglang, not runnable on the emulated NPU."""

from sgl_kernel_npu._emulation import Unemulated

__all__ = ["l2norm_fwd"]

l2norm_fwd = Unemulated(__name__, "l2norm_fwd")
