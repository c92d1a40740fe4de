"""``torch.npu.Stream`` and ``torch.npu.Event`` (torch_npu/npu/streams.py) on the emulated NPU.

They are torch's own ``torch.Stream`` and ``torch.Event`` on device ``npu``, backed by the
native device guard: work runs synchronously, so a stream is always idle, a recorded event
is complete and ``elapsed_time`` is the host time between two records.
"""

import ctypes
import time

import torch

import torch_npu

__all__ = ["Stream", "Event"]


class Stream(torch.Stream):
    r"""Wrapper around a NPU stream.

    Arguments:
        device(torch.device or int, optional): a device on which to allocate
            the stream. If :attr:`device` is ``None`` (default) or a negative
            integer, this will use the current device.
        priority(int, optional): priority of the stream. Lower numbers
                                 represent higher priorities.
    """

    def __new__(cls, device=None, priority=0, **kwargs):
        with torch_npu.npu.device(device):
            if "stream_id" in kwargs:  # an existing stream (current_stream, default_stream)
                return super().__new__(cls, priority=priority, **kwargs)
            here = torch.device("npu", torch_npu.npu.current_device())
            return super().__new__(cls, here, priority=priority, **kwargs)

    def wait_event(self, event):
        r"""Makes all future work submitted to the stream wait for an event."""
        event.wait(self)

    def wait_stream(self, stream):
        r"""Synchronizes with another stream: future work here waits for its work so far."""
        self.wait_event(stream.record_event())

    def record_event(self, event=None):
        r"""Records an event (a new one if not given) on this stream and returns it."""
        if event is None:
            event = Event()
        event.record(self)
        return event

    def query(self):
        r"""Checks if all the work submitted has been completed."""
        return super().query()

    def synchronize(self):
        r"""Wait for all the kernels in this stream to complete."""
        super().synchronize()

    def set_data_preprocess_stream(self, is_data_preprocess_stream=False):
        r"""Set data preprocess mode property to this stream (no effect on the emulated NPU)."""
        self._data_preprocess = bool(is_data_preprocess_stream)

    @property
    def npu_stream(self):
        """The stream's handle: its id, unique per device (0 is the default stream)."""
        return self.stream_id

    @property
    def _as_parameter_(self):
        return ctypes.c_void_p(self.npu_stream)

    def __eq__(self, other):
        if isinstance(other, Stream):
            return super().__eq__(other)
        return False

    def __hash__(self):
        return hash((self.npu_stream, self.device))

    def __repr__(self):
        return f"<torch_npu.npu.Stream device={self.device} npu_stream={self.npu_stream:#x}>"


class Event(torch.Event):
    r"""Wrapper around a NPU event.

    Arguments:
        enable_timing (bool, optional): indicates if the event should measure time
            (default: ``False``)
        blocking (bool, optional): if ``True``, :meth:`wait` will be blocking (default: ``False``)
        interprocess (bool): if ``True``, the event can be shared between processes
            (default: ``False``)
    """

    def __new__(cls, enable_timing=False, blocking=False, interprocess=False):
        event = super().__new__(
            cls,
            torch.device("npu"),
            enable_timing=enable_timing,
            blocking=blocking,
            interprocess=interprocess,
        )
        event._enable_timing = bool(enable_timing)
        event._recorded_at = None
        return event

    def record(self, stream=None):
        r"""Records the event in a given stream (default: the current stream)."""
        if stream is None:
            stream = torch_npu.npu.current_stream()
        super().record(stream)
        self._recorded_at = time.perf_counter()

    def wait(self, stream=None):
        r"""Makes all future work submitted to the given stream (default: current) wait."""
        if stream is None:
            stream = torch_npu.npu.current_stream()
        super().wait(stream)

    def query(self):
        r"""Checks if all work currently captured by event has completed."""
        return super().query()

    def elapsed_time(self, end_event):
        r"""Milliseconds between this event's record and ``end_event``'s (host time)."""
        if not isinstance(end_event, Event):
            return super().elapsed_time(end_event)
        # torch.Event.elapsed_time accepts no subclass, so the records' host times are used.
        if not (self._enable_timing and end_event._enable_timing):
            raise RuntimeError("Both events must be created with argument 'enable_timing=True'.")
        if self._recorded_at is None or end_event._recorded_at is None:
            raise RuntimeError("Both events must be recorded before calculating elapsed time.")
        return (end_event._recorded_at - self._recorded_at) * 1000.0

    def synchronize(self):
        r"""Waits for the event to complete."""
        super().synchronize()

    @property
    def npu_event(self):
        """The event's handle (0 until it is first recorded)."""
        return self.event_id

    @property
    def _as_parameter_(self):
        return ctypes.c_void_p(self.npu_event)

    def __repr__(self):
        if self.npu_event:
            return f"<torch_npu.npu.Event {self._as_parameter_.value:#x}>"
        return "<torch_npu.npu.Event uninitialized>"
