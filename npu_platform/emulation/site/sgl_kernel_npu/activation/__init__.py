"""``sgl_kernel_npu.activation`` stand-in: activation kernels (see the package docstring)."""
