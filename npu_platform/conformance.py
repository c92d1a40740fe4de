"""``npu-platform conformance``: the plugin's contract checks against the installed stack.

Runs on whatever detection finds: the emulated NPU here, the real NPU on an Ascend machine.
Each group is a list of ``(name, passed, detail)`` results; a detail starting with
``"skipped:"`` marks a check that does not apply on this machine. Groups:

* ``memory``: the sleep/wake manager's pause and resume semantics on the current device's
  driver (host in emulation, ACL on an Ascend NPU);
* ``vllm``: :mod:`npu_platform.vllm.conformance` when vLLM is installed;
* ``sglang``: :mod:`npu_platform.sglang.conformance` when sglang is installed.

The framework groups are imported only when their framework is installed, and this module
is imported only by the CLI, so neither integration imports the other.
"""

from __future__ import annotations

import ctypes
import importlib
import importlib.util
import json
import sys
import traceback
from collections.abc import Callable, Iterable
from typing import TextIO

from npu_platform.detect import detect

Result = tuple[str, bool, str]

GROUPS = ("memory", "vllm", "sglang")
_FRAMEWORK_MODULES = {
    "vllm": ("vllm", "npu_platform.vllm.conformance"),
    "sglang": ("sglang", "npu_platform.sglang.conformance"),
}
_PROBE_BYTES = 4 << 20


def _pattern(size: int, seed: int) -> bytes:
    return bytes((i * 31 + seed) & 0xFF for i in range(256)) * (size // 256)


def _read(manager, address: int, size: int) -> bytes:  # noqa: ANN001
    """Read device memory through the driver (works for device memory the host can't map)."""
    buffer = ctypes.create_string_buffer(size)
    manager.driver.copy_to_host(ctypes.addressof(buffer), address, size)
    manager.driver.synchronize(0)
    return buffer.raw


def _write(manager, address: int, data: bytes) -> None:  # noqa: ANN001
    buffer = ctypes.create_string_buffer(data, len(data))
    manager.driver.copy_from_host(address, ctypes.addressof(buffer), len(data))
    manager.driver.synchronize(0)


def memory_checks() -> list[Result]:
    """Pause/resume semantics on this device's driver, with a fresh manager."""
    from npu_platform.memory.drivers import default_driver_name, load_driver
    from npu_platform.memory.manager import MemoryManager
    from npu_platform.memory.table import State

    results: list[Result] = []
    driver_name = default_driver_name()
    manager = MemoryManager(load_driver(driver_name))
    try:
        with manager.region("conformance_weights", enable_cpu_backup=True):
            kept = manager.malloc(_PROBE_BYTES, 0)
        with manager.region("conformance_kv", enable_cpu_backup=False):
            dropped = manager.malloc(_PROBE_BYTES, 0)
        _write(manager, kept, _pattern(_PROBE_BYTES, 1))
        _write(manager, dropped, _pattern(_PROBE_BYTES, 2))

        def states() -> dict[int, State]:
            return {info.address: info.state for info in manager.allocations()}

        manager.pause("conformance_kv")
        ok = states() == {kept: State.ACTIVE, dropped: State.PAUSED}
        results.append(("pause(tag) pauses only that tag", ok, f"{driver_name} driver"))

        manager.pause("conformance_kv")
        ok = states()[dropped] is State.PAUSED
        results.append(("pausing a paused tag is a no-op", ok, "no error, state unchanged"))

        manager.pause(None)
        ok = set(states().values()) == {State.PAUSED}
        results.append(("pause(None) pauses every tag", ok, f"{len(states())} allocations"))

        manager.resume(None)
        ok = set(states().values()) == {State.ACTIVE} and set(states()) == {kept, dropped}
        results.append(("resume keeps the addresses", ok, f"{kept:#x}, {dropped:#x}"))

        ok = _read(manager, kept, _PROBE_BYTES) == _pattern(_PROBE_BYTES, 1)
        results.append(("CPU backup restores the contents", ok, f"{_PROBE_BYTES} bytes"))

        manager.resume(None)
        results.append(("resuming an active tag is a no-op", True, "no error"))

        manager.free(dropped)
        manager.free(kept)
        results.append(("free releases everything", not manager.allocations(), "table empty"))
    except Exception as exc:
        results.append(("memory manager round trip", False, _describe(exc)))
    finally:
        manager.free_all()
    return results


def _describe(exc: BaseException) -> str:
    return "raised " + traceback.format_exception_only(type(exc), exc)[-1].strip()


def _framework_checks(group: str) -> list[Result]:
    framework, module_name = _FRAMEWORK_MODULES[group]
    if importlib.util.find_spec(framework) is None:
        return [(f"{group} integration", True, f"skipped: {framework} is not installed")]
    try:
        module = importlib.import_module(module_name)
        return list(module.run_all())
    except Exception as exc:
        return [(f"{group} integration", False, _describe(exc))]


def run(groups: Iterable[str] = GROUPS) -> dict[str, list[Result]]:
    runners: dict[str, Callable[[], list[Result]]] = {
        "memory": memory_checks,
        "vllm": lambda: _framework_checks("vllm"),
        "sglang": lambda: _framework_checks("sglang"),
    }
    return {group: runners[group]() for group in groups}


def _status(passed: bool, detail: str) -> str:
    if detail.startswith("skipped:"):
        return "skip"
    return "pass" if passed else "FAIL"


def main(
    groups: Iterable[str] = GROUPS, as_json: bool = False, stream: TextIO | None = None
) -> int:
    """Run the checks, print a table (or JSON), return 1 if any check failed."""
    out = stream or sys.stdout
    decision = detect()
    if not decision.is_npu:
        message = (
            f"conformance needs an NPU, real or emulated: {decision.reason}. "
            "Run `npu-platform doctor` for details."
        )
        if as_json:
            print(
                json.dumps({"ok": False, "detect": decision.as_dict(), "error": message}), file=out
            )
        else:
            print(message, file=out)
        return 1
    results = run(groups)
    failed = sum(1 for rows in results.values() for _, passed, detail in rows if not passed)
    if as_json:
        payload = {
            "ok": failed == 0,
            "detect": decision.as_dict(),
            "checks": [
                {"group": g, "name": n, "status": _status(p, d).lower(), "detail": d}
                for g, rows in results.items()
                for n, p, d in rows
            ],
        }
        print(json.dumps(payload), file=out)
        return 1 if failed else 0
    print(
        f"npu-platform conformance on the {decision.target.value} NPU ({decision.reason})", file=out
    )
    width = max((len(n) for rows in results.values() for n, _, _ in rows), default=20)
    for group, rows in results.items():
        print(f"\n{group}", file=out)
        for name, passed, detail in rows:
            print(f"  [{_status(passed, detail):>4}] {name:<{width}}  {detail}", file=out)
    total = sum(len(rows) for rows in results.values())
    print(f"\n{total - failed} passed, {failed} failed", file=out)
    return 1 if failed else 0
