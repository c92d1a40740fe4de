#!/usr/bin/env bash
# Run the hardware suite on an Ascend machine and print a report to paste into an issue.
#
#   scripts/hardware_report.sh [--output FILE] [PYTEST ARGS...]
#
# Runs `npu-platform doctor --json` and `pytest -m npu tests/hardware -rA` with the
# project's .venv/bin/python if there is one, else `python` (or $PYTHON if set). Test
# progress goes to stderr; the Markdown report (date, host, doctor's versions / CANN /
# devices, each test's outcome with the first lines of any failure, the pass/fail count)
# goes to stdout and to FILE (default: npu-platform-hardware-report-<UTC time>.md in the
# current folder), whose path the last line on stderr names.
#
# The sglang server test needs a small model: NPU_TEST_SGLANG_MODEL=<local path or hub id>.
# Extra arguments go to pytest (e.g. -k memory).
#
# Exit status:
#   0  every hardware test ran on a real NPU and passed
#   1  a test failed or errored, or the suite could not be run
#   2  nothing ran: no real Ascend NPU was found (every test skipped), or no test collected
#   3  a real NPU ran the suite and nothing failed, but some tests were skipped (the report
#      says why, e.g. NPU_TEST_SGLANG_MODEL unset): the report is incomplete
set -uo pipefail

here=$(pwd)
root=$(cd "$(dirname "$0")/.." && pwd)
output=""
if [[ "${1:-}" == "--output" || "${1:-}" == "-o" ]]; then
    output=${2:?"--output needs a file name"}
    shift 2
fi
if [[ -z "$output" ]]; then
    output="$here/npu-platform-hardware-report-$(date -u +%Y%m%dT%H%M%SZ).md"
elif [[ "$output" != /* ]]; then
    output="$here/$output"
fi

if [[ -n "${PYTHON:-}" ]]; then
    py=$PYTHON
elif [[ -x "$root/.venv/bin/python" ]]; then
    py="$root/.venv/bin/python"
else
    py=python
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$root" || exit 1

echo "npu-platform hardware report: doctor, then pytest -m npu tests/hardware ($py)" >&2
"$py" -m npu_platform doctor --json >"$work/doctor.json" 2>"$work/doctor.err"
echo $? >"$work/doctor.rc"

"$py" -m pytest -m npu tests/hardware -rA --tb=short -p no:cacheprovider \
    --junitxml="$work/junit.xml" "$@" 2>&1 | tee "$work/pytest.log" >&2
echo "${PIPESTATUS[0]}" >"$work/pytest.rc"

"$py" - "$work" "$output" "$py" "$*" <<'PYTHON'
"""Turn doctor's JSON and pytest's JUnit XML into the Markdown report; exit with its status."""

import datetime
import json
import platform
import socket
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

work, output, python, extra = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], sys.argv[4]
#: A failure shows its first HEAD_LINES lines and, when longer, its last TAIL_LINES (where a
#: scenario's or a server's traceback ends).
HEAD_LINES, TAIL_LINES = 20, 15
lines: list[str] = []
out = lines.append


def read(name: str) -> str:
    path = work / name
    return path.read_text(errors="replace") if path.exists() else ""


def git(*args: str) -> str:
    try:
        proc = subprocess.run(
            ["git", *args], capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return ""
    return proc.stdout.strip() if proc.returncode == 0 else ""


def cell(text: object) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ").strip()


def first_lines(text: str) -> str:
    rows = text.strip("\n").replace("```", "'''").splitlines()
    if len(rows) > HEAD_LINES + TAIL_LINES:
        skipped = len(rows) - HEAD_LINES - TAIL_LINES
        rows = [*rows[:HEAD_LINES], f"... ({skipped} lines left out)", *rows[-TAIL_LINES:]]
    return "\n".join(rows)


# -- header
now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
commit = git("rev-parse", "--short", "HEAD")
if commit and git("status", "--porcelain", "--untracked-files=no"):
    commit += " (with local changes)"
out("# npu-platform hardware report")
out("")
out(f"- Date: {now}")
out(f"- Host: {socket.gethostname()} ({platform.platform()}, {platform.machine()})")
out(f"- Python: {platform.python_version()} ({python})")
out(f"- Checkout: {commit or 'unknown (not a git checkout)'}")
out(f"- Command: `scripts/hardware_report.sh{' ' + extra if extra else ''}`")
out("")

# -- doctor
out("## Environment (`npu-platform doctor --json`)")
out("")
doctor_rc = read("doctor.rc").strip()
try:
    doctor = json.loads(read("doctor.json"))
except ValueError:
    doctor = None
target = None
if doctor is None:
    out(f"`npu-platform doctor --json` gave no report (exit status {doctor_rc}):")
    out("")
    out("```")
    out(first_lines(read("doctor.err") or read("doctor.json") or "(no output)"))
    out("```")
else:
    detect = doctor.get("detect") or {}
    target = detect.get("target")
    out(
        f"- NPU detection: **{target}**, {detect.get('device_count', 0)} device(s): "
        f"{detect.get('reason', '')}"
    )
    versions = doctor.get("versions") or {}
    out("- Versions: " + ", ".join(f"{k} {v if v else '-'}" for k, v in versions.items()))
    cann = doctor.get("cann") or {}
    cann_version = (cann.get("version") or {}).get("version")
    libs = cann.get("libraries") or {}
    out(
        f"- CANN: {'found' if cann.get('found') else 'not found'}, version "
        f"{cann_version or 'unknown'}; "
        + ", ".join(f"{name} {path or 'missing'}" for name, path in libs.items())
    )
    acl_vm = cann.get("acl_vm") or {}
    if acl_vm.get("library"):
        missing = acl_vm.get("missing")
        found = f"missing {', '.join(missing)}" if missing else "complete"
        out(f"- ACL virtual-memory API in {acl_vm['library']}: {found}")
    devices = doctor.get("devices") or {}
    names = sorted(
        {str(c.get("name")) for c in devices.get("chips") or []}
        or {str(n.get("name")) for n in devices.get("npus") or []}
    )
    out(
        f"- Devices: {devices.get('count', 0)} (from {devices.get('source')})"
        + (f": {', '.join(names)}" if names else "")
        + (f"; npu-smi error: {devices['error']}" if devices.get("error") else "")
    )
    env = doctor.get("environment") or {}
    if env.get("ASCEND_RT_VISIBLE_DEVICES") is not None:
        out(f"- ASCEND_RT_VISIBLE_DEVICES={env['ASCEND_RT_VISIBLE_DEVICES']}")
    verdicts = [v for v in doctor.get("verdicts") or [] if v.get("level") in ("warn", "error")]
    out(f"- Doctor: {'ok' if doctor.get('ok') else 'not ok'} (exit status {doctor_rc})")
    for verdict in verdicts:
        out(f"  - {verdict['level']}: {verdict['title']}: {cell(verdict.get('detail', ''))}")
out("")

# -- tests
cases = []
junit = work / "junit.xml"
if junit.exists():
    try:
        for case in ET.parse(junit).getroot().iter("testcase"):
            # classname "tests.hardware.test_x[.Class]" -> node id "tests/hardware/test_x.py::"
            parts = case.get("classname", "").split(".")
            at = next((i for i, p in enumerate(parts) if p.startswith("test_")), len(parts) - 1)
            node = "/".join(parts[: at + 1]) + ".py"
            name = "::".join([node, *parts[at + 1 :], case.get("name", "")])
            outcome, detail = "passed", ""
            for child in case:
                if child.tag in ("failure", "error"):
                    outcome = "failed" if child.tag == "failure" else "error"
                    detail = (child.get("message") or "") + "\n" + (child.text or "")
                    break
                if child.tag == "skipped":
                    outcome, detail = "skipped", child.get("message") or ""
            cases.append((name, outcome, float(case.get("time") or 0), detail))
    except ET.ParseError as exc:
        cases = []
        out(f"(pytest's JUnit XML could not be read: {exc})")
count = {k: sum(1 for c in cases if c[1] == k) for k in ("passed", "failed", "error", "skipped")}
pytest_rc = read("pytest.rc").strip()
ran = count["passed"] + count["failed"] + count["error"]

out("## Hardware tests (`pytest -m npu tests/hardware`)")
out("")
if target != "real" and not ran:
    out(
        "**No real Ascend NPU was found: every hardware test was skipped, so nothing was "
        "verified on hardware.**" + (f" Detection: {target}." if target else "")
    )
    out("")
if cases:
    out("| Test | Outcome | Seconds | Reason |")
    out("| --- | --- | --- | --- |")
    for name, outcome, seconds, detail in cases:
        reason = detail.strip().splitlines()[0] if outcome == "skipped" and detail.strip() else ""
        out(f"| `{name}` | {outcome.upper()} | {seconds:.1f} | {cell(reason)} |")
    out("")
else:
    out(f"pytest reported no test (exit status {pytest_rc}); the end of its output:")
    out("")
    out("```")
    out("\n".join(read("pytest.log").splitlines()[-HEAD_LINES - TAIL_LINES :]))
    out("```")
    out("")
for name, outcome, _seconds, detail in cases:
    if outcome in ("failed", "error"):
        out(f"### {outcome.upper()}: `{name}`")
        out("")
        out("```")
        out(first_lines(detail))
        out("```")
        out("")

# -- result
if count["failed"] or count["error"] or (not cases and pytest_rc not in ("0", "5")):
    status, verdict = 1, "FAIL"
elif not ran:
    status, verdict = 2, "NOT RUN (no real Ascend NPU)" if target != "real" else "NOT RUN"
elif count["skipped"]:
    status, verdict = 3, "INCOMPLETE (nothing failed, some tests skipped)"
else:
    status, verdict = 0, "PASS"
out("## Result")
out("")
out(
    f"**{verdict}**: {count['passed']} passed, {count['failed']} failed, {count['error']} "
    f"errors, {count['skipped']} skipped, of {len(cases)} hardware tests "
    f"(exit status {status})."
)

report = "\n".join(lines) + "\n"
sys.stdout.write(report)
try:
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(report)
    print(f"Report written to {output}", file=sys.stderr)
except OSError as exc:
    print(f"Could not write the report to {output}: {exc}", file=sys.stderr)
sys.exit(status)
PYTHON
