"""``sgl_kernel_npu.attention`` stand-in: attention kernels (see the package docstring)."""
