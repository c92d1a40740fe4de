"""Host memory figures from /proc, shared by the emulated device and the host driver."""

from __future__ import annotations


def host_memory() -> tuple[int, int]:
    """(available, total) host memory in bytes, from ``/proc/meminfo``."""
    values: dict[str, int] = {}
    with open("/proc/meminfo") as fh:
        for line in fh:
            key, _, rest = line.partition(":")
            parts = rest.split()
            if parts:
                values[key] = int(parts[0]) * 1024
    return values.get("MemAvailable", values.get("MemFree", 0)), values.get("MemTotal", 0)
