"""``sgl_kernel_npu.fla`` stand-in: flash-linear-attention kernels (see the package docstring)."""
