"""npu-platform: Huawei Ascend NPU support for unmodified vLLM, sglang and dInfer.

Importing the package is cheap and has no side effects: it does not import torch.
"""

__version__ = "0.1.0"
