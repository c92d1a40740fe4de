"""Thread-local region settings: which tag and backup policy new allocations get.

Each thread has a stack of frames. ``region(tag, enable_cpu_backup)`` pushes an
*intercepting* frame, ``disable()`` pushes a frame that keeps the tag but routes
allocations to ordinary memory; leaving a context pops its frame, which restores the outer
settings exactly (also when the body raises). Outside every region nothing is intercepted.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import NamedTuple

DEFAULT_TAG = "default"


class RegionSettings(NamedTuple):
    tag: str
    enable_cpu_backup: bool
    intercepting: bool


_OUTSIDE = RegionSettings(DEFAULT_TAG, False, False)


class _Frames(threading.local):
    def __init__(self) -> None:
        self.frames: list[RegionSettings] = []


class RegionStack:
    """Per-thread stack of :class:`RegionSettings` (one instance per manager).

    ``listeners`` are called with the thread's new settings after every push and pop, on
    that thread: an allocator hook can mirror "is this thread intercepting?" in its own
    (C) thread-local and skip Python entirely for ordinary allocations.
    """

    def __init__(self) -> None:
        self._local = _Frames()
        self.listeners: list[Callable[[RegionSettings], None]] = []

    @property
    def frames(self) -> list[RegionSettings]:
        return self._local.frames

    def _notify(self) -> None:
        if self.listeners:
            current = self.current()
            for listener in list(self.listeners):
                listener(current)

    def current(self) -> RegionSettings:
        return self.frames[-1] if self.frames else _OUTSIDE

    def depth(self) -> int:
        return len(self.frames)

    @contextmanager
    def push(self, settings: RegionSettings) -> Iterator[RegionSettings]:
        frames = self.frames
        frames.append(settings)
        depth = len(frames)
        self._notify()
        try:
            yield settings
        finally:
            # Pop exactly our frame; a body that left frames behind (a generator-based
            # context closed out of order) must not make us pop the outer settings.
            del frames[depth - 1 :]
            self._notify()

    @contextmanager
    def region(self, tag: str, enable_cpu_backup: bool) -> Iterator[RegionSettings]:
        if not isinstance(tag, str) or not tag:
            raise ValueError(f"a region tag must be a non-empty string, got {tag!r}")
        with self.push(RegionSettings(tag, bool(enable_cpu_backup), True)) as settings:
            yield settings

    @contextmanager
    def disable(self) -> Iterator[RegionSettings]:
        outer = self.current()
        with self.push(outer._replace(intercepting=False)) as settings:
            yield settings
