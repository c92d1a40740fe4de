"""Supported framework versions (npu_platform.versions) and the vLLM entry point's answer
when the installed vLLM is outside them.

The "installed" vLLM is chosen with a fake ``vllm-<version>.dist-info`` folder put first on
``sys.path`` of a child interpreter (tests/fakedist.py): importlib.metadata then reports its
version, exactly as for a real install.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from npu_platform import versions
from tests.fakedist import make_dist, subprocess_env

# Calls both entry points the way vLLM does, twice each, recording what our logger says.
_ENTRY_POINT_PROBE = textwrap.dedent(
    """
    import json, logging, sys

    records = []

    class Record(logging.Handler):
        def emit(self, record):
            records.append([record.name, record.levelname, record.getMessage()])

    logging.getLogger("vllm.npu_platform").addHandler(Record())
    from npu_platform.entry_points import vllm as entry

    answers = [entry.platform_plugin(), entry.platform_plugin()]
    if "--register" in sys.argv:
        entry.register()
        entry.register()
    print(json.dumps({
        "answers": answers,
        "records": records,
        "npu_vllm_modules": sorted(m for m in sys.modules if m.startswith("npu_platform.vllm")),
        "vllm_imported": "vllm" in sys.modules,
    }))
    """
)


def _probe(cwd: Path, sites: tuple[Path, ...], *args: str, **environ: str) -> dict:
    proc = subprocess.run(
        [sys.executable, "-c", _ENTRY_POINT_PROBE, *args],
        cwd=cwd,
        env=subprocess_env(sites, **environ),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture
def old_vllm(tmp_path: Path) -> Path:
    """A site folder holding vllm-0.10.2.dist-info (METADATA with Version: 0.10.2)."""
    site = tmp_path / "site"
    info = make_dist(site, "vllm", "0.10.2")
    assert info.name == "vllm-0.10.2.dist-info"
    assert "Version: 0.10.2" in (info / "METADATA").read_text()
    return site


# --------------------------------------------------------------------------- the table


def test_ranges_say_what_is_tested() -> None:
    # vLLM 0.32.0 and 0.33.0 are tested (scripts/test.sh runs both lines); 0.34 is outside
    # until it has been tested too.
    assert versions.SUPPORTED["vllm"] == ">=0.32.0,<0.34"
    assert versions.SUPPORTED["sglang"] == ">=0.5.23,<0.6"
    assert versions.support("vllm", "0.32.0").supported is True
    assert versions.support("vllm", "0.33.0").supported is True
    assert versions.support("vllm", "0.34.0").supported is False


@pytest.mark.parametrize(
    ("version", "supported"),
    [
        ("0.32.0", True),
        ("0.32.5", True),
        ("0.32.1rc1", True),
        ("0.32.1.dev3+g1234abc", True),
        ("0.32.0+cpu", True),
        ("0.31.9", False),
        ("0.32.0rc1", False),  # a pre-release of 0.32.0 comes before it
        ("0.33.0rc1", True),
        ("0.33.0", True),
        ("0.33.2", True),
        ("0.34.0rc1", False),  # `<0.34` leaves out 0.34's pre-releases too
        ("0.34.0", False),
        ("0.10.2", False),
        ("not-a-version", None),
    ],
)
def test_support(version: str, supported: bool | None) -> None:
    status = versions.support("vllm", version)
    assert (status.installed, status.supported) == (version, supported)
    assert status.requirement == "vllm>=0.32.0,<0.34"


def test_support_of_installed_distributions() -> None:
    status = versions.support("vllm")
    assert status.installed == versions.installed_version("vllm")
    assert versions.installed_version("no-such-distribution-here") is None
    with pytest.raises(ValueError, match="no supported range is recorded for 'torch'"):
        versions.support("torch")


def test_versions_is_a_bottom_layer(tmp_path: Path) -> None:
    code = (
        "import sys, json; import npu_platform.versions as v; v.support('vllm'); "
        "print(json.dumps(sorted(m for m in ('torch', 'vllm', 'sglang') if m in sys.modules)))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == []


# --------------------------------------------------------------------------- the vLLM entry point


def test_unsupported_vllm_leaves_the_plugin_inactive_with_one_warning(
    tmp_path: Path, old_vllm: Path
) -> None:
    result = _probe(tmp_path, (old_vllm,), "--register", NPU_PLATFORM_EMULATE="1")
    assert result["answers"] == [None, None]
    warnings = [r for r in result["records"] if r[1] == "WARNING"]
    assert len(warnings) == 1, result["records"]
    name, _, message = warnings[0]
    assert name == "vllm.npu_platform"
    assert "vLLM 0.10.2" in message
    assert "vllm>=0.32.0,<0.34" in message
    assert "pip install 'vllm>=0.32.0,<0.34'" in message
    # register() registered nothing: no module of the vLLM integration was loaded
    assert result["npu_vllm_modules"] == []
    assert result["vllm_imported"] is False


def test_unsupported_vllm_without_npu_says_nothing(tmp_path: Path, old_vllm: Path) -> None:
    result = _probe(tmp_path, (old_vllm,), "--register", NPU_PLATFORM_EMULATE="0")
    assert result["answers"] == [None, None]
    assert [r for r in result["records"] if r[1] == "WARNING"] == []


def test_supported_vllm_gets_the_platform(tmp_path: Path) -> None:
    installed = versions.installed_version("vllm")
    if not versions.support("vllm").supported:
        pytest.skip(f"the installed vLLM {installed} is outside {versions.SUPPORTED['vllm']}")
    result = _probe(tmp_path, (), NPU_PLATFORM_EMULATE="1")
    first, second = result["answers"]
    assert first is not None and first.startswith("npu_platform.vllm.platform.")
    assert second == first
    assert [r for r in result["records"] if r[1] == "WARNING"] == []
