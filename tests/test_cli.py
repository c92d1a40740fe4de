"""The ``npu-platform`` command line: argument handling and exit statuses."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from contextlib import redirect_stdout
from pathlib import Path

import pytest

import npu_platform
from npu_platform import cli
from tests.fakedist import subprocess_env


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"npu-platform {npu_platform.__version__}"


def test_no_command_prints_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main([]) == 2
    out = capsys.readouterr().out
    assert "usage: npu-platform" in out
    assert "doctor" in out


@pytest.mark.parametrize("argv", [["bogus"], ["doctor", "--bogus"]])
def test_usage_errors_return_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(argv) == 2
    assert "usage:" in capsys.readouterr().err


def test_doctor_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["doctor", "--help"]) == 0
    out = capsys.readouterr().out
    assert "--json" in out
    assert "Exit status 1 when the stack cannot work" in " ".join(out.split())


def test_doctor_in_process_json_matches_exit_status() -> None:
    buffer = io.StringIO()
    with redirect_stdout(buffer):
        code = cli.main(["doctor", "--json"])
    report = json.loads(buffer.getvalue())
    assert code == (0 if report["ok"] else 1)
    assert {"detect", "versions", "cann", "verdicts", "ok"} <= set(report)


def test_python_dash_m(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "npu_platform", "doctor", "--json"],
        cwd=tmp_path,
        env=subprocess_env(NPU_PLATFORM_EMULATE="1"),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    report = json.loads(proc.stdout)
    assert report["detect"]["target"] == "emulated"
    assert proc.returncode == (0 if report["ok"] else 1)


CONSOLE_SCRIPT = Path(sys.executable).parent / "npu-platform"


@pytest.mark.skipif(not os.access(CONSOLE_SCRIPT, os.X_OK), reason="npu-platform not installed")
def test_console_script_exit_status(tmp_path: Path) -> None:
    proc = subprocess.run(
        [str(CONSOLE_SCRIPT), "doctor", "--json"],
        cwd=tmp_path,
        env=subprocess_env(NPU_PLATFORM_EMULATE="bad"),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 1
    report = json.loads(proc.stdout)
    assert report["ok"] is False
    assert any("NPU_PLATFORM_EMULATE='bad'" in v["detail"] for v in report["verdicts"])
