"""Helpers of the ``sgl_kernel_npu`` stand-in: placeholders and Triton-style launchers."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import torch

__all__ = ["TritonKernel", "Unemulated", "host", "npu_kernel"]


def npu_kernel(fn: Callable[..., Any]) -> Callable[..., Any]:
    """A stand-in kernel that NPU graph capture records as one node, as it records the
    kernels the real package launches (its references work on host views of ``npu``
    memory, which the capture's aten recorder cannot see); replay runs it again on the
    same tensors."""
    name = f"{fn.__module__}.{fn.__name__}"

    @functools.wraps(fn)
    def launch(*args: Any, **kwargs: Any) -> Any:
        from torch_npu.npu import graphs

        return graphs._run_npu_op(name, fn, args, kwargs)

    return launch


class Unemulated:
    """An ``sgl_kernel_npu`` name that exists for imports and cannot run on the emulated NPU.

    Calling it (or launching it Triton-style, ``kernel[grid](...)``) raises
    :class:`NotImplementedError` naming the function.
    """

    def __init__(self, module: str, name: str) -> None:
        self.__module__ = module
        self.__name__ = name
        self.__qualname__ = name

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError(
            f"{self.__module__}.{self.__name__}: the emulated NPU has no such kernel "
            "(npu_platform's sgl_kernel_npu stand-in runs only "
            "norm.split_qkv_rmsnorm_rope.split_qkv_rmsnorm_rope and "
            "mem_cache.allocator.alloc_extend_kernel); use a model or feature whose NPU path "
            "does not need it, or a real Ascend NPU"
        )

    def __getitem__(self, grid: Any) -> Unemulated:
        return self

    def __repr__(self) -> str:
        return f"<unemulated sgl_kernel_npu kernel {self.__module__}.{self.__name__}>"


class TritonKernel:
    """A CPU reference launched the way a Triton kernel is: ``kernel[grid](*args)``."""

    def __init__(self, name: str, fn: Callable[..., None]) -> None:
        self.fn = fn
        self._launch = npu_kernel(fn)
        self.__name__ = name
        self.__qualname__ = name
        self.__module__ = fn.__module__
        self.__doc__ = fn.__doc__

    def __getitem__(self, grid: Any) -> Callable[..., None]:
        return self._launch

    def __call__(self, *args: Any, **kwargs: Any) -> None:
        raise TypeError(
            f"{self.__name__} is a Triton kernel: launch it as {self.__name__}[grid](...), "
            f"not {self.__name__}(...)"
        )

    def __repr__(self) -> str:
        return f"<emulated Triton kernel {self.__module__}.{self.__name__}>"


@functools.cache
def _cpu_alias() -> Callable[[torch.Tensor], torch.Tensor] | None:
    try:
        from npu_platform.emulation import native

        return native.load().cpu_alias
    except Exception:
        return None


def host(t: torch.Tensor) -> torch.Tensor:
    """A CPU tensor over the memory of ``t`` (an emulated ``npu`` tensor), or ``t`` on CPU."""
    if t.device.type == "cpu":
        return t
    alias = _cpu_alias() if t.device.type == "npu" else None
    if alias is None:
        raise RuntimeError(
            "the sgl_kernel_npu stand-in runs on the emulated npu device (or the CPU); got a "
            f"tensor on {t.device}"
        )
    return alias(t)
