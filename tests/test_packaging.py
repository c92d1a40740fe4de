"""The built wheel: everything under the npu_platform namespace, nothing generic at the top."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def wheel_names(tmp_path_factory) -> list[str]:
    out = tmp_path_factory.mktemp("wheel")
    build = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(out),
            str(ROOT),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert build.returncode == 0, build.stdout + build.stderr
    (wheel,) = out.glob("npu_platform-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        return zf.namelist()


def test_only_our_namespace_at_the_top(wheel_names):
    top = {name.split("/", 1)[0] for name in wheel_names}
    generic = {"patches", "entry_points", "tests", "bench", "scripts"} & top
    assert not generic, f"generic names at the top of site-packages: {sorted(generic)}"
    for name in top:
        assert name.startswith("npu_platform") or name.endswith(".pth"), name


def test_patches_and_entry_points_are_namespaced(wheel_names):
    assert "npu_platform/patches/__init__.py" in wheel_names
    assert "npu_platform/entry_points/__init__.py" in wheel_names
    assert "npu_platform/py.typed" in wheel_names


def test_every_source_package_is_shipped(wheel_names):
    """A package missing from pyproject's list would silently vanish from real installs."""
    shipped = {name.rsplit("/", 1)[0] for name in wheel_names if name.endswith("/__init__.py")}
    installed_as = {
        "npu_platform": "npu_platform",
        "patches": "npu_platform/patches",
        "entry_points": "npu_platform/entry_points",
    }
    sources = set()
    for top, prefix in installed_as.items():
        for init in (ROOT / top).rglob("__init__.py"):
            relative = init.parent.relative_to(ROOT / top).as_posix()
            sources.add(prefix if relative == "." else f"{prefix}/{relative}")
    missing = sources - shipped
    assert not missing, f"packages not in the wheel (add them to pyproject.toml): {sorted(missing)}"
