"""``sgl_kernel_npu.mem_cache`` stand-in: KV-cache kernels (see the package docstring)."""
