"""``sgl_kernel_npu.sample`` stand-in.

Only ``chain_speculative_sampling_triton`` (imported unconditionally by sglang's dspark
speculative path) is here, and it raises when called. ``top_k_renorm_prob``,
``top_p_renorm_prob`` and ``tree_speculative_sampling_target_only`` are left out: sglang
imports them with an ``ImportError`` fallback, which then runs.
"""

from sgl_kernel_npu._emulation import Unemulated

__all__ = ["chain_speculative_sampling_triton"]

chain_speculative_sampling_triton = Unemulated(__name__, "chain_speculative_sampling_triton")
