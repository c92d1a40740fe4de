"""Driver-agnostic scenarios for :class:`npu_platform.memory.manager.MemoryManager`.

Every scenario is a function taking a :class:`Harness` and raising ``AssertionError`` on
failure. A driver's test file runs them all, e.g.::

    from tests.memory_scenarios import SCENARIOS, Harness

    class AclHarness(Harness):
        name = "acl"
        def make_driver(self): return AclDriver(fake_library_path)
        def limit_free(self, driver, free_bytes): fake.set_capacity(...)   # optional

    @pytest.mark.parametrize("scenario", SCENARIOS.values(), ids=SCENARIOS.keys())
    def test_scenario(scenario): scenario(AclHarness())

Data is written and read only through the driver's own copies (``copy_from_host`` /
``copy_to_host``), so the scenarios need nothing beyond the driver Protocol, and the driver
is wrapped in :class:`InstrumentedDriver` (a real driver underneath; it counts calls,
tracks what is live and can inject failures) to check that everything is released exactly
once.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator

from npu_platform.errors import NPUPlatformError
from npu_platform.memory.driver import Driver, DriverError
from npu_platform.memory.errors import (
    AllocationOutOfMemory,
    NoCpuBackup,
    OutOfMemory,
    PauseError,
    ResumeError,
    ResumeOutOfMemory,
    UnknownAllocation,
)
from npu_platform.memory.manager import MemoryManager, State

__all__ = [
    "SCENARIOS",
    "Harness",
    "InstrumentedDriver",
    "LimitUnsupported",
    "capture_logs",
    "pattern",
    "read",
    "write",
]

LOGGER = "npu_platform.memory"


class LimitUnsupported(Exception):
    """Raised by :meth:`Harness.limit_free` when the driver cannot simulate a full device."""


class Harness:
    """What a driver's test file provides. Override :meth:`make_driver`; the rest is optional.

    ``skip(reason)`` is called for scenarios the harness cannot run (default: return
    quietly, so the scenario passes vacuously; pytest users pass ``pytest.skip``).
    """

    name = "driver"

    def make_driver(self) -> Driver:
        raise NotImplementedError

    def limit_free(self, driver: Driver, free_bytes: int | None) -> None:
        """Make exactly ``free_bytes`` of device memory available from now on (``None``:
        remove the limit). Raise :class:`LimitUnsupported` if the driver cannot do it."""
        raise LimitUnsupported(f"{self.name} harness cannot limit device memory")

    def skip(self, reason: str) -> None:
        return None

    def manager(self, **kwargs: object) -> tuple[MemoryManager, InstrumentedDriver]:
        driver = InstrumentedDriver(self.make_driver())
        return MemoryManager(driver, **kwargs), driver  # type: ignore[arg-type]


# -- instrumented driver --------------------------------------------------------------------


class InstrumentedDriver:
    """Wraps a real driver: counts calls, tracks live objects, injects failures.

    ``fail_on(method, after=n, error=...)`` makes the (n+1)-th and later calls of
    ``method`` raise ``error`` (a :class:`DriverError` by default) until ``clear_faults``.
    """

    def __init__(self, inner: Driver) -> None:
        self.inner = inner
        self.name = inner.name
        self.calls: Counter[str] = Counter()
        self.log: list[tuple[str, tuple[object, ...]]] = []
        self.live_reserved: dict[int, int] = {}
        self.live_mapped: dict[int, int] = {}
        self.live_handles: set[int] = set()
        self.live_host: set[int] = set()
        self._faults: dict[str, tuple[int, Callable[[], BaseException]]] = {}
        # method -> callable(args) run before the call is forwarded (after counting)
        self.before: dict[str, Callable[[tuple[object, ...]], None]] = {}
        self._lock = threading.Lock()

    # fault injection
    def fail_on(
        self,
        method: str,
        *,
        after: int = 0,
        error: Callable[[], BaseException] | None = None,
    ) -> None:
        seen = self.calls[method]
        make = error or (lambda: DriverError(f"injected failure of {method}"))
        self._faults[method] = (seen + after, make)

    def clear_faults(self) -> None:
        self._faults.clear()
        self.before.clear()

    def _enter(self, method: str, args: tuple[object, ...]) -> None:
        with self._lock:
            self.calls[method] += 1
            self.log.append((method, args))
            fault = self._faults.get(method)
            hook = self.before.get(method)
        if fault is not None and self.calls[method] > fault[0]:
            raise fault[1]()
        if hook is not None:
            hook(args)

    def reset_counts(self) -> None:
        self.calls.clear()
        self.log.clear()

    def balanced(self) -> list[str]:
        """What is still live (empty once every allocation is freed)."""
        problems = []
        if self.live_reserved:
            problems.append(f"{len(self.live_reserved)} reserved range(s) not released")
        if self.live_mapped:
            problems.append(f"{len(self.live_mapped)} mapping(s) not unmapped")
        if self.live_handles:
            problems.append(f"{len(self.live_handles)} physical handle(s) not freed")
        if self.live_host:
            problems.append(f"{len(self.live_host)} host buffer(s) not freed")
        return problems

    # Protocol
    def granularity(self, device: int) -> int:
        self._enter("granularity", (device,))
        return self.inner.granularity(device)

    def reserve(self, size: int, device: int) -> int:
        self._enter("reserve", (size, device))
        va = self.inner.reserve(size, device)
        with self._lock:
            assert va not in self.live_reserved, f"driver reserved 0x{va:x} twice"
            self.live_reserved[va] = size
        return va

    def release(self, va: int, size: int) -> None:
        self._enter("release", (va, size))
        with self._lock:
            assert self.live_reserved.get(va) == size, f"release of 0x{va:x} not reserved so"
        self.inner.release(va, size)
        with self._lock:
            del self.live_reserved[va]

    def create(self, size: int, device: int) -> object:
        self._enter("create", (size, device))
        handle = self.inner.create(size, device)
        with self._lock:
            self.live_handles.add(id(handle))
        return handle

    def free(self, handle: object) -> None:
        self._enter("free", (handle,))
        with self._lock:
            assert id(handle) in self.live_handles, f"free of {handle!r}: not live (twice?)"
        self.inner.free(handle)
        with self._lock:
            self.live_handles.discard(id(handle))

    def map(self, va: int, size: int, handle: object, device: int) -> None:
        self._enter("map", (va, size, handle, device))
        with self._lock:
            assert id(handle) in self.live_handles, "map of a handle that is not live"
            assert va not in self.live_mapped, f"0x{va:x} mapped twice"
        self.inner.map(va, size, handle, device)
        with self._lock:
            self.live_mapped[va] = size

    def unmap(self, va: int, size: int) -> None:
        self._enter("unmap", (va, size))
        with self._lock:
            assert self.live_mapped.get(va) == size, f"unmap of 0x{va:x}: not mapped so"
        self.inner.unmap(va, size)
        with self._lock:
            del self.live_mapped[va]

    def copy_to_host(self, host_ptr: int, va: int, size: int) -> None:
        self._enter("copy_to_host", (host_ptr, va, size))
        self.inner.copy_to_host(host_ptr, va, size)

    def copy_from_host(self, va: int, host_ptr: int, size: int) -> None:
        self._enter("copy_from_host", (va, host_ptr, size))
        self.inner.copy_from_host(va, host_ptr, size)

    def host_alloc(self, size: int) -> tuple[int, object]:
        self._enter("host_alloc", (size,))
        ptr, handle = self.inner.host_alloc(size)
        with self._lock:
            self.live_host.add(id(handle))
        return ptr, handle

    def host_free(self, handle: object) -> None:
        self._enter("host_free", (handle,))
        with self._lock:
            assert id(handle) in self.live_host, f"host_free of {handle!r}: not live (twice?)"
        self.inner.host_free(handle)
        with self._lock:
            self.live_host.discard(id(handle))

    def synchronize(self, device: int) -> None:
        self._enter("synchronize", (device,))
        self.inner.synchronize(device)

    def mem_info(self, device: int) -> tuple[int, int]:
        self._enter("mem_info", (device,))
        return self.inner.mem_info(device)


# -- helpers --------------------------------------------------------------------------------


def pattern(seed: int, n: int) -> bytes:
    return random.Random(seed).randbytes(n)


def write(driver: Driver, va: int, data: bytes) -> None:
    buf = ctypes.create_string_buffer(data, len(data))
    driver.copy_from_host(va, ctypes.addressof(buf), len(data))
    driver.synchronize(0)


def read(driver: Driver, va: int, n: int) -> bytes:
    buf = ctypes.create_string_buffer(n)
    driver.copy_to_host(ctypes.addressof(buf), va, n)
    driver.synchronize(0)
    return buf.raw


class _ListHandler(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextlib.contextmanager
def capture_logs() -> Iterator[list[logging.LogRecord]]:
    """Records logged by ``npu_platform.memory`` (any level) while open."""
    log = logging.getLogger(LOGGER)
    handler = _ListHandler()
    old_level = log.level
    log.addHandler(handler)
    log.setLevel(logging.DEBUG)
    try:
        yield handler.records
    finally:
        log.removeHandler(handler)
        log.setLevel(old_level)


def _state(mgr: MemoryManager, va: int) -> State:
    return mgr.info(va).state


def _consistent(mgr: MemoryManager) -> None:
    problems = mgr.check_consistency()
    assert not problems, problems


def _finish(mgr: MemoryManager, drv: InstrumentedDriver) -> None:
    drv.clear_faults()
    _consistent(mgr)
    mgr.free_all()
    assert len(mgr) == 0
    leftover = drv.balanced()
    assert not leftover, leftover


def _small(mgr: MemoryManager, n: int = 1) -> int:
    """A size that takes ``n`` granules, with a ragged tail to test partial copies."""
    return mgr.granularity(0) * n - 3 if mgr.granularity(0) > 8 else mgr.granularity(0) * n


# -- scenarios ------------------------------------------------------------------------------


def scenario_malloc_free_roundtrip(h: Harness) -> None:
    mgr, drv = h.manager()
    gran = mgr.granularity(0)
    size = _small(mgr, 2)
    with mgr.region("weights"):
        va = mgr.malloc(size)
    assert va % gran == 0, "addresses are granularity aligned"
    info = mgr.info(va)
    assert (info.size, info.requested, info.tag, info.state) == (
        2 * gran,
        size,
        "weights",
        State.ACTIVE,
    )
    data = pattern(1, size)
    write(drv, va, data)
    assert read(drv, va, size) == data
    assert mgr.malloc(0) == 0
    mgr.free(0)  # no-op, like free(NULL)
    mgr.free(va)
    assert not mgr.owns(va)
    try:
        mgr.free(va)
    except UnknownAllocation as exc:
        assert f"0x{va:x}" in str(exc)
    else:
        raise AssertionError("a second free must raise UnknownAllocation")
    _finish(mgr, drv)


def scenario_backup_survives_others_do_not(h: Harness) -> None:
    mgr, drv = h.manager()
    size = _small(mgr)
    with mgr.region("state", enable_cpu_backup=True):
        kept = [mgr.malloc(size) for _ in range(3)]
    with mgr.region("state"):
        lost = mgr.malloc(size)
    for i, va in enumerate([*kept, lost]):
        write(drv, va, pattern(i, size))
    assert mgr.pause("state") == 4
    assert all(_state(mgr, va) is State.PAUSED for va in [*kept, lost])
    assert not drv.live_mapped, "pause unmaps everything of the tag"
    # While paused the backup holds the data.
    for i, va in enumerate(kept):
        ptr = mgr.backup_pointer(va, size)
        assert ptr is not None
        assert ctypes.string_at(ptr, size) == pattern(i, size)
    try:
        mgr.backup_pointer(lost, size)
    except NoCpuBackup as exc:
        assert "enable_cpu_backup" in str(exc)
    else:
        raise AssertionError("a paused allocation without backup has no backup")
    assert mgr.resume("state") == 4
    for i, va in enumerate(kept):
        assert read(drv, va, size) == pattern(i, size), "backed-up data restored"
        assert mgr.info(va).address == va
    assert read(drv, lost, size) != pattern(3, size), "no backup: contents discarded"
    assert mgr.backup_pointer(kept[0], size) is None, "backup freed after resume"
    assert not drv.live_host
    _finish(mgr, drv)


def scenario_tag_selectivity(h: Harness) -> None:
    """Weights + KV cache: pausing kv_cache leaves weights active and readable."""
    mgr, drv = h.manager()
    size = _small(mgr)
    with mgr.region("weights", enable_cpu_backup=True):
        weights = mgr.malloc(size)
    with mgr.region("kv_cache"):
        kv = [mgr.malloc(size) for _ in range(2)]
    with mgr.region("other"):
        other = mgr.malloc(size)
    write(drv, weights, pattern(10, size))
    write(drv, other, pattern(11, size))
    mgr.pause("kv_cache")
    assert [_state(mgr, va) for va in kv] == [State.PAUSED, State.PAUSED]
    assert _state(mgr, weights) is State.ACTIVE
    assert read(drv, weights, size) == pattern(10, size)
    assert read(drv, other, size) == pattern(11, size)
    mgr.pause("weights")
    assert _state(mgr, other) is State.ACTIVE
    mgr.resume("kv_cache")
    assert _state(mgr, weights) is State.PAUSED
    mgr.resume("weights")
    assert read(drv, weights, size) == pattern(10, size)
    stats = mgr.stats()
    assert stats["kv_cache"]["count"] == 2
    assert stats["kv_cache"]["active_bytes"] == 2 * mgr.granularity(0)
    _finish(mgr, drv)


def scenario_pause_all_with_none(h: Harness) -> None:
    mgr, drv = h.manager()
    size = _small(mgr)
    vas = []
    for i, tag in enumerate(["a", "b", "c"]):
        with mgr.region(tag, enable_cpu_backup=True):
            vas.append(mgr.malloc(size))
        write(drv, vas[-1], pattern(20 + i, size))
    assert mgr.pause() == 3
    assert {_state(mgr, va) for va in vas} == {State.PAUSED}
    assert not drv.live_mapped and not drv.live_handles
    assert mgr.resume() == 3
    for i, va in enumerate(vas):
        assert read(drv, va, size) == pattern(20 + i, size)
    _finish(mgr, drv)


def scenario_nested_regions(h: Harness) -> None:
    mgr, drv = h.manager()
    size = _small(mgr)
    assert not mgr.intercepting()
    with mgr.region("outer", enable_cpu_backup=True):
        a = mgr.malloc(size)
        with mgr.region("inner"):
            assert mgr.current_region() == ("inner", False, True)
            b = mgr.malloc(size)
            with mgr.disable():
                assert not mgr.intercepting()
                assert mgr.current_region().tag == "inner"
            assert mgr.intercepting()
        c = mgr.malloc(size)
        try:
            with mgr.region("boom"):
                raise KeyError("body failure")
        except KeyError:
            pass
        assert mgr.current_region() == ("outer", True, True), "restored after an exception"
    assert not mgr.intercepting()
    tags = {mgr.info(va).tag: mgr.info(va).enable_cpu_backup for va in (a, b, c)}
    assert tags == {"outer": True, "inner": False}
    # Regions are per thread.
    seen: list[object] = []
    with mgr.region("main-thread"):
        t = threading.Thread(target=lambda: seen.append(mgr.current_region()))
        t.start()
        t.join()
    assert seen == [("default", False, False)]
    mgr.pause("inner")
    assert _state(mgr, a) is State.ACTIVE and _state(mgr, b) is State.PAUSED
    mgr.resume("inner")
    _finish(mgr, drv)


def scenario_double_pause_and_resume_are_logged_noops(h: Harness) -> None:
    mgr, drv = h.manager()
    size = _small(mgr)
    with mgr.region("kv", enable_cpu_backup=True):
        va = mgr.malloc(size)
    write(drv, va, pattern(30, size))
    mgr.pause("kv")
    drv.reset_counts()
    with capture_logs() as records:
        assert mgr.pause("kv") == 0
    assert sum(drv.calls[m] for m in ("unmap", "free", "copy_to_host", "host_alloc")) == 0
    assert any(
        r.levelno == logging.WARNING and "already paused" in r.getMessage() for r in records
    ), [r.getMessage() for r in records]
    mgr.resume("kv")
    drv.reset_counts()
    with capture_logs() as records:
        assert mgr.resume("kv") == 0
        assert mgr.resume() == 0
    assert drv.calls["create"] == drv.calls["map"] == drv.calls["copy_from_host"] == 0
    assert sum("already active" in r.getMessage() for r in records) == 2
    assert read(drv, va, size) == pattern(30, size)
    # Mixed: a new allocation in a paused tag gets paused, the paused one is skipped.
    mgr.pause("kv")
    with mgr.region("kv"):
        fresh = mgr.malloc(size)
    assert _state(mgr, fresh) is State.ACTIVE
    with capture_logs() as records:
        assert mgr.pause("kv") == 1
    assert any("left as they are" in r.getMessage() for r in records)
    mgr.resume()
    _finish(mgr, drv)


def scenario_unknown_and_empty_tags(h: Harness) -> None:
    mgr, drv = h.manager()
    size = _small(mgr)
    with mgr.region("gone"):
        va = mgr.malloc(size)
    mgr.free(va)
    with mgr.region("live"):
        live = mgr.malloc(size)
    drv.reset_counts()
    with capture_logs() as records:
        assert mgr.pause("never-used") == 0
        assert mgr.resume("never-used") == 0
        assert mgr.pause("gone") == 0  # had allocations, none left
        assert mgr.resume("gone") == 0
    assert sum(drv.calls.values()) == 0, drv.calls
    warnings = [r.getMessage() for r in records if r.levelno >= logging.WARNING]
    assert len(warnings) == 2 and all("never-used" in w for w in warnings), warnings
    assert _state(mgr, live) is State.ACTIVE
    empty_mgr, empty_drv = h.manager()
    assert empty_mgr.pause() == 0 and empty_mgr.resume() == 0
    _finish(empty_mgr, empty_drv)
    _finish(mgr, drv)


def scenario_free_while_paused_releases_once(h: Harness) -> None:
    mgr, drv = h.manager()
    size = _small(mgr)
    with mgr.region("kv", enable_cpu_backup=True):
        backed = mgr.malloc(size)
    with mgr.region("kv"):
        plain = mgr.malloc(size)
    mgr.pause("kv")
    assert len(drv.live_host) == 1
    drv.reset_counts()
    mgr.free(backed)
    mgr.free(plain)
    # Paused memory has no mapping and no physical memory: free only gives back the address
    # ranges and the backup, once each.
    assert drv.calls["release"] == 2
    assert drv.calls["host_free"] == 1
    assert drv.calls["unmap"] == drv.calls["free"] == 0
    released = sorted(args[0] for m, args in drv.log if m == "release")
    assert released == sorted([backed, plain])
    assert not drv.balanced()
    # Resuming the tag afterwards touches nothing.
    drv.reset_counts()
    mgr.resume("kv")
    assert drv.calls["create"] == 0
    # An active allocation with a retained backup: unmap, free, release, host_free once each.
    mgr.retain_cpu_backup = True
    with mgr.region("w", enable_cpu_backup=True):
        va = mgr.malloc(size)
    mgr.pause("w")
    mgr.resume("w")
    assert mgr.backup_pointer(va, size) is not None, "retained"
    drv.reset_counts()
    mgr.free(va)
    assert (drv.calls["unmap"], drv.calls["free"], drv.calls["release"]) == (1, 1, 1)
    assert drv.calls["host_free"] == 1
    _finish(mgr, drv)


def scenario_oom_during_resume(h: Harness) -> None:
    mgr, drv = h.manager()
    gran = mgr.granularity(0)
    size = _small(mgr)
    with mgr.region("kv_cache", enable_cpu_backup=True):
        vas = [mgr.malloc(size) for _ in range(3)]
    for i, va in enumerate(vas):
        write(drv, va, pattern(40 + i, size))
    mgr.pause("kv_cache")
    try:
        h.limit_free(drv.inner, gran)  # room for exactly one allocation
    except LimitUnsupported as exc:
        mgr.resume()
        _finish(mgr, drv)
        h.skip(str(exc))
        return
    try:
        try:
            mgr.resume("kv_cache")
        except ResumeOutOfMemory as exc:
            err = exc
        else:
            raise AssertionError("resume must run out of memory")
        text = str(err)
        assert isinstance(err, MemoryError) and isinstance(err, NPUPlatformError)
        assert "kv_cache" in text and f"({gran} bytes)" in text, text
        assert "free" in text and "resume(tag='kv_cache') again" in text, text
        assert err.tag == "kv_cache" and err.needed_bytes == gran
        assert err.resumed == vas[:1] and err.still_paused == vas[1:]
        assert [_state(mgr, va) for va in vas] == [State.ACTIVE, State.PAUSED, State.PAUSED]
        assert read(drv, vas[0], size) == pattern(40, size)
        for i, va in enumerate(vas[1:], start=1):
            ptr = mgr.backup_pointer(va, size)
            assert ptr is not None and ctypes.string_at(ptr, size) == pattern(40 + i, size)
        _consistent(mgr)
        # Still no memory: the retry fails the same way and changes nothing.
        try:
            mgr.resume("kv_cache")
        except ResumeOutOfMemory as again:
            assert again.resumed == [] and again.still_paused == vas[1:]
        else:
            raise AssertionError("second resume must fail too")
    finally:
        h.limit_free(drv.inner, None)
    assert mgr.resume("kv_cache") == 2
    for i, va in enumerate(vas):
        assert read(drv, va, size) == pattern(40 + i, size)
    _finish(mgr, drv)


def scenario_memory_margin(h: Harness) -> None:
    mgr, drv = h.manager()
    gran = mgr.granularity(0)
    with mgr.region("kv"):
        va = mgr.malloc(gran)
    mgr.pause("kv")
    try:
        h.limit_free(drv.inner, 3 * gran)
    except LimitUnsupported as exc:
        mgr.resume()
        _finish(mgr, drv)
        h.skip(str(exc))
        return
    try:
        mgr.memory_margin_bytes = 2 * gran + 1
        try:
            mgr.malloc(gran, tag="kv")
        except AllocationOutOfMemory as exc:
            assert "memory_margin_bytes" in str(exc) and exc.margin_bytes == 2 * gran + 1
        else:
            raise AssertionError("allocation below the margin must fail")
        try:
            mgr.resume("kv")
        except ResumeOutOfMemory as exc:
            assert "memory_margin_bytes" in str(exc)
        else:
            raise AssertionError("resume below the margin must fail")
        assert _state(mgr, va) is State.PAUSED
        mgr.memory_margin_bytes = 2 * gran
        mgr.resume("kv")  # exactly at the margin is allowed
        assert _state(mgr, va) is State.ACTIVE
        try:
            mgr.memory_margin_bytes = -1
        except ValueError:
            pass
        else:
            raise AssertionError("a negative margin is refused")
    finally:
        h.limit_free(drv.inner, None)
        mgr.memory_margin_bytes = 0
    _finish(mgr, drv)


def scenario_allocation_oom_leaves_nothing_behind(h: Harness) -> None:
    mgr, drv = h.manager()
    gran = mgr.granularity(0)
    try:
        h.limit_free(drv.inner, gran)
    except LimitUnsupported as exc:
        h.skip(str(exc))
        return
    try:
        try:
            mgr.malloc(2 * gran, tag="big")
        except AllocationOutOfMemory as exc:
            assert "big" in str(exc) and isinstance(exc, OutOfMemory)
        else:
            raise AssertionError("must run out of memory")
        assert len(mgr) == 0 and not drv.balanced(), "the reservation was given back"
    finally:
        h.limit_free(drv.inner, None)
    _finish(mgr, drv)


def scenario_pause_copy_failure_loses_nothing(h: Harness) -> None:
    mgr, drv = h.manager()
    size = _small(mgr)
    with mgr.region("w", enable_cpu_backup=True):
        vas = [mgr.malloc(size) for _ in range(3)]
    for i, va in enumerate(vas):
        write(drv, va, pattern(50 + i, size))
    drv.fail_on("copy_to_host", after=1)  # the second allocation's backup copy fails
    try:
        mgr.pause("w")
    except PauseError as exc:
        err = exc
    else:
        raise AssertionError("pause must fail")
    assert "nothing was lost" in str(err)
    assert err.paused == vas[:1] and err.still_active == vas[1:]
    assert [_state(mgr, va) for va in vas] == [State.PAUSED, State.ACTIVE, State.ACTIVE]
    assert len(drv.live_host) == 1, "the failed copy's buffer was freed"
    drv.clear_faults()
    for i, va in enumerate(vas[1:], start=1):
        assert read(drv, va, size) == pattern(50 + i, size)
    _consistent(mgr)
    assert mgr.pause("w") == 2  # retry finishes the job
    mgr.resume("w")
    for i, va in enumerate(vas):
        assert read(drv, va, size) == pattern(50 + i, size)
    # A failing unmap leaves the allocation active (the backup is harmlessly refreshed).
    drv.fail_on("unmap")
    try:
        mgr.pause("w")
    except PauseError as exc:
        assert exc.still_active == vas
    drv.clear_faults()
    assert _state(mgr, vas[0]) is State.ACTIVE
    _consistent(mgr)
    _finish(mgr, drv)


def scenario_resume_failure_is_retryable(h: Harness) -> None:
    mgr, drv = h.manager()
    size = _small(mgr)
    with mgr.region("w", enable_cpu_backup=True):
        vas = [mgr.malloc(size) for _ in range(3)]
    for i, va in enumerate(vas):
        write(drv, va, pattern(60 + i, size))
    mgr.pause("w")
    for method in ("map", "copy_from_host"):
        drv.fail_on(method, after=1)
        try:
            mgr.resume("w")
        except ResumeError as exc:
            assert len(exc.resumed) == 1 and len(exc.still_paused) == 2
            assert "backups intact" in str(exc)
        else:
            raise AssertionError(f"resume must fail on {method}")
        drv.clear_faults()
        _consistent(mgr)
        assert len(drv.live_handles) == 1, "the failed allocation's memory was freed"
        mgr.pause("w")
    mgr.resume("w")
    for i, va in enumerate(vas):
        assert read(drv, va, size) == pattern(60 + i, size)
    _finish(mgr, drv)


def scenario_retain_cpu_backup(h: Harness) -> None:
    mgr, drv = h.manager(retain_cpu_backup=True)
    size = _small(mgr)
    with mgr.region("w", enable_cpu_backup=True):
        va = mgr.malloc(size)
    write(drv, va, pattern(70, size))
    mgr.pause("w")
    mgr.resume("w")
    ptr = mgr.backup_pointer(va, size)
    assert ptr is not None and ctypes.string_at(ptr, size) == pattern(70, size)
    write(drv, va, pattern(71, size))
    drv.reset_counts()
    mgr.pause("w")
    assert drv.calls["host_alloc"] == 0, "the retained buffer is reused"
    assert mgr.backup_pointer(va, size) == ptr
    assert ctypes.string_at(ptr, size) == pattern(71, size), "refreshed in place"
    mgr.resume("w")
    mgr.retain_cpu_backup = False
    assert mgr.backup_pointer(va, size) is None and not drv.live_host
    _finish(mgr, drv)


def scenario_backup_queries(h: Harness) -> None:
    mgr, drv = h.manager()
    size = _small(mgr, 2)
    with mgr.region("w", enable_cpu_backup=True):
        va = mgr.malloc(size)
    data = pattern(80, size)
    write(drv, va, data)
    assert mgr.backup_pointer(va, size) is None, "active, not retained"
    mgr.pause("w")
    ptr = mgr.backup_pointer(va + 100, 50)
    assert ptr is not None and ctypes.string_at(ptr, 50) == data[100:150]
    for bad in ((va + size - 10, 20), (va - 1, 1)):
        try:
            mgr.backup_pointer(*bad)
        except UnknownAllocation:
            pass
        else:
            raise AssertionError(f"range {bad} is not inside the allocation")
    mgr.resume("w")
    _finish(mgr, drv)


def scenario_freed_memory_keeps_its_new_tag(h: Harness) -> None:
    """Upstream bug 85: memory freed under one tag must not come back under another."""
    mgr, drv = h.manager()
    size = _small(mgr)
    with mgr.region("kv_cache"):
        kv = [mgr.malloc(size) for _ in range(4)]
    for va in kv:
        mgr.free(va)
    with mgr.region("weights", enable_cpu_backup=True):
        weights = [mgr.malloc(size) for _ in range(4)]
    for i, va in enumerate(weights):
        write(drv, va, pattern(90 + i, size))
        assert mgr.pool_key(va) == ("weights", True, 0)
    mgr.pause("kv_cache")  # nothing of kv_cache is alive: weights untouched
    assert all(_state(mgr, va) is State.ACTIVE for va in weights)
    for i, va in enumerate(weights):
        assert read(drv, va, size) == pattern(90 + i, size)
    _finish(mgr, drv)


def scenario_threads_allocate_while_pausing(h: Harness) -> None:
    mgr, drv = h.manager()
    size = _small(mgr)
    with mgr.region("b", enable_cpu_backup=True):
        fixed = [mgr.malloc(size) for _ in range(3)]
    for i, va in enumerate(fixed):
        write(drv, va, pattern(100 + i, size))
    stop = threading.Event()
    errors: list[BaseException] = []

    def allocator() -> None:
        try:
            rng = random.Random(7)
            mine: list[tuple[int, bytes]] = []
            for step in range(150):
                with mgr.region("a"):
                    va = mgr.malloc(size)
                data = rng.randbytes(64)
                write(drv, va, data)
                mine.append((va, data))
                with mgr.region("b"):  # same tag as the one being paused; never touched
                    other = mgr.malloc(size)
                mgr.free(other)
                if step % 3 == 2:
                    old, old_data = mine.pop(0)
                    assert read(drv, old, 64) == old_data
                    mgr.free(old)
            for va, data in mine:
                assert read(drv, va, 64) == data
                mgr.free(va)
        except BaseException as exc:
            errors.append(exc)
        finally:
            stop.set()

    def pauser() -> None:
        try:
            while not stop.is_set():
                mgr.pause("b")
                mgr.resume("b")
                # Python locks are not fair: a pauser that re-takes the lock at once can
                # starve the allocator for minutes on a loaded machine. Real callers pause
                # and resume between steps of work, not back to back.
                time.sleep(0.001)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=allocator), threading.Thread(target=pauser)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "threads hung"
    assert not errors, errors
    _consistent(mgr)
    mgr.resume()
    for i, va in enumerate(fixed):
        assert read(drv, va, size) == pattern(100 + i, size)
    assert {info.tag for info in mgr.allocations()} == {"b"} and len(mgr) == 3
    _finish(mgr, drv)


def scenario_free_from_inside_an_operation_is_deferred(h: Harness) -> None:
    """A tensor finalizer run by the garbage collector in the middle of a pause/resume on
    the same thread frees memory re-entrantly; it must wait for the operation to end."""
    mgr, drv = h.manager()
    size = _small(mgr)
    with mgr.region("kv", enable_cpu_backup=True):
        vas = [mgr.malloc(size) for _ in range(3)]
    for i, va in enumerate(vas):
        write(drv, va, pattern(110 + i, size))
    victims = [vas[2], vas[1]]  # still to be processed when the first unmap happens

    def finalizer(args: tuple[object, ...]) -> None:
        if victims:
            victim = victims.pop(0)
            mgr.free(victim)  # re-entrant: deferred
            assert not mgr.owns(victim)
            try:
                mgr.free(victim)
            except UnknownAllocation:
                pass
            else:
                raise AssertionError("a deferred free counts as freed")

    drv.before["unmap"] = finalizer
    assert mgr.pause("kv") == 3
    drv.clear_faults()
    assert [info.address for info in mgr.allocations()] == [vas[0]]
    assert _state(mgr, vas[0]) is State.PAUSED
    drv.before["create"] = lambda args: mgr.free(vas[0]) if mgr.owns(vas[0]) else None
    assert mgr.resume("kv") == 1
    drv.clear_faults()
    assert len(mgr) == 0
    assert drv.calls["release"] == 3, "each range released once"
    _finish(mgr, drv)


SCENARIOS: dict[str, Callable[[Harness], None]] = {
    name.removeprefix("scenario_"): fn
    for name, fn in sorted(globals().items())
    if name.startswith("scenario_") and callable(fn)
}
