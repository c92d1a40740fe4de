"""``sgl_kernel_npu.norm`` stand-in: normalisation (+ rope) kernels (see the package docstring)."""
