"""npu-platform's vLLM integration: the platform, worker, model runner, attention backend,
custom ops, device communicator and sleep-mode backend that let unmodified vLLM run on an
Ascend NPU, or on the emulated NPU (``NPU_PLATFORM_EMULATE=1``).

Only vLLM's entry points (:mod:`npu_platform.entry_points.vllm`) import this package, and
importing the package itself is cheap: every submodule is imported on demand.
"""
