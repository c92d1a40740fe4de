"""Benchmark the memory manager's pause/resume against plain copies of the same bytes.

    .venv/bin/python bench/memory_saver.py [--driver host|cuda] [--size-mib 1024]
                                           [--repeat 3] [--json]

Everything is measured in one run, on one driver, with the driver's own copy primitives:

plain copy
    ``copy_to_host`` (device -> host) and ``copy_from_host`` (host -> device) of the whole
    size between memory that is already allocated and touched: the best a backup can do.
pause / resume without backup (``pause_ms_per_gib``, ``resume_ms_per_gib``)
    What releasing and re-creating physical memory costs by itself.
pause / resume with backup
    In two modes: ``retained`` (``retain_cpu_backup=True``, steady state: the host buffer
    from the previous cycle is reused) and ``fresh`` (the default: a host buffer is
    allocated by every pause and freed by every resume).

The driver is wrapped in a timer that adds up the time spent in its physical-memory calls
(reserve, release, create, free, map, unmap, mem_info). Every pause/resume must release or
create physical memory, backup or not; what the *backup* costs is the rest of the call:
host buffer allocation, the copies, synchronisation, and the manager's own bookkeeping.

Ratios (1.0 = as fast as the plain copy):

``pause_backup_ratio`` / ``resume_backup_ratio``
    ``t_plain / (t_call - t_physical_calls)`` in retained mode: the throughput of the backup
    path of pause/resume over the plain copy.
``*_fresh``
    The same in fresh mode: includes allocating (and first-touching) or freeing the host
    buffer on every call.
``*_end_to_end``
    ``t_plain / t_call``: the whole call, physical memory included.
``released_fraction``
    Share of the tagged bytes given back by pause (host: VmRSS; device: free memory).

With ``--json`` the last line of output is one JSON object with all of these.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from npu_platform.memory.driver import Driver  # noqa: E402
from npu_platform.memory.drivers import load_driver  # noqa: E402
from npu_platform.memory.manager import MemoryManager  # noqa: E402

GIB = 1 << 30
MIB = 1 << 20


def _rss() -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def _timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


PHYSICAL_CALLS = ("reserve", "release", "create", "free", "map", "unmap", "mem_info")


class TimingDriver:
    """Forwards to a driver and adds up the time spent in its physical-memory calls."""

    def __init__(self, inner: Driver) -> None:
        self.inner = inner
        self.name = inner.name
        self.physical_s = 0.0
        for call in PHYSICAL_CALLS:
            setattr(self, call, self._timed(getattr(inner, call)))

    def _timed(self, fn: Callable[..., object]) -> Callable[..., object]:
        def call(*args: object) -> object:
            start = time.perf_counter()
            try:
                return fn(*args)
            finally:
                self.physical_s += time.perf_counter() - start

        return call

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)


class Bench:
    def __init__(self, driver: Driver, size: int, repeat: int, log: Callable[[str], None]):
        self.driver = driver
        self.size = size
        self.repeat = repeat
        self.log = log
        self.device = 0

    # -- plain copies -----------------------------------------------------------------

    def open_plain(self) -> None:
        """Device memory and a host buffer, both touched, kept for the whole run."""
        drv, size, dev = self.driver, self.size, self.device
        gran = drv.granularity(dev)
        self.plain_rounded = rounded = -(-size // gran) * gran
        self.plain_va = drv.reserve(rounded, dev)
        self.plain_handle = drv.create(rounded, dev)
        drv.map(self.plain_va, rounded, self.plain_handle, dev)
        self.plain_host, self.plain_host_handle = drv.host_alloc(size)
        ctypes.memset(self.plain_host, 1, size)  # touch every page of the host buffer
        drv.copy_from_host(self.plain_va, self.plain_host, size)  # and of the device memory
        drv.synchronize(dev)

    def close_plain(self) -> None:
        drv = self.driver
        drv.host_free(self.plain_host_handle)
        drv.unmap(self.plain_va, self.plain_rounded)
        drv.free(self.plain_handle)
        drv.release(self.plain_va, self.plain_rounded)

    def plain(self, op: str) -> float:
        """One plain copy in the direction ``op`` (pause: device->host) needs."""
        drv, size, dev = self.driver, self.size, self.device
        va, host = self.plain_va, self.plain_host
        if op == "pause":
            return _timed(lambda: (drv.copy_to_host(host, va, size), drv.synchronize(dev)))
        return _timed(lambda: (drv.copy_from_host(va, host, size), drv.synchronize(dev)))

    # -- manager ----------------------------------------------------------------------

    def fill(self, va: int, value: int) -> None:
        drv = self.driver
        host, handle = drv.host_alloc(self.size)
        try:
            ctypes.memset(host, value, self.size)
            drv.copy_from_host(va, host, self.size)
            drv.synchronize(self.device)
        finally:
            drv.host_free(handle)

    def sample(self, va: int) -> bytes:
        buf = ctypes.create_string_buffer(4096)
        out = b""
        for offset in (0, self.size // 2, self.size - 4096):
            self.driver.copy_to_host(ctypes.addressof(buf), va + offset, 4096)
            self.driver.synchronize(self.device)
            out += buf.raw
        return out

    def cycle_times(self, mgr: MemoryManager, tag: str) -> dict[str, float]:
        """Medians over the repeats, each op paired with a plain copy just before it.

        ``pause``/``resume``: seconds of the whole call; ``*_x``: outside physical-memory
        calls; ``*_ratio``/``*_e2e``: plain-copy seconds over ``*_x``/whole-call seconds.
        """
        timer = mgr.driver
        assert isinstance(timer, TimingDriver)
        samples: dict[str, list[float]] = {}
        for _ in range(self.repeat):
            for op in ("pause", "resume"):
                gc.collect()
                plain = self.plain(op)
                timer.physical_s = 0.0
                total = _timed(lambda op=op: getattr(mgr, op)(tag))
                outside = total - timer.physical_s
                for key, value in (
                    (op, total),
                    (op + "_x", outside),
                    (op + "_plain", plain),
                    (op + "_ratio", plain / max(outside, 1e-9)),
                    (op + "_e2e", plain / total),
                ):
                    samples.setdefault(key, []).append(value)
        return {key: statistics.median(values) for key, values in samples.items()}

    def released_fraction(self, mgr: MemoryManager, tag: str) -> float:
        host = self.driver.name == "host"
        gc.collect()
        before = _rss() if host else self.driver.mem_info(self.device)[0]
        mgr.pause(tag)
        after = _rss() if host else self.driver.mem_info(self.device)[0]
        mgr.resume(tag)
        released = (before - after) if host else (after - before)
        return released / self.size

    def run(self) -> dict[str, object]:
        size = self.size
        self.log(
            f"driver {self.driver.name}, {size / MIB:.0f} MiB; plain copy best of "
            f"{self.repeat}, pause/resume median of {self.repeat}"
        )
        self.open_plain()
        try:
            return self._run()
        finally:
            self.close_plain()

    def _run(self) -> dict[str, object]:
        size = self.size
        t_d2h = min(self.plain("pause") for _ in range(self.repeat))
        t_h2d = min(self.plain("resume") for _ in range(self.repeat))
        self.log(
            f"plain copy: device->host {size / t_d2h / GIB:.2f} GiB/s, "
            f"host->device {size / t_h2d / GIB:.2f} GiB/s"
        )
        mgr = MemoryManager(TimingDriver(self.driver))  # type: ignore[arg-type]
        nob = mgr.malloc(size, self.device, tag="nobackup", enable_cpu_backup=False)
        self.fill(nob, 3)
        released = self.released_fraction(mgr, "nobackup")
        plain = self.cycle_times(mgr, "nobackup")
        mgr.free(nob)

        bak = mgr.malloc(size, self.device, tag="backup", enable_cpu_backup=True)
        self.fill(bak, 0x5A)
        expected = self.sample(bak)
        fresh = self.cycle_times(mgr, "backup")
        assert self.sample(bak) == expected, "data lost in fresh mode"
        mgr.retain_cpu_backup = True
        mgr.pause("backup")  # warm-up: allocate the retained buffer once
        mgr.resume("backup")
        kept = self.cycle_times(mgr, "backup")
        assert self.sample(bak) == expected, "data lost in retained mode"
        mgr.free(bak)

        gib = size / GIB

        def ms(seconds: float) -> float:
            return round(seconds * 1000 / gib, 2)

        result: dict[str, object] = {
            "driver": self.driver.name,
            "size_bytes": size,
            "repeat": self.repeat,
            "plain_d2h_gib_s": round(gib / t_d2h, 3),
            "plain_h2d_gib_s": round(gib / t_h2d, 3),
            "pause_backup_ratio": round(kept["pause_ratio"], 3),
            "resume_backup_ratio": round(kept["resume_ratio"], 3),
            "pause_backup_ratio_fresh": round(fresh["pause_ratio"], 3),
            "resume_backup_ratio_fresh": round(fresh["resume_ratio"], 3),
            "pause_backup_ratio_end_to_end": round(kept["pause_e2e"], 3),
            "resume_backup_ratio_end_to_end": round(kept["resume_e2e"], 3),
            "pause_backup_ratio_fresh_end_to_end": round(fresh["pause_e2e"], 3),
            "resume_backup_ratio_fresh_end_to_end": round(fresh["resume_e2e"], 3),
            "released_fraction": round(released, 4),
            "pause_ms_per_gib": ms(plain["pause"]),
            "resume_ms_per_gib": ms(plain["resume"]),
            "pause_backup_ms_per_gib": ms(kept["pause"]),
            "resume_backup_ms_per_gib": ms(kept["resume"]),
            "pause_backup_fresh_ms_per_gib": ms(fresh["pause"]),
            "resume_backup_fresh_ms_per_gib": ms(fresh["resume"]),
            "pause_overhead_ms_per_gib": ms(plain["pause_x"]),
            "resume_overhead_ms_per_gib": ms(plain["resume_x"]),
            "plain_d2h_ms_per_gib": ms(t_d2h),
            "plain_h2d_ms_per_gib": ms(t_h2d),
        }
        for key, value in result.items():
            self.log(f"  {key:40s} {value}")
        return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--driver", default="host", choices=["host", "cuda", "acl"])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--json", action="store_true", help="end with one JSON line")
    args = parser.parse_args(argv)
    if args.size_mib <= 0 or args.repeat <= 0:
        parser.error("--size-mib and --repeat must be positive")
    try:
        driver = load_driver(args.driver)
    except Exception as exc:
        print(f"cannot use the {args.driver} driver: {exc}", file=sys.stderr)
        return 2
    bench = Bench(driver, args.size_mib * MIB, args.repeat, log=print)
    result = bench.run()
    if args.json:
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
