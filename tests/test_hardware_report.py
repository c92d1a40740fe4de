"""scripts/hardware_report.sh on a machine without an Ascend NPU (this one, CI).

The script runs ``npu-platform doctor --json`` and ``pytest -m npu tests/hardware`` and
prints a Markdown report. Here nothing can run: the report must say that no real Ascend NPU
was found, list every hardware test as skipped with the reason, carry the doctor summary,
write the same report to the file it names, and exit with 2 ("nothing ran"), not 0: a report
with no test run is not a pass.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import npu_platform
from tests.conftest import _real_npu_present

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "hardware_report.sh"
SKIP_REASON = "needs a real Ascend NPU (torch_npu with at least one device)"
#: The script's exit status when no hardware test ran.
NOTHING_RAN = 2


def _hardware_tests() -> list[str]:
    """Node ids of the test functions in tests/hardware (module-level ``def test_``)."""
    ids = []
    for path in sorted((ROOT / "tests" / "hardware").glob("test_*.py")):
        for name in re.findall(r"^def (test_\w+)\(", path.read_text(), re.MULTILINE):
            ids.append(f"tests/hardware/{path.name}::{name}")
    return ids


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> tuple[subprocess.CompletedProcess[str], Path]:
    if _real_npu_present():
        pytest.skip("this machine has a real Ascend NPU: the hardware suite would run")
    out_dir = tmp_path_factory.mktemp("report")
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("NPU_PLATFORM_")
        and k not in ("ASCEND_RT_VISIBLE_DEVICES", "NPU_TEST_SGLANG_MODEL")
    }
    env["PYTHON"] = sys.executable
    proc = subprocess.run(
        ["bash", str(SCRIPT), "--output", "report.md"],
        cwd=out_dir,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    return proc, out_dir / "report.md"


def test_exits_with_nothing_ran(run):
    proc, _ = run
    assert proc.returncode == NOTHING_RAN, proc.stdout + proc.stderr
    assert f"(exit status {NOTHING_RAN})" in proc.stdout


def test_says_no_npu_was_found_and_lists_every_test_as_skipped(run):
    proc, _ = run
    report = proc.stdout
    assert report.startswith("# npu-platform hardware report\n")
    assert "**No real Ascend NPU was found: every hardware test was skipped" in report
    tests = _hardware_tests()
    assert len(tests) >= 8, tests
    for node in tests:
        row = f"| `{node}` | SKIPPED | 0.0 | {SKIP_REASON} |"
        assert row in report, (node, report)
    assert report.count("| SKIPPED |") == len(tests)
    assert "| PASSED |" not in report and "| FAILED |" not in report
    result = report.split("## Result", 1)[1]
    assert "**NOT RUN (no real Ascend NPU)**" in result
    assert f"0 passed, 0 failed, 0 errors, {len(tests)} skipped" in result


def test_has_date_host_and_doctor_summary(run):
    proc, _ = run
    report = proc.stdout
    assert re.search(r"^- Date: \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC$", report, re.MULTILINE)
    assert "- Host: " in report
    assert "## Environment (`npu-platform doctor --json`)" in report
    assert "- NPU detection: **none**, 0 device(s): " in report
    versions = next(line for line in report.splitlines() if line.startswith("- Versions: "))
    assert f"npu-platform {npu_platform.__version__}" in versions
    assert "torch_npu -" in versions
    assert re.search(r"^- CANN: (not found|found), version ", report, re.MULTILINE)
    assert "- Devices: 0 (from detect)" in report
    assert "  - error: no usable NPU: " in report  # doctor's verdict, carried over


def test_writes_the_same_report_to_the_file_it_names(run):
    proc, path = run
    assert f"Report written to {path}" in proc.stderr
    assert path.read_text() == proc.stdout
    assert "tests/hardware" in proc.stderr  # pytest's progress goes to stderr
