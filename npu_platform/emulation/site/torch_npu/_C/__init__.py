"""torch_npu._C on the emulated NPU."""
