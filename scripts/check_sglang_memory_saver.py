#!/usr/bin/env python3
"""Show sglang's memory-saver adapter releasing and re-taking memory on the emulated NPU.

Imports sglang's own ``sglang.srt.utils.torch_memory_saver_adapter`` (unmodified), creates
the adapter the way sglang does (``TorchMemorySaverAdapter.create(enable=True)``), puts a
256 MiB tensor in a ``kv_cache`` region, then pauses and resumes that tag, printing the
process's resident memory (VmRSS from /proc/self/status) at each step. The tensor is made
as sglang's KV pools make theirs, with ``torch.empty(..., device="npu")`` inside the region;
npu_platform's allocator route (torch_npu's pluggable allocator and a memory pool per tag)
puts it in the memory manager, whose ACL driver runs on the emulation's libascendcl.so, as
on an Ascend NPU. The emulated device's memory is host memory, so RSS shows it.

Run:  NPU_PLATFORM_EMULATE=1 .venv/bin/python scripts/check_sglang_memory_saver.py
(it turns emulation on itself when NPU_PLATFORM_EMULATE is unset). Exits 1 if RSS does not
fall by most of the region on pause and rise again on resume, or if the data or the address
changes; 2 when not on the emulated NPU (a real NPU's memory does not show in RSS).
"""

from __future__ import annotations

import argparse
import os
import sys

MIB = 1 << 20


def rss_bytes() -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("VmRSS not found in /proc/self/status")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=256, help="region size in MiB (256)")
    args = parser.parse_args(argv)
    os.environ.setdefault("NPU_PLATFORM_EMULATE", "1")

    from npu_platform.detect import detect

    if not detect().emulated:
        print(
            "this check measures RSS, so it runs on the emulated NPU: set NPU_PLATFORM_EMULATE=1",
            file=sys.stderr,
        )
        return 2

    # sglang's adapter module, as sglang imports it; its `import torch_memory_saver` is
    # redirected to npu_platform by the platform entry point (run on sglang's import).
    import sglang.srt.utils.torch_memory_saver_adapter as adapter_module
    import torch

    from npu_platform.sglang import memory_saver
    from npu_platform.torch_memory_saver import torch_memory_saver as saver

    adapter = adapter_module.TorchMemorySaverAdapter.create(enable=True)
    backed = memory_saver.adapter_backed_by_manager(adapter)
    print(f"adapter: {type(adapter).__name__}, backed by npu_platform's manager: {backed}")
    if not backed:
        print(f"memory saver status: {memory_saver.status()}", file=sys.stderr)
        return 1

    size = args.mib * MIB
    start = rss_bytes()
    with adapter.region("kv_cache"):
        kv = torch.empty(size, dtype=torch.uint8, device="npu")  # as sglang's KV pools do
    in_manager = saver.manager.owns(kv.data_ptr())
    print(
        f"allocated with torch.empty on {kv.device} in the region; "
        f"in npu_platform's manager: {in_manager} (driver: {saver.manager.driver.name})"
    )
    if not in_manager:
        return 1
    kv.fill_(0x5A)
    ptr = kv.data_ptr()
    filled = rss_bytes()
    adapter.pause("kv_cache")
    paused = rss_bytes()
    adapter.resume("kv_cache")
    kv.fill_(0x5A)  # kv_cache has no CPU backup: fresh memory, refilled as sglang would
    resumed = rss_bytes()

    def show(label: str, value: int) -> None:
        print(f"{label:<34} RSS {value / MIB:9.1f} MiB ({(value - start) / MIB:+8.1f})")

    show("start", start)
    show(f"after allocating {args.mib} MiB kv_cache", filled)
    show("after pause('kv_cache')", paused)
    show("after resume('kv_cache')", resumed)
    ok = True
    if filled - paused < 0.9 * size:
        print(f"FAIL: pause released {(filled - paused) / MIB:.1f} MiB, expected ~{args.mib}")
        ok = False
    if resumed - paused < 0.9 * size:
        print(f"FAIL: resume took {(resumed - paused) / MIB:.1f} MiB, expected ~{args.mib}")
        ok = False
    if kv.data_ptr() != ptr or not bool((kv == 0x5A).all()):
        print("FAIL: the tensor's address or contents changed across pause/resume")
        ok = False
    print(f"data_ptr unchanged: 0x{ptr:x}" if kv.data_ptr() == ptr else "data_ptr changed")
    print("OK" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
