"""``sgl_kernel_npu.mamba`` stand-in: Mamba state kernels (see the package docstring)."""
