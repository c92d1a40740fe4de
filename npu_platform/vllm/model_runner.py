"""The NPU model runner: vLLM's (V1) GPU model runner with its device calls redirected.

vLLM's GPU model runner creates CUDA streams and events in its constructor
(``torch.cuda.Stream``, ``torch.cuda.Event``, ``torch.Event``). While it is constructed we
point those names at :mod:`npu_platform.device` (``torch.npu`` streams and events), as vLLM's
own XPU and CPU runners do for their devices. Device
synchronisation goes through the facade too. Everything else (input preparation, sampling,
the KV-cache allocation and the per-step attention metadata) is vLLM's.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from vllm.v1.worker.gpu_model_runner import GPUModelRunner

from npu_platform import device as npu_device


def _event(*args: Any, blocking: bool = False, **kwargs: Any) -> Any:
    kwargs.pop("device", None)
    return npu_device.Event(*args, blocking=blocking, **kwargs)


def _stream(*args: Any, **kwargs: Any) -> Any:
    return npu_device.Stream(*args, **kwargs)


@contextlib.contextmanager
def device_api_redirect() -> Iterator[None]:
    """Point ``torch.cuda.Stream/Event/current_stream/stream`` and ``torch.Event`` at the
    facade for the duration of the block, then restore them."""
    saved = {
        (torch.cuda, "Stream"): torch.cuda.Stream,
        (torch.cuda, "Event"): torch.cuda.Event,
        (torch.cuda, "current_stream"): torch.cuda.current_stream,
        (torch.cuda, "stream"): torch.cuda.stream,
        (torch, "Event"): torch.Event,
    }
    torch.cuda.Stream = _stream  # type: ignore[misc,assignment]
    torch.cuda.Event = _event  # type: ignore[misc,assignment]
    torch.cuda.current_stream = npu_device.current_stream  # type: ignore[assignment]
    torch.cuda.stream = npu_device.stream  # type: ignore[assignment]
    torch.Event = _event  # type: ignore[misc,assignment]
    try:
        yield
    finally:
        for (owner, name), value in saved.items():
            setattr(owner, name, value)


class NPUModelRunner(GPUModelRunner):
    """vLLM's GPU model runner on the NPU."""

    def __init__(self, vllm_config: Any, device: torch.device) -> None:
        with device_api_redirect():
            super().__init__(vllm_config, device)

    def _sync_device(self) -> None:
        npu_device.synchronize()
