"""``sgl_kernel_npu.indexer`` stand-in (see the package docstring)."""
