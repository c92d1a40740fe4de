"""``torch.npu``'s autocast functions (torch_npu/npu/autocast_utils.py) on the emulated NPU.

``torch.autocast("npu", ...)`` asks ``torch.npu.get_amp_supported_dtype()`` before anything
else, so a disabled autocast region (``torch.autocast(device.type, enabled=False)``, which
model code writes around precision-sensitive parts) works. The flags and dtype are torch's
own per-device autocast state. Known gap: no autocast kernels are registered for ``npu``,
so ops inside an *enabled* region fail (README, "The emulated NPU: what differs from
hardware").
"""

import torch

__all__ = [
    "get_amp_supported_dtype",
    "is_autocast_enabled",
    "set_autocast_enabled",
    "get_autocast_dtype",
    "set_autocast_dtype",
]


def get_amp_supported_dtype():
    if torch.npu.is_bf16_supported():
        return [torch.float16, torch.bfloat16, torch.float32]
    return [torch.float16, torch.float32]


def is_autocast_enabled():
    return torch.is_autocast_enabled("npu")


def set_autocast_enabled(enable):
    torch.set_autocast_enabled("npu", enable)


def get_autocast_dtype():
    return torch.get_autocast_dtype("npu")


def set_autocast_dtype(dtype):
    return torch.set_autocast_dtype("npu", dtype)
