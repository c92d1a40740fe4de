"""Stand-in for ``sgl_kernel_npu`` (sglang's Triton-Ascend / AscendC kernel package) on the
emulated NPU.

sglang 0.5.23's NPU path imports many ``sgl_kernel_npu`` modules; a dense Llama/Qwen2 calls
two of their functions, which run here as CPU references on the emulated ``npu`` device:

* :func:`sgl_kernel_npu.norm.split_qkv_rmsnorm_rope.split_qkv_rmsnorm_rope`;
* :data:`sgl_kernel_npu.mem_cache.allocator.alloc_extend_kernel` (launched Triton-style,
  ``alloc_extend_kernel[(bs,)](...)``).

Every other name sglang imports without an ``ImportError`` fallback exists so the import
succeeds, and raises :class:`NotImplementedError` naming itself when called. Names sglang
imports *with* a fallback (``norm.fused_rope_qk_mqa``, ``norm.gemma_rmsnorm``,
``sample.top_k_renorm_prob`` ...) are left out on purpose, so sglang takes its fallback,
as with an older ``sgl_kernel_npu`` wheel. Importing the real package also loads
``libsgl_kernel_npu.so`` (``torch.ops.npu.*`` custom ops); this stand-in registers none.
"""

__version__ = "0.0.0+npu_platform.emulated"
