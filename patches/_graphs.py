"""CUDA graphs on the emulated NPU: record the aten ops of a capture, re-run them on replay.

A CUDA graph replays the kernels it captured on the same memory: it reads its inputs from
the tensors the capture read and writes into the tensors the capture produced. This
emulation keeps that contract on the CPU. While capturing, a dispatch mode runs each aten op
normally and records ``(op, arguments, outputs)``; :meth:`EmulatedCUDAGraph.replay` runs
the ops again in order with the same argument objects and copies each fresh result into the
recorded output tensor (in-place ops and views write through by themselves). Random ops draw
fresh numbers on each replay, as graphs with philox offsets do.

Differences from CUDA: the capture also computes (CUDA only records), Python code inside the
capture runs once (as on CUDA), and ops whose output shape depends on data fail on replay
(they are not capturable on CUDA either).
"""

from __future__ import annotations

import contextlib
import itertools
import threading
from collections.abc import Iterator
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

_local = threading.local()
_pools = itertools.count(1)


def is_current_stream_capturing() -> bool:
    return getattr(_local, "capturing", 0) > 0


def graph_pool_handle() -> tuple[str, int]:
    """An opaque memory-pool handle (the emulation has no pools)."""
    return ("emulated-graph-pool", next(_pools))


class _Recorder(TorchDispatchMode):
    def __init__(self, ops: list[tuple[Any, Any, Any, Any]]) -> None:
        super().__init__()
        self._ops = ops

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        self._ops.append((func, args, kwargs, out))
        return out


def _write_back(recorded: Any, fresh: Any) -> None:
    old, _ = tree_flatten(recorded)
    new, _ = tree_flatten(fresh)
    for a, b in zip(old, new, strict=False):
        if not isinstance(a, torch.Tensor) or not isinstance(b, torch.Tensor) or a is b:
            continue
        if a.data_ptr() == b.data_ptr() and a.stride() == b.stride() and a.shape == b.shape:
            continue  # a view op: the fresh view is the recorded one
        with torch.no_grad():
            a.copy_(b)


class EmulatedCUDAGraph:
    """Stands in for ``torch.cuda.CUDAGraph``."""

    def __init__(self, keep_graph: bool = False) -> None:
        self._ops: list[tuple[Any, Any, Any, Any]] = []
        self._recorder: _Recorder | None = None
        self._captured = False
        self._pool = graph_pool_handle()

    def capture_begin(self, pool: Any = None, capture_error_mode: str = "global") -> None:
        if self._recorder is not None or self._captured:
            raise RuntimeError("this graph has already been captured; call reset() first")
        self._recorder = _Recorder(self._ops)
        self._recorder.__enter__()
        _local.capturing = getattr(_local, "capturing", 0) + 1

    def capture_end(self) -> None:
        if self._recorder is None:
            raise RuntimeError("capture_end() without capture_begin()")
        recorder, self._recorder = self._recorder, None
        _local.capturing -= 1
        recorder.__exit__(None, None, None)
        self._captured = True

    def instantiate(self) -> None:
        return None

    def replay(self) -> None:
        if not self._captured:
            raise RuntimeError("replay() needs a captured graph")
        for func, args, kwargs, out in self._ops:
            _write_back(out, func(*args, **kwargs))

    def reset(self) -> None:
        self._ops.clear()
        self._captured = False

    def pool(self) -> tuple[str, int]:
        return self._pool

    def enable_debug_mode(self) -> None:
        return None

    def debug_dump(self, debug_path: str) -> None:
        with open(debug_path, "w") as fh:
            for func, *_ in self._ops:
                fh.write(f"{func}\n")

    def __len__(self) -> int:
        return len(self._ops)


@contextlib.contextmanager
def graph(
    cuda_graph: EmulatedCUDAGraph,
    pool: Any = None,
    stream: Any = None,
    capture_error_mode: str = "global",
) -> Iterator[EmulatedCUDAGraph]:
    """Stands in for the ``torch.cuda.graph`` context manager."""
    cuda_graph.capture_begin(pool=pool, capture_error_mode=capture_error_mode)
    try:
        yield cuda_graph
    finally:
        cuda_graph.capture_end()
