"""``sgl_kernel_npu.kimi_k3`` stand-in: Kimi K3 kernels (see the package docstring)."""
