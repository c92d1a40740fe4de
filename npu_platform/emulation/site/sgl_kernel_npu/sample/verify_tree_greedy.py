"""``sgl_kernel_npu.sample.verify_tree_greedy`` stand-in.

Imported by sglang; not runnable on the emulated NPU (calls raise NotImplementedError).
"""

from sgl_kernel_npu._emulation import Unemulated

__all__ = ["verify_tree_greedy"]

verify_tree_greedy = Unemulated(__name__, "verify_tree_greedy")
