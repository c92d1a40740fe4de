"""Devices and streams of ``torch.npu`` (torch_npu/npu/utils.py) on the emulated NPU.

The current device and the current stream are per thread, kept by the native device guard;
work is synchronous, so synchronising waits for nothing.
"""

from typing import Any, Optional

import torch
from torch._utils import _get_device_index as _torch_get_device_index

import torch_npu
from torch_npu import _emulated
from torch_npu.npu._backends import get_soc_version  # noqa: F401

__all__ = [
    "synchronize",
    "set_device",
    "current_device",
    "device",
    "device_of",
    "StreamContext",
    "stream",
    "set_stream",
    "current_stream",
    "default_stream",
    "set_sync_debug_mode",
    "get_sync_debug_mode",
    "is_support_inf_nan",
    "is_bf16_supported",
    "current_blas_handle",
    "ipc_collect",
]


def synchronize(device=None):
    r"""Waits for all kernels in all streams on a NPU device to complete.

    Work on the emulated NPU runs synchronously, so there is nothing left to wait for; the
    device is still checked (a bad index raises).
    """
    torch_npu.npu._lazy_init()
    with torch_npu.npu.device(device):
        return torch.accelerator.synchronize()


def ipc_collect():
    r"""Force collects NPU memory after it has been released by NPU IPC (nothing to do here)."""
    torch_npu.npu._lazy_init()


def set_device(device):
    r"""Sets the current device of this thread; a negative index or ``None`` is a no-op."""
    device_id = _get_device_index(device, optional=True)
    if device_id >= 0:
        _emulated.lib().set_device(device_id)


def current_device():
    r"""The current device index of this thread."""
    torch_npu.npu._lazy_init()
    return int(_emulated.lib().current_device())


class device:
    r"""Context-manager that changes the selected device.

    Arguments:
        device (torch.device or int): device index to select. It's a no-op if
            this argument is a negative integer or ``None``.
    """

    def __init__(self, device):
        self.idx = _get_device_index(device, optional=True)
        self.prev_idx = -1

    def __enter__(self):
        if self.idx < 0:
            return
        lib = _emulated.lib()
        self.prev_idx = int(lib.current_device())
        if self.prev_idx != self.idx:
            lib.set_device(self.idx)
        torch_npu.npu._lazy_init()

    def __exit__(self, *args):
        if self.idx < 0:
            self.idx = -1
            return False
        if self.prev_idx == -1:
            self.prev_idx = 0
        lib = _emulated.lib()
        self.idx = int(lib.current_device())
        if self.idx != self.prev_idx:
            lib.set_device(self.prev_idx)
        return False


_DeviceContext = device


def _get_device_index(device: Any, optional: bool = False, allow_cpu: bool = False) -> int:
    r"""Gets the device index from :attr:`device` (a torch.device, an int, a str or None).

    An ``npu`` device without an index, or ``None``, gives the current device when
    :attr:`optional` is ``True``; a cpu device gives ``-1`` when :attr:`allow_cpu` is
    ``True``; any other device type raises ``ValueError``.
    """
    if isinstance(device, int):
        return device
    if isinstance(device, str):
        device = torch.device(device)
    if isinstance(device, torch.device):
        if allow_cpu:
            if device.type not in ["npu", "cpu"]:
                raise ValueError(f"Expected a npu or cpu device, but got: {device}")
        elif device.type != "npu":
            raise ValueError(f"Expected a npu device, but got: {device}")
    if isinstance(device, _DeviceContext):
        return device.idx
    return _torch_get_device_index(device, optional, allow_cpu)


class device_of(device):
    r"""Context-manager that changes the current device to that of given object.

    You can use both tensors and storages as arguments. If a given object is
    not allocated on a NPU, this is a no-op.
    """

    def __init__(self, obj):
        idx = obj.get_device() if obj.is_npu else -1
        super().__init__(idx)


class StreamContext:
    r"""Context-manager that selects a given stream.

    All NPU kernels queued within its context will be enqueued on a selected
    stream. This manager is a no-op if the stream is ``None``; it can be entered again
    after it has been left.
    """

    cur_stream: Optional["torch_npu.npu.Stream"]

    def __init__(self, stream_ctx: Optional["torch_npu.npu.Stream"]):
        self.stream = stream_ctx
        self.idx = _get_device_index(None, True)
        if self.idx is None:
            self.idx = -1
        self.src_prev_stream = None
        self.dst_prev_stream = None

    def __enter__(self):
        cur_stream = self.stream
        if cur_stream is None or self.idx == -1:
            return
        self.src_prev_stream = current_stream()
        # A stream on another device: remember that device's current stream as well.
        if self.src_prev_stream.device != cur_stream.device:
            with device(cur_stream.device):
                self.dst_prev_stream = current_stream(cur_stream.device)
        set_stream(cur_stream)

    def __exit__(self, exec_type: Any, exec_value: Any, traceback: Any):
        cur_stream = self.stream
        if cur_stream is None or self.idx == -1:
            return
        if self.src_prev_stream.device != cur_stream.device:
            set_stream(self.dst_prev_stream)
        set_stream(self.src_prev_stream)


def stream(stream):
    r"""Wrap around the Context-manager StreamContext that selects a given stream.

    Arguments:
        stream (Stream): selected stream. This manager is a no-op if it's ``None``.
    """
    return StreamContext(stream)


def set_stream(stream):
    r"""Sets the current stream (and device, the stream's). A no-op for ``None``."""
    if stream is None:
        return
    torch.accelerator.set_stream(stream)


def _stream_of(raw: torch.Stream) -> "torch_npu.npu.Stream":
    return torch_npu.npu.Stream(
        stream_id=raw.stream_id, device_index=raw.device_index, device_type=raw.device_type
    )


def current_stream(device=None):
    r"""Returns the currently selected :class:`Stream` for a given device (default: current)."""
    torch_npu.npu._lazy_init()
    index = _get_device_index(device, optional=True)
    return _stream_of(torch.accelerator.current_stream(index))


def default_stream(device=None):
    r"""Returns the default :class:`Stream` for a given device (default: current)."""
    torch_npu.npu._lazy_init()
    index = _get_device_index(device, optional=True)
    current = torch.accelerator.current_stream(index)
    return torch_npu.npu.Stream(
        stream_id=0, device_index=current.device_index, device_type=current.device_type
    )


_sync_debug_mode = 0


def set_sync_debug_mode(debug_mode):
    r"""Sets the debug mode for npu synchronizing operations ("default"/0, "warn"/1, "error"/2).

    The emulated NPU keeps the mode (``get_sync_debug_mode`` returns it) but, as its work
    is synchronous anyway, does not warn or raise on synchronizing operations.
    """
    global _sync_debug_mode
    if isinstance(debug_mode, str):
        modes = {"default": 0, "warn": 1, "error": 2}
        if debug_mode not in modes:
            raise RuntimeError(
                "invalid value of debug_mode, expected one of `default`, `warn`, `error`"
            )
        debug_mode = modes[debug_mode]
    _sync_debug_mode = int(debug_mode)


def get_sync_debug_mode():
    r"""Returns current value of debug mode for npu synchronizing operations."""
    return _sync_debug_mode


def _dummy_type(name):
    def init_err(self):
        raise RuntimeError(f"Tried to instantiate dummy base class {self.__class__.__name__}")

    return type(name, (object,), {"__init__": init_err})


def is_support_inf_nan():
    r"""Whether the SoC computes with inf/nan (Ascend910B and later do)."""
    torch_npu.npu._lazy_init()
    return _emulated.SOC_VERSION >= 220


def is_bf16_supported(including_emulation: bool = False):
    r"""Whether bfloat16 is supported (it is on the emulated Ascend910B)."""
    torch_npu.npu._lazy_init()
    return _emulated.SOC_VERSION >= 220


def current_blas_handle():
    r"""NPU does not use a blas handle; returns None with a warning, as torch_npu does."""
    import warnings

    warnings.warn("NPU does not use blas handle.", stacklevel=2)
