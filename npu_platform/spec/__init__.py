"""What torch_npu promises: its op schemas and the documented constraints of its kernels.

Read from the data files of the torch_npu wheel (:mod:`npu_platform.torch_npu_data`). Used by
the op layer (:mod:`npu_platform.ops`) to check every call the plugin makes, and by the
emulated torch_npu to refuse what the hardware kernels refuse. Standard library, PyYAML and
torch only; nothing here calls torch_npu.
"""
