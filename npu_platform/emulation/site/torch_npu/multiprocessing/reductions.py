"""``torch_npu.multiprocessing.reductions``: pickling ``npu`` tensors and events for IPC.

torch_npu shares device memory between processes through IPC handles (the receiving process
maps the sender's device memory). The emulated NPU's memory is host memory private to the
process that allocated it, so there is nothing another process could map: the rebuild
functions exist (sglang imports and wraps :func:`rebuild_npu_tensor`) and raise, naming what
to do instead, when called.

What the emulation does instead for ``torch.multiprocessing`` (queues, pipes, spawned
processes' arguments), which torch_npu teaches to pickle ``npu`` tensors when it loads
(:func:`_add_reductions_methods`): an ``npu`` tensor travels as a copy of its contents,
taken when it is pickled, inside the pickle (so the sender may exit before the receiver
reads), and becomes an ``npu`` tensor on the same device index in the receiving process.
A receiver reads what was sent, as over IPC; unlike IPC, writes on either side after
sending are not seen by the other.
"""

from __future__ import annotations

from typing import Any

__all__ = ["rebuild_npu_event", "rebuild_npu_tensor"]

_torch_reduce_tensor: Any = None

_NO_IPC = (
    "the emulated NPU cannot share device memory between processes (its npu memory is host "
    "memory private to the allocating process); send the tensor's contents (tensor.cpu()) "
    "instead of the npu tensor, or run on a real Ascend NPU"
)


def rebuild_npu_event(device: Any, handle: Any) -> Any:
    raise RuntimeError(f"rebuild_npu_event: {_NO_IPC}")


def rebuild_npu_tensor(*args: Any) -> Any:
    raise RuntimeError(f"rebuild_npu_tensor: {_NO_IPC}")


def _rebuild_npu_tensor_from_bytes(
    data: bytes, dtype: Any, shape: tuple, device_index: int, requires_grad: bool
) -> Any:
    import torch

    host = torch.frombuffer(bytearray(data), dtype=torch.uint8) if data else torch.empty(0)
    tensor = host.view(dtype).reshape(shape).to(torch.device("npu", device_index))
    if requires_grad:
        tensor.requires_grad_(True)
    return tensor


def _npu_reduce_tensor(tensor: Any) -> Any:
    """torch's ``reduce_tensor``, with ``npu`` tensors sent as a copy (see above)."""
    if tensor.device.type != "npu":
        return _torch_reduce_tensor(tensor)
    if tensor.requires_grad and not tensor.is_leaf:
        raise RuntimeError(
            "Cowardly refusing to serialize non-leaf tensor which requires_grad, since "
            "autograd does not support crossing process boundaries. If you just want to "
            "transfer the data, call detach() on the tensor before serializing (e.g., putting "
            "it on the queue)."
        )
    import torch

    host = tensor.detach().cpu().contiguous()
    data = host.reshape(-1).view(torch.uint8).numpy().tobytes() if host.numel() else b""
    return (
        _rebuild_npu_tensor_from_bytes,
        (data, tensor.dtype, tuple(tensor.shape), tensor.device.index, tensor.requires_grad),
    )


def _add_reductions_methods() -> None:
    """Install :func:`_npu_reduce_tensor` as torch.multiprocessing's tensor reduction."""
    global _torch_reduce_tensor
    from torch.multiprocessing import reductions

    if reductions.reduce_tensor is _npu_reduce_tensor:
        return
    _torch_reduce_tensor = reductions.reduce_tensor
    reductions.reduce_tensor = _npu_reduce_tensor
    reductions.init_reductions()
