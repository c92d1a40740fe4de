#!/usr/bin/env python
"""What the installed-but-inactive vLLM plugin costs at start-up.

    .venv/bin/python bench/import_overhead.py [--runs 5] [--json]

Each run starts two fresh interpreters on this machine, without an NPU and without
emulation, and times inside each one ``import vllm``, the resolution of
``vllm.platforms.current_platform`` (which calls every platform plugin) and
``load_general_plugins()`` (which calls every general plugin):

* ``inactive``: the plugin is installed and vLLM loads its entry points; they answer "no
  NPU" and register nothing;
* ``absent``: the same, with ``VLLM_PLUGINS`` naming only vLLM's own general plugins, so
  vLLM never loads ours: as if it were not installed.

The two kinds alternate within the run (so machine noise hits both alike); the medians are
compared. ``import_overhead_ratio`` = inactive / absent (1.0 = no overhead). Also reported:
the time our two entry points themselves take to import and answer (``entry_points_ms``),
measured directly in a fresh interpreter.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

CHILD = r"""
import json, time
start = time.perf_counter()
import vllm
from vllm.platforms import current_platform
current_platform.device_type
from vllm.plugins import load_general_plugins
load_general_plugins()
total = time.perf_counter() - start
print(json.dumps({"seconds": total, "platform": type(current_platform).__name__}))
"""

ENTRY_POINTS = r"""
import json, time
from importlib.metadata import entry_points
ours = [ep for group in ("vllm.platform_plugins", "vllm.general_plugins")
        for ep in entry_points(group=group) if ep.name == "npu_platform"]
start = time.perf_counter()
for ep in ours:
    ep.load()()
print(json.dumps({"seconds": time.perf_counter() - start}))
"""

VLLM_OWN_GENERAL_PLUGINS = "lora_filesystem_resolver,lora_hf_hub_resolver"


def _env(absent: bool) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NPU_PLATFORM_", "VLLM_"))}
    env["NPU_PLATFORM_EMULATE"] = "0"
    if absent:
        env["VLLM_PLUGINS"] = VLLM_OWN_GENERAL_PLUGINS
    return env


def _child(code: str, env: dict[str, str]) -> dict:
    proc = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        raise SystemExit(f"child failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    _child(CHILD, _env(absent=False))  # warm the file cache once, unmeasured
    inactive, absent, platforms = [], [], set()
    for i in range(args.runs):
        order = (False, True) if i % 2 == 0 else (True, False)
        for is_absent in order:
            result = _child(CHILD, _env(absent=is_absent))
            (absent if is_absent else inactive).append(result["seconds"])
            platforms.add(result["platform"])
    entry_ms = [_child(ENTRY_POINTS, _env(absent=False))["seconds"] * 1000 for _ in range(3)]

    med_inactive = statistics.median(inactive)
    med_absent = statistics.median(absent)
    summary = {
        "runs": args.runs,
        "inactive_s_median": med_inactive,
        "absent_s_median": med_absent,
        "inactive_s": inactive,
        "absent_s": absent,
        "platforms": sorted(platforms),
        "entry_points_ms": statistics.median(entry_ms),
        "import_overhead_ratio": med_inactive / med_absent,
    }
    print(f"import vllm + platform resolution + general plugins ({args.runs} runs each):")
    print(f"  plugin installed, inactive: {med_inactive * 1000:8.1f} ms (median)")
    print(f"  plugin absent (VLLM_PLUGINS): {med_absent * 1000:6.1f} ms (median)")
    print(f"  our entry points alone:     {summary['entry_points_ms']:8.2f} ms")
    print(f"  import_overhead_ratio = {summary['import_overhead_ratio']:.3f}")
    print(f"  platform in both: {', '.join(sorted(platforms))}")
    if args.json:
        print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
