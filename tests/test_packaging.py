"""The built wheel: everything under the npu_platform namespace, nothing generic at the top."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EMULATION = ROOT / "npu_platform" / "emulation"
#: The emulated NPU's stand-in packages: data of npu_platform.emulation, imported under their
#: own names only with NPU_PLATFORM_EMULATE on (npu_platform.emulation.boot).
STAND_INS = ("torch_npu", "sgl_kernel_npu", "torchair")


def _data_files(folder: Path) -> list[str]:
    """Files under ``folder`` (repository-relative, POSIX), without byte-code caches."""
    return sorted(
        path.relative_to(ROOT).as_posix()
        for path in folder.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc"
    )


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
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
    return wheel


@pytest.fixture(scope="module")
def wheel_names(wheel) -> list[str]:
    with zipfile.ZipFile(wheel) as zf:
        return zf.namelist()


def test_only_our_namespace_at_the_top(wheel_names):
    top = {name.split("/", 1)[0] for name in wheel_names}
    generic = {"patches", "entry_points", "tests", "bench", "scripts", "site", "csrc"} & top
    generic |= set(STAND_INS) & top
    assert not generic, f"generic names at the top of site-packages: {sorted(generic)}"
    for name in top:
        assert name.startswith("npu_platform") or name.endswith(".pth"), name


def test_patches_and_entry_points_are_namespaced(wheel_names):
    assert "npu_platform/patches/__init__.py" in wheel_names
    assert "npu_platform/entry_points/__init__.py" in wheel_names
    assert "npu_platform/py.typed" in wheel_names


def test_every_source_package_is_shipped(wheel_names):
    """A package missing from pyproject's list would silently vanish from real installs.

    The stand-in packages under npu_platform/emulation/site are not npu_platform packages
    (their import names are torch_npu, ...): they ship as data, checked below.
    """
    shipped = {name.rsplit("/", 1)[0] for name in wheel_names if name.endswith("/__init__.py")}
    installed_as = {
        "npu_platform": "npu_platform",
        "patches": "npu_platform/patches",
        "entry_points": "npu_platform/entry_points",
    }
    sources = set()
    for top, prefix in installed_as.items():
        for init in (ROOT / top).rglob("__init__.py"):
            if (EMULATION / "site") in init.parents:
                continue
            relative = init.parent.relative_to(ROOT / top).as_posix()
            sources.add(prefix if relative == "." else f"{prefix}/{relative}")
    missing = sources - shipped
    assert not missing, f"packages not in the wheel (add them to pyproject.toml): {sorted(missing)}"


def test_the_emulated_npu_ships_its_sources_and_stand_ins(wheel_names):
    """csrc/ is compiled on first use and site/ holds the emulated torch_npu: without them an
    installed npu-platform has no emulated NPU."""
    names = set(wheel_names)
    csrc = _data_files(EMULATION / "csrc")
    assert {"npu_platform/emulation/csrc/npu_device.cpp"} <= set(csrc)
    assert {"npu_platform/emulation/csrc/ascendcl.c"} <= set(csrc)
    site = _data_files(EMULATION / "site")
    for stand_in in STAND_INS:
        assert f"npu_platform/emulation/site/{stand_in}/__init__.py" in site
    missing = sorted(set(csrc + site) - names)
    assert not missing, f"not in the wheel (see package-data in pyproject.toml): {missing}"
    caches = [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
    assert not caches, f"byte-code caches in the wheel: {caches[:5]}"


# Where the stand-ins import from, in a child that has only the unpacked wheel on its path
# (-S: no site-packages, so neither the checkout nor an installed torch_npu can answer).
FIND_STAND_INS = """
import importlib.util, json, sys
sys.path.insert(0, sys.argv[1])
import npu_platform.emulation.boot as boot
installed = boot.install()
found = {}
for name in sys.argv[2:]:
    spec = importlib.util.find_spec(name)
    found[name] = spec.origin if spec else None
print(json.dumps({"installed": installed, "boot": boot.__file__, "found": found}))
"""


@pytest.mark.parametrize("emulate", ["1", "0"])
def test_the_unpacked_wheel_finds_the_stand_ins_only_when_emulating(wheel, tmp_path, emulate):
    unpacked = tmp_path / "purelib"
    with zipfile.ZipFile(wheel) as zf:
        zf.extractall(unpacked)
    out = subprocess.run(
        [sys.executable, "-S", "-c", FIND_STAND_INS, str(unpacked), *STAND_INS],
        env={"NPU_PLATFORM_EMULATE": emulate, "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert Path(result["boot"]).is_relative_to(unpacked)
    if emulate == "0":
        assert result["installed"] is False
        assert result["found"] == dict.fromkeys(STAND_INS)
        return
    assert result["installed"] is True
    for name in STAND_INS:
        assert result["found"][name] is not None, f"{name} is not importable from the wheel"
        origin = Path(result["found"][name])
        assert origin == unpacked / "npu_platform" / "emulation" / "site" / name / "__init__.py"
