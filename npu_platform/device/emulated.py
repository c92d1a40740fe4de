"""Emulated NPU backend: the CPU stands in for the device.

Tensors live on ``cpu``. Device indices are tracked per thread (as torch.npu does) and checked
against ``NPU_PLATFORM_EMULATE_DEVICES``. Streams and events are host-side objects with the
same methods as torch.npu's; work on the CPU is synchronous, so they only keep order and time.
Memory info is the host's (``/proc/meminfo``), and ``empty_cache`` hands freed heap memory
back to the OS with glibc's ``malloc_trim``.
"""

from __future__ import annotations

import contextlib
import ctypes
import threading
import time
from collections.abc import Iterator
from typing import Any

from npu_platform.hostinfo import host_memory

_local = threading.local()


class EmulatedEvent:
    def __init__(
        self, enable_timing: bool = False, blocking: bool = False, interprocess: bool = False
    ):
        self.enable_timing = enable_timing
        self._time: float | None = None

    def record(self, stream: EmulatedStream | None = None) -> None:
        self._time = time.perf_counter()

    def wait(self, stream: EmulatedStream | None = None) -> None:
        return None

    def query(self) -> bool:
        return True

    def synchronize(self) -> None:
        return None

    def elapsed_time(self, end_event: EmulatedEvent) -> float:
        """Milliseconds between this event and ``end_event`` (both must be recorded)."""
        if not self.enable_timing or not end_event.enable_timing:
            raise RuntimeError("elapsed_time needs both events created with enable_timing=True")
        if self._time is None or end_event._time is None:
            raise RuntimeError("elapsed_time needs both events to be recorded first")
        return (end_event._time - self._time) * 1000.0


class EmulatedStream:
    def __init__(self, device: int | None = None, priority: int = 0, **_: Any) -> None:
        self.device_index = 0 if device is None else int(device)
        self.priority = priority

    def synchronize(self) -> None:
        return None

    def query(self) -> bool:
        return True

    def wait_stream(self, other: EmulatedStream) -> None:
        return None

    def wait_event(self, event: EmulatedEvent) -> None:
        return None

    def record_event(self, event: EmulatedEvent | None = None) -> EmulatedEvent:
        event = event or EmulatedEvent()
        event.record(self)
        return event

    def __repr__(self) -> str:
        return f"<EmulatedStream device={self.device_index} priority={self.priority}>"


class EmulatedBackend:
    device_type = "cpu"

    def __init__(self, count: int) -> None:
        self._count = count
        self._default_streams = [EmulatedStream(i) for i in range(count)]

    def _index(self, index: Any) -> int:
        if index is None:
            return self.current_device()
        if isinstance(index, str):
            kind, _, number = index.partition(":")
            if kind not in ("npu", "cpu", "cuda"):
                raise ValueError(f"unknown device {index!r}: expected an index or 'npu:N'")
            index = int(number) if number else 0
        elif hasattr(index, "type") and hasattr(index, "index"):  # torch.device
            index = index.index or 0
        index = int(index)
        if not 0 <= index < self._count:
            raise ValueError(
                f"emulated NPU index {index} is out of range: {self._count} emulated device(s) "
                "(set NPU_PLATFORM_EMULATE_DEVICES for more)"
            )
        return index

    def torch_device(self, index: int | None = None) -> Any:
        import torch

        if index is not None:
            self._index(index)
        return torch.device("cpu")

    def device_count(self) -> int:
        return self._count

    def current_device(self) -> int:
        return getattr(_local, "device", 0)

    def set_device(self, index: Any) -> None:
        _local.device = self._index(index)

    def synchronize(self, index: int | None = None) -> None:
        self._index(index)

    def new_stream(self, device: Any = None, priority: int = 0, **kwargs: Any) -> EmulatedStream:
        return EmulatedStream(self._index(device), priority, **kwargs)

    def new_event(self, *args: Any, **kwargs: Any) -> EmulatedEvent:
        return EmulatedEvent(*args, **kwargs)

    def current_stream(self, index: int | None = None) -> EmulatedStream:
        current = getattr(_local, "stream", None)
        idx = self._index(index)
        if current is not None and current.device_index == idx:
            return current
        return self._default_streams[idx]

    @contextlib.contextmanager
    def stream_context(self, s: EmulatedStream | None) -> Iterator[EmulatedStream | None]:
        previous = getattr(_local, "stream", None)
        _local.stream = s
        try:
            yield s
        finally:
            _local.stream = previous

    def mem_get_info(self, index: int | None = None) -> tuple[int, int]:
        self._index(index)
        return host_memory()

    def empty_cache(self) -> None:
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None).malloc_trim(0)

    def manual_seed_all(self, seed: int) -> None:
        # Seed the CPU generator directly: torch.manual_seed() itself calls
        # torch.cuda.manual_seed_all, which the start-up patches route back here.
        import torch

        torch.default_generator.manual_seed(seed)
