"""``torch_npu.multiprocessing`` of the emulated torch_npu (see :mod:`.reductions`)."""
