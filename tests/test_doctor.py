"""``npu-platform doctor``: each situation is built for real (fake distributions, libraries
and tools in temporary folders, environment variables) and the doctor runs in a child
interpreter, ``python -m npu_platform doctor --json``, exactly as a user would run it."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from npu_platform import cann, doctor, elf
from npu_platform.memory import torch_route
from npu_platform.memory.driver import DriverError
from npu_platform.memory.drivers import acl as acl_driver
from tests.fake_acl import build as fake_acl_build
from tests.fakedist import (
    NPU_SMI_310P_DUO,
    NPU_SMI_910B_X2,
    make_dist,
    make_fake_cann,
    make_fake_npu_smi,
    make_fake_torch_memory_saver,
    make_fake_torch_npu,
    subprocess_env,
)

HOST_HAS_CANN = any(cann.find_cann({}).values())
HOST_HAS_TORCH_NPU = importlib.util.find_spec("torch_npu") is not None
HOST_HAS_MEMORY_SAVER = doctor.dist_version("torch_memory_saver") is not None
TORCH_VERSION = importlib.metadata.version("torch")
TORCH_MAJOR, TORCH_MINOR = (int(part) for part in TORCH_VERSION.split(".")[:2])
MISSING_CANN_ERROR = "libhccl.so: cannot open shared object file: No such file or directory"

# Without an NPU stack on the host we can build "nothing there" situations; on an Ascend
# machine CANN in /usr/local/Ascend or the system library cache cannot be hidden.
clean_host = pytest.mark.skipif(
    HOST_HAS_CANN or HOST_HAS_TORCH_NPU,
    reason="the host has CANN or torch_npu, which a child process cannot be hidden from",
)


@pytest.fixture
def site(tmp_path: Path) -> Path:
    folder = tmp_path / "site"
    folder.mkdir()
    return folder


def supported_frameworks(site_dir: Path, vllm: str = "0.32.0", sglang: str = "0.5.23") -> None:
    """Shadow whatever vLLM/sglang the host has (default: versions inside the supported
    ranges), so that verdicts about them do not depend on the host."""
    make_dist(site_dir, "vllm", vllm)
    make_dist(site_dir, "sglang", sglang)


def run_doctor(
    cwd: Path,
    sites: tuple[Path, ...] = (),
    path_dirs: tuple[Path, ...] = (),
    *,
    as_json: bool = True,
    **environ: str | None,
) -> tuple[int, dict]:
    """Run the doctor in a child interpreter; return (exit status, JSON report)."""
    proc = subprocess.run(
        [sys.executable, "-m", "npu_platform", "doctor", *(["--json"] if as_json else [])],
        cwd=cwd,
        env=subprocess_env(sites, path_dirs, **environ),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr == "", f"the doctor should print its report only: {proc.stderr!r}"
    if not as_json:
        return proc.returncode, {"text": proc.stdout}
    report = json.loads(proc.stdout)
    assert report["ok"] == (proc.returncode == 0)
    return proc.returncode, report


def verdict(report: dict, check: str) -> dict:
    found = [v for v in report["verdicts"] if v["check"] == check]
    assert len(found) == 1, f"expected one {check!r} verdict, got {found}"
    return found[0]


def levels(report: dict) -> dict[str, str]:
    return {v["check"]: v["level"] for v in report["verdicts"]}


def import_torch(cwd: Path, sites: tuple[Path, ...], **environ: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", "import torch"],
        cwd=cwd,
        env=subprocess_env(sites, **environ),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


# --------------------------------------------------------------------------- detection


@clean_host
def test_no_npu_is_an_error_and_exit_1(tmp_path: Path) -> None:
    code, report = run_doctor(tmp_path)
    assert code == 1
    assert report["detect"]["target"] == "none"
    assert report["detect"]["device_count"] == 0
    assert "torch_npu is not installed" in report["detect"]["reason"]
    v = verdict(report, "detect")
    assert v["level"] == "error"
    assert "NPU_PLATFORM_EMULATE=1" in v["fix"]
    assert set(report) >= {"detect", "versions", "cann", "verdicts", "ok"}
    assert report["versions"]["python"] == ".".join(map(str, sys.version_info[:3]))
    assert report["versions"]["torch"] == TORCH_VERSION


@clean_host
def test_text_report(tmp_path: Path) -> None:
    code, out = run_doctor(tmp_path, as_json=False)
    text = out["text"]
    assert code == 1
    assert "[ERROR] no usable NPU" in text
    assert f"torch                {TORCH_VERSION}" in text
    assert "libascendcl.so       not found" in text
    assert "Result: the stack cannot work" in text


def test_emulated_npu_exits_0(tmp_path: Path, site: Path) -> None:
    supported_frameworks(site)
    code, report = run_doctor(
        tmp_path, (site,), NPU_PLATFORM_EMULATE="1", NPU_PLATFORM_EMULATE_DEVICES="4"
    )
    assert code == 0, [v for v in report["verdicts"] if v["level"] == "error"]
    assert report["detect"] == {
        "target": "emulated",
        "reason": report["detect"]["reason"],
        "device_count": 4,
    }
    assert "NPU_PLATFORM_EMULATE=1" in report["detect"]["reason"]
    assert verdict(report, "detect")["level"] == "ok"
    assert report["devices"]["source"] == "detect"
    assert report["devices"]["count"] == 4
    assert "emulated NPU provides 4" in verdict(report, "devices")["detail"]


@pytest.mark.parametrize("as_json", [True, False])
def test_bad_variable_value_is_an_error_verdict(tmp_path: Path, as_json: bool) -> None:
    code, report = run_doctor(tmp_path, as_json=as_json, NPU_PLATFORM_EMULATE="maybe")
    assert code == 1
    if not as_json:
        assert "[ERROR] bad NPU_PLATFORM_* setting" in report["text"]
        assert "NPU_PLATFORM_EMULATE='maybe' is not valid" in report["text"]
        return
    v = verdict(report, "config")
    assert v["level"] == "error"
    assert "NPU_PLATFORM_EMULATE='maybe'" in v["detail"]
    assert "1/0" in v["detail"]  # the accepted values
    assert report["detect"]["target"] is None
    assert "NPU_PLATFORM_EMULATE" in report["detect"]["reason"]


def test_unknown_variable_is_a_warning(tmp_path: Path, site: Path) -> None:
    supported_frameworks(site)
    code, report = run_doctor(
        tmp_path, (site,), NPU_PLATFORM_EMULATE="1", NPU_PLATFORM_EMULATE_DEVICE="2"
    )
    assert code == 0
    v = verdict(report, "config")
    assert v["level"] == "warn"
    assert "NPU_PLATFORM_EMULATE_DEVICE " in v["detail"]
    assert "Did you mean NPU_PLATFORM_EMULATE_DEVICES?" in v["detail"]


# --------------------------------------------------------------------------- torch / torch_npu


@clean_host
def test_torch_npu_major_minor_mismatch(tmp_path: Path, site: Path) -> None:
    old = f"{TORCH_MAJOR}.{TORCH_MINOR - 1}.0"
    make_dist(site, "torch_npu", old)
    code, report = run_doctor(tmp_path, (site,), NPU_PLATFORM_EMULATE="1")
    assert code == 1
    assert report["versions"]["torch_npu"] == old
    v = verdict(report, "torch-npu")
    assert v["level"] == "error"
    assert v["title"] == "torch and torch_npu versions do not match"
    assert f"torch {TORCH_VERSION} is {TORCH_MAJOR}.{TORCH_MINOR}.x" in v["detail"]
    assert f"torch_npu {old} is {TORCH_MAJOR}.{TORCH_MINOR - 1}.x" in v["detail"]
    assert f"torch_npu=={TORCH_MAJOR}.{TORCH_MINOR}.*" in v["fix"]


@clean_host
def test_torch_npu_match_ignores_post_and_local_suffixes(tmp_path: Path, site: Path) -> None:
    same = f"{TORCH_MAJOR}.{TORCH_MINOR}.0.post1"
    make_dist(site, "torch_npu", same)
    code, report = run_doctor(tmp_path, (site,), NPU_PLATFORM_EMULATE="1")
    v = verdict(report, "torch-npu")
    assert v["level"] == "ok"
    assert f"({TORCH_MAJOR}.{TORCH_MINOR})" in v["title"]
    assert same in v["detail"]


@pytest.mark.parametrize(
    ("torch_version", "npu_version", "level"),
    [
        ("2.13.0+cpu", "2.13.0", "ok"),
        ("2.13.1", "2.13.0.post1", "ok"),
        ("2.13.0", "2.12.0", "error"),
        ("2.13.0", "3.13.0", "error"),
        ("2.13.0", None, "info"),
        (None, None, "error"),
        ("2.13.0", "not-a-version", "warn"),
    ],
)
def test_torch_pair_levels(torch_version: str | None, npu_version: str | None, level: str) -> None:
    assert doctor.check_torch_pair(torch_version, npu_version).level == level


# --------------------------------------------------------------------------- frameworks


@pytest.mark.parametrize(
    ("name", "version", "level"),
    [
        ("vllm", "0.20.0", "error"),
        ("vllm", "0.34.0", "error"),
        ("vllm", "0.33.0", "ok"),
        ("vllm", "0.32.3", "ok"),
        ("sglang", "0.4.9", "error"),
        ("sglang", "0.6.0", "error"),
        ("sglang", "0.5.24", "ok"),
    ],
)
def test_framework_range(tmp_path: Path, site: Path, name: str, version: str, level: str) -> None:
    host_version = doctor.dist_version(name)
    supported_frameworks(site, **{name: version})
    code, report = run_doctor(tmp_path, (site,), NPU_PLATFORM_EMULATE="1")
    # the fake metadata really shadows the installed distribution
    assert report["versions"][name] == version
    assert host_version != version
    v = verdict(report, name)
    assert v["level"] == level
    assert doctor.SUPPORTED[name] in v["detail"]
    if level == "error":
        assert code == 1
        assert f"{name} {version} is not supported" == v["title"]
        assert f"pip install '{name}{doctor.SUPPORTED[name]}'" in v["fix"]
    else:
        assert code == 0


def test_framework_not_installed_is_informational() -> None:
    for name in doctor.SUPPORTED:
        v = doctor.check_framework(name, None)
        assert v.level == "info"
        assert "not installed" in v.title


def test_framework_pre_release_and_local_builds_inside_range() -> None:
    assert doctor.check_framework("vllm", "0.32.1rc1").level == "ok"
    assert doctor.check_framework("vllm", "0.32.1.dev3+g1234abc").level == "ok"
    assert doctor.check_framework("vllm", "0.32.0+cpu").level == "ok"
    assert doctor.check_framework("vllm", "0.33.0rc1").level == "ok"
    assert doctor.check_framework("vllm", "0.34.0rc1").level == "error"


# --------------------------------------------------------------------------- CANN


def test_cann_found_on_ld_library_path(tmp_path: Path) -> None:
    libs = make_fake_cann(tmp_path / "cann-libs")
    code, report = run_doctor(tmp_path, LD_LIBRARY_PATH=str(libs))
    assert report["cann"]["found"] is True
    assert report["cann"]["libraries"] == {
        "libascendcl.so": str(libs / "libascendcl.so"),
        "libhccl.so": str(libs / "libhccl.so"),
    }
    assert report["cann"]["LD_LIBRARY_PATH"] == str(libs)
    v = verdict(report, "cann")
    assert v["level"] == "ok"
    assert str(libs / "libhccl.so") in v["detail"]


def test_cann_found_under_ascend_home_path(tmp_path: Path) -> None:
    root = tmp_path / "Ascend" / "ascend-toolkit" / "latest"
    make_fake_cann(root / "lib64")
    code, report = run_doctor(tmp_path, ASCEND_HOME_PATH=str(root))
    assert report["cann"]["ASCEND_HOME_PATH"] == str(root)
    assert report["cann"]["libraries"]["libascendcl.so"] == str(root / "lib64" / "libascendcl.so")
    assert verdict(report, "cann")["level"] == "ok"


@clean_host
def test_cann_missing(tmp_path: Path) -> None:
    code, report = run_doctor(tmp_path, LD_LIBRARY_PATH=str(tmp_path))
    assert report["cann"]["found"] is False
    assert report["cann"]["libraries"] == {"libascendcl.so": None, "libhccl.so": None}
    v = verdict(report, "cann")
    assert v["level"] == "info"  # no torch_npu: CANN is only needed for a real NPU
    assert "libascendcl.so, libhccl.so" in v["detail"]
    assert "LD_LIBRARY_PATH" in v["detail"]


@clean_host
def test_cann_incomplete(tmp_path: Path) -> None:
    libs = make_fake_cann(tmp_path / "cann-libs", ["libascendcl.so"])
    code, report = run_doctor(tmp_path, LD_LIBRARY_PATH=str(libs))
    v = verdict(report, "cann")
    assert v["level"] == "warn"
    assert v["title"] == "CANN install is incomplete"
    assert "Not found: libhccl.so" in v["detail"]
    assert "set_env.sh" in v["fix"]


# --------------------------------------------------------------------------- autoload trap


@clean_host
def test_autoload_trap(tmp_path: Path, site: Path) -> None:
    supported_frameworks(site)
    make_fake_torch_npu(site, TORCH_VERSION.split("+")[0], import_error=MISSING_CANN_ERROR)

    # the situation is the real trap: `import torch` fails through the autoload entry point
    proc = import_torch(tmp_path, (site,))
    assert proc.returncode != 0
    assert "Failed to load the backend extension: torch_npu" in proc.stderr
    assert MISSING_CANN_ERROR in proc.stderr

    # even the emulated NPU cannot work: every `import torch` fails
    code, report = run_doctor(tmp_path, (site,), NPU_PLATFORM_EMULATE="1")
    assert code == 1
    v = verdict(report, "autoload")
    assert v["level"] == "error"
    assert v["title"].startswith("`import torch` fails")
    assert "torch_npu = torch_npu:_autoload" in v["detail"]
    assert "libascendcl.so, libhccl.so" in v["detail"]
    assert "set_env.sh" in v["fix"]
    assert "TORCH_DEVICE_BACKEND_AUTOLOAD=0" in v["fix"]
    assert verdict(report, "cann")["level"] == "warn"
    assert verdict(report, "torch-npu")["level"] == "ok"

    # without emulation, detection explains the same trap
    code, report = run_doctor(tmp_path, (site,))
    assert code == 1
    assert report["detect"]["target"] == "none"
    assert "autoloads torch_npu" in report["detect"]["reason"]


@clean_host
def test_autoload_trap_defused(tmp_path: Path, site: Path) -> None:
    supported_frameworks(site)
    make_fake_torch_npu(site, TORCH_VERSION.split("+")[0], import_error=MISSING_CANN_ERROR)
    assert import_torch(tmp_path, (site,), TORCH_DEVICE_BACKEND_AUTOLOAD="0").returncode == 0

    code, report = run_doctor(
        tmp_path, (site,), NPU_PLATFORM_EMULATE="1", TORCH_DEVICE_BACKEND_AUTOLOAD="0"
    )
    assert code == 0
    assert report["environment"]["torch_backend_autoload"] is False
    v = verdict(report, "autoload")
    assert v["level"] == "warn"
    assert "autoload is off" in v["title"]
    assert "TORCH_DEVICE_BACKEND_AUTOLOAD=0 keeps `import torch` from loading" in v["detail"]
    assert "set_env.sh" in v["fix"]
    assert "TORCH_DEVICE_BACKEND_AUTOLOAD=0" not in v["fix"]


@clean_host
def test_torch_npu_without_autoload_entry_point(tmp_path: Path, site: Path) -> None:
    make_fake_torch_npu(
        site, TORCH_VERSION.split("+")[0], import_error=MISSING_CANN_ERROR, autoload=False
    )
    code, report = run_doctor(tmp_path, (site,), NPU_PLATFORM_EMULATE="1")
    v = verdict(report, "autoload")
    assert v["level"] == "warn"
    assert "registers no torch.backends entry point" in v["detail"]


def test_no_autoload_verdict_when_cann_is_there(tmp_path: Path, site: Path) -> None:
    libs = make_fake_cann(tmp_path / "cann-libs")
    make_dist(site, "torch_npu", TORCH_VERSION.split("+")[0])
    code, report = run_doctor(
        tmp_path, (site,), NPU_PLATFORM_EMULATE="1", LD_LIBRARY_PATH=str(libs)
    )
    assert "autoload" not in levels(report)


# --------------------------------------------------------------------------- devices


def test_real_npu_with_npu_smi(tmp_path: Path, site: Path) -> None:
    """torch_npu + CANN + npu-smi, all fake: detection imports (fake) torch_npu for real."""
    supported_frameworks(site)
    make_fake_torch_npu(site, TORCH_VERSION.split("+")[0], device_count=2)
    libs = make_fake_cann(tmp_path / "cann-libs")
    bin_dir = tmp_path / "bin"
    make_fake_npu_smi(bin_dir)
    code, report = run_doctor(tmp_path, (site,), (bin_dir,), LD_LIBRARY_PATH=str(libs))
    assert code == 0, [v for v in report["verdicts"] if v["level"] == "error"]
    assert report["detect"]["target"] == "real"
    assert report["detect"]["device_count"] == 2
    assert verdict(report, "detect")["level"] == "ok"
    devices = report["devices"]
    assert devices["source"] == "npu-smi"
    assert devices["npu_smi"] == str(bin_dir / "npu-smi")
    assert devices["count"] == 2
    assert [(c["npu"], c["chip"], c["bus_id"]) for c in devices["chips"]] == [
        (0, 0, "0000:C1:00.0"),
        (1, 0, "0000:C2:00.0"),
    ]
    v = verdict(report, "devices")
    assert v["level"] == "ok"
    assert "npu-smi lists 2 device(s) (910B3)" in v["detail"]


def test_npu_smi_count_differs_from_torch_npu(tmp_path: Path, site: Path) -> None:
    make_fake_torch_npu(site, TORCH_VERSION.split("+")[0], device_count=1)
    libs = make_fake_cann(tmp_path / "cann-libs")
    bin_dir = tmp_path / "bin"
    make_fake_npu_smi(bin_dir)
    code, report = run_doctor(
        tmp_path, (site,), (bin_dir,), LD_LIBRARY_PATH=str(libs), ASCEND_RT_VISIBLE_DEVICES="1"
    )
    v = verdict(report, "devices")
    assert "torch_npu sees 1" in v["detail"]
    assert "ASCEND_RT_VISIBLE_DEVICES=1" in v["detail"]


def test_npu_smi_failure_is_a_warning(tmp_path: Path, site: Path) -> None:
    supported_frameworks(site)
    bin_dir = tmp_path / "bin"
    make_fake_npu_smi(bin_dir, "dcmi module initialize failed. ret is -8005\n", exit_status=1)
    code, report = run_doctor(tmp_path, (site,), (bin_dir,), NPU_PLATFORM_EMULATE="1")
    assert code == 0
    v = verdict(report, "devices")
    assert v["level"] == "warn"
    assert "exit status 1" in v["detail"]


def test_parse_npu_smi_910b() -> None:
    parsed = doctor.parse_npu_smi(NPU_SMI_910B_X2)
    assert parsed["count"] == 2
    assert [(n["npu"], n["name"], n["health"]) for n in parsed["npus"]] == [
        (0, "910B3", "OK"),
        (1, "910B3", "OK"),
    ]


def test_parse_npu_smi_310p_duo_counts_chips_and_skips_processes() -> None:
    parsed = doctor.parse_npu_smi(NPU_SMI_310P_DUO)
    assert len(parsed["npus"]) == 1
    assert parsed["count"] == 2
    assert [(c["npu"], c["chip"], c["name"]) for c in parsed["chips"]] == [
        (8, 0, "310P3"),
        (8, 1, "310P3"),
    ]


def test_parse_npu_smi_garbage() -> None:
    assert doctor.parse_npu_smi("")["count"] == 0
    assert doctor.parse_npu_smi("command not found\n| a | b |\n")["count"] == 0


# --------------------------------------------------------------------------- torch_memory_saver


def test_cuda_memory_saver_on_npu_is_a_warning(tmp_path: Path, site: Path) -> None:
    supported_frameworks(site)
    make_fake_torch_memory_saver(site, "cuda", version="0.0.9")
    code, report = run_doctor(tmp_path, (site,), NPU_PLATFORM_EMULATE="1")
    assert code == 0  # a warning, not an error
    saver = report["torch_memory_saver"]
    assert saver["installed"] is True
    assert saver["build"] == "cuda"
    assert saver["version"] == "0.0.9"
    assert list(saver["shared_objects"].values()) == ["cuda"]
    v = verdict(report, "torch-memory-saver")
    assert v["level"] == "warn"
    assert "CUDA-only" in v["title"]
    assert "torch_memory_saver_hook_mode_preload.abi3.so" in v["detail"]
    assert "npu_platform.torch_memory_saver" in v["fix"]


@clean_host
def test_cuda_memory_saver_without_npu_is_informational(tmp_path: Path, site: Path) -> None:
    make_fake_torch_memory_saver(site, "cuda")
    code, report = run_doctor(tmp_path, (site,))
    assert verdict(report, "torch-memory-saver")["level"] == "info"


def test_ascend_memory_saver_is_ok(tmp_path: Path, site: Path) -> None:
    make_fake_torch_memory_saver(site, "ascend", version="0.0.9+npu")
    code, report = run_doctor(tmp_path, (site,), NPU_PLATFORM_EMULATE="1")
    assert report["torch_memory_saver"]["build"] == "ascend"
    v = verdict(report, "torch-memory-saver")
    assert v["level"] == "ok"
    assert "Ascend build" in v["title"]


@pytest.mark.skipif(HOST_HAS_MEMORY_SAVER, reason="torch_memory_saver is installed on the host")
def test_memory_saver_absent_is_informational(tmp_path: Path) -> None:
    code, report = run_doctor(tmp_path, NPU_PLATFORM_EMULATE="1")
    assert report["torch_memory_saver"]["installed"] is False
    assert verdict(report, "torch-memory-saver")["level"] == "info"


def test_classify_shared_object() -> None:
    assert doctor.classify_shared_object(b"\x7fELF..libcudart.so.12..") == "cuda"
    assert doctor.classify_shared_object(b"\x7fELF..cuMemCreate..") == "cuda"
    assert doctor.classify_shared_object(b"\x7fELF..libascendcl.so..") == "ascend"
    assert doctor.classify_shared_object(b"\x7fELF..libc.so.6..") == "unknown"


# --------------------------------------------------------------------------- CANN version

# Version files as CANN writes them (formats from CANN 8.x installs).
TOOLKIT_INSTALL_INFO = """\
package_name=Ascend-cann-toolkit
version=8.3.RC2
innerversion=V100R001C23SPC002B210
compatible_version=[V100R001C15],[V100R001C18],[V100R001C19],[V100R001C20]
arch={arch}
os=linux
path=/usr/local/Ascend/ascend-toolkit/8.3.RC2/{arch}-linux
"""
VERSION_CFG = """\
# version: 1.0
runtime_running_version=[7.6.0.1.220:8.0.0]
compiler_running_version=[7.6.0.1.220:8.0.0]
hccl_running_version=[7.6.0.1.220:8.0.0]
"""
COMPILER_VERSION_INFO = """\
Version=7.8.T5.0.B028
version_dir=8.2.T2
timestamp=20250603_154703350
required_package_runtime_version="7.8"
"""
COMPONENT_ONLY_VERSION_INFO = "Version=9.1.0\ntimestamp=20260101_000000000\n"


def write_cann_files(root: Path, files: dict[str, str]) -> Path:
    arch = cann.host_arch()
    for rel, text in files.items():
        path = root / rel.format(arch=arch)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text.format(arch=arch) if "{arch}" in text else text)
    return root


@pytest.mark.parametrize(
    ("files", "version", "kind", "source"),
    [
        (
            {"{arch}-linux/ascend_toolkit_install.info": TOOLKIT_INSTALL_INFO},
            "8.3.RC2",
            "release",
            "{arch}-linux/ascend_toolkit_install.info",
        ),
        ({"version.cfg": VERSION_CFG}, "8.0.0", "release", "version.cfg"),
        (
            {"compiler/version.info": COMPILER_VERSION_INFO},
            "8.2.T2",
            "release",
            "compiler/version.info",
        ),
        (
            {"opp/version.info": COMPONENT_ONLY_VERSION_INFO},
            "9.1.0",
            "component",
            "opp/version.info",
        ),
        (  # the toolkit's own record wins over version.cfg
            {
                "version.cfg": VERSION_CFG,
                "{arch}-linux/ascend_toolkit_install.info": TOOLKIT_INSTALL_INFO,
            },
            "8.3.RC2",
            "release",
            "{arch}-linux/ascend_toolkit_install.info",
        ),
        (  # a release number beats a component's own one, even in a later file
            {
                "compiler/version.info": COMPONENT_ONLY_VERSION_INFO,
                "opp/version.info": COMPILER_VERSION_INFO,
            },
            "8.2.T2",
            "release",
            "opp/version.info",
        ),
        (  # a version file without a version is passed over
            {"version.cfg": "# version: 1.0\n", "compiler/version.info": COMPILER_VERSION_INFO},
            "8.2.T2",
            "release",
            "compiler/version.info",
        ),
    ],
)
def test_cann_version_files(
    tmp_path: Path, files: dict[str, str], version: str, kind: str, source: str
) -> None:
    root = write_cann_files(tmp_path / "toolkit", files)
    found = cann.find_version({"ASCEND_HOME_PATH": str(root)})
    assert (found.version, found.kind) == (version, kind)
    assert found.source == str(root / source.format(arch=cann.host_arch()))
    assert found.roots[0] == str(root)


def test_cann_version_in_the_doctor_report(tmp_path: Path) -> None:
    root = tmp_path / "Ascend" / "ascend-toolkit" / "latest"
    make_fake_cann(root / "lib64")
    write_cann_files(root, {"version.cfg": VERSION_CFG})
    code, report = run_doctor(tmp_path, ASCEND_HOME_PATH=str(root))
    assert report["cann"]["version"]["version"] == "8.0.0"
    v = verdict(report, "cann-version")
    assert (v["level"], v["title"]) == ("ok", "CANN 8.0.0")
    assert str(root / "version.cfg") in v["detail"]
    code, out = run_doctor(tmp_path, as_json=False, ASCEND_HOME_PATH=str(root))
    assert "  version              8.0.0\n" in out["text"]


def test_cann_version_found_through_the_library_folder(tmp_path: Path) -> None:
    """Only LD_LIBRARY_PATH is set (no ASCEND_HOME_PATH): the install holding libascendcl.so
    is where the version file is looked for."""
    root = tmp_path / "cann-8.5.0"
    libs = make_fake_cann(root / "lib64")
    write_cann_files(root, {"{arch}-linux/ascend_toolkit_install.info": TOOLKIT_INSTALL_INFO})
    code, report = run_doctor(tmp_path, LD_LIBRARY_PATH=str(libs))
    v = verdict(report, "cann-version")
    assert (v["level"], v["title"]) == ("ok", "CANN 8.3.RC2")


def test_cann_component_version_is_labelled(tmp_path: Path) -> None:
    root = write_cann_files(tmp_path / "toolkit", {"opp/version.info": "Version=9.1.0\n"})
    make_fake_cann(root / "lib64")
    code, report = run_doctor(tmp_path, ASCEND_HOME_PATH=str(root))
    v = verdict(report, "cann-version")
    assert v["level"] == "ok"
    assert v["title"] == "CANN 9.1.0 (the opp component's number)"
    assert "can differ from the CANN release" in v["detail"]


@clean_host
def test_cann_version_unknown_says_where_it_looked(tmp_path: Path) -> None:
    root = tmp_path / "toolkit"
    make_fake_cann(root / "lib64")  # the libraries are there, the version files are not
    code, report = run_doctor(tmp_path, ASCEND_HOME_PATH=str(root))
    v = verdict(report, "cann-version")
    assert (v["level"], v["title"]) == ("warn", "CANN version unknown")
    assert str(root) in v["detail"]
    assert "version.cfg" in v["detail"] and "ascend_toolkit_install.info" in v["detail"]
    assert "ASCEND_HOME_PATH" in v["fix"]
    assert report["cann"]["version"]["version"] is None
    assert str(root / "version.cfg") in report["cann"]["version"]["looked"]


@clean_host
def test_cann_version_unknown_without_cann_is_informational(tmp_path: Path) -> None:
    code, report = run_doctor(tmp_path)
    v = verdict(report, "cann-version")
    assert (v["level"], v["fix"]) == ("info", None)
    assert cann.DEFAULT_TOOLKIT_ROOTS[0] in v["detail"]


# --------------------------------------------------------------------------- ACL virtual memory

#: Calls the ACL memory driver needs that the "old CANN" library below does not export.
HIDDEN_VM_CALLS = ("aclrtMallocPhysical", "aclrtMapMem", "aclrtReserveMemAddress")


def _compile_fake_acl(out: Path, *extra: str) -> Path:
    """The fake libascendcl (tests/fake_acl) compiled with extra compiler/linker flags."""
    out.parent.mkdir(parents=True, exist_ok=True)
    cc = fake_acl_build.compiler()
    assert cc is not None
    cmd = [
        cc,
        "-shared",
        "-fPIC",
        *fake_acl_build.CFLAGS,
        "-I",
        fake_acl_build.acl_include_dir(),
        *extra,
        "-o",
        str(out),
        fake_acl_build.SOURCE,
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, f"{' '.join(cmd)}:\n{proc.stderr}"
    return out


@pytest.fixture(scope="module")
def fake_acl_libs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Fake libascendcl.so builds, each in its own lib64 folder: ``full`` (every call),
    ``old`` (:data:`HIDDEN_VM_CALLS` kept local by a linker version script, as on a CANN
    without the virtual-memory API), ``sysv`` (a DT_HASH table instead of DT_GNU_HASH)."""
    if fake_acl_build.compiler() is None:
        pytest.skip("no C compiler (cc/gcc/clang)")
    base = tmp_path_factory.mktemp("fake_acl_libs")
    script = base / "hide_vm.map"
    script.write_text("{ local: " + "; ".join(HIDDEN_VM_CALLS) + "; };\n")
    name = fake_acl_build.LIBRARY_NAME
    return {
        "full": _compile_fake_acl(base / "full" / "lib64" / name),
        "old": _compile_fake_acl(base / "old" / "lib64" / name, f"-Wl,--version-script={script}"),
        "sysv": _compile_fake_acl(base / "sysv" / "lib64" / name, "-Wl,--hash-style=sysv"),
    }


def _cann_with(tmp_path: Path, library: Path) -> Path:
    """A CANN tree in tmp_path whose lib64 holds ``library`` and a placeholder libhccl."""
    root = tmp_path / "Ascend" / "ascend-toolkit" / "latest"
    libs = make_fake_cann(root / "lib64", ["libhccl.so"])
    (libs / "libascendcl.so").write_bytes(library.read_bytes())
    write_cann_files(root, {"version.cfg": VERSION_CFG})
    return root


def test_acl_vm_api_present(tmp_path: Path, fake_acl_libs: dict[str, Path]) -> None:
    root = _cann_with(tmp_path, fake_acl_libs["full"])
    code, report = run_doctor(tmp_path, ASCEND_HOME_PATH=str(root))
    info = report["cann"]["acl_vm"]
    assert info["library"] == str(root / "lib64" / "libascendcl.so")
    assert info["missing"] == [] and info["error"] is None
    assert set(info["needed"]) == set(acl_driver.SIGNATURES)
    v = verdict(report, "acl-vm")
    assert (v["level"], v["fix"]) == ("ok", None)
    assert f"all {len(acl_driver.SIGNATURES)} calls" in v["detail"]


def test_acl_vm_api_missing(tmp_path: Path, fake_acl_libs: dict[str, Path]) -> None:
    root = _cann_with(tmp_path, fake_acl_libs["old"])
    code, report = run_doctor(tmp_path, ASCEND_HOME_PATH=str(root))
    assert report["cann"]["acl_vm"]["missing"] == sorted(HIDDEN_VM_CALLS)
    v = verdict(report, "acl-vm")
    assert v["level"] == "warn"
    assert v["title"] == "libascendcl.so lacks the ACL virtual-memory API"
    assert ", ".join(sorted(HIDDEN_VM_CALLS)) in v["detail"]
    assert "sleep mode" in v["detail"]
    assert "CANN 7.0 or newer" in v["fix"]
    # the library really lacks them: the driver refuses it with the same news
    hidden = "|".join(HIDDEN_VM_CALLS)
    with pytest.raises(DriverError, match=f"has no ({hidden}): .* needs CANN 7.0 or newer"):
        acl_driver.AclDriver(str(fake_acl_libs["old"]))


def test_acl_vm_unreadable_library(tmp_path: Path) -> None:
    libs = make_fake_cann(tmp_path / "cann-libs")  # placeholders, not real ELF libraries
    code, report = run_doctor(tmp_path, LD_LIBRARY_PATH=str(libs))
    v = verdict(report, "acl-vm")
    assert (v["level"], v["title"]) == ("warn", "cannot read the symbols of libascendcl.so")
    assert str(libs / "libascendcl.so") in v["detail"]
    assert v["fix"]


@clean_host
def test_acl_vm_not_checked_without_cann(tmp_path: Path) -> None:
    code, report = run_doctor(tmp_path)
    v = verdict(report, "acl-vm")
    assert (v["level"], v["title"]) == ("info", "ACL virtual-memory API not checked")
    assert report["cann"]["acl_vm"]["library"] is None


def test_elf_symbols_match_nm(fake_acl_libs: dict[str, Path]) -> None:
    nm = shutil.which("nm")
    if nm is None:
        pytest.skip("nm (binutils) is not installed")
    for kind, path in fake_acl_libs.items():
        proc = subprocess.run(
            [nm, "-D", "--defined-only", str(path)], capture_output=True, text=True, check=True
        )
        expected = {line.split()[-1].split("@")[0] for line in proc.stdout.splitlines()}
        assert elf.exported_symbols(path) == expected, kind
    assert not set(HIDDEN_VM_CALLS) & elf.exported_symbols(fake_acl_libs["old"])


@pytest.mark.parametrize("kind", ["full", "sysv"])
def test_elf_symbols_without_section_headers(
    tmp_path: Path, fake_acl_libs: dict[str, Path], kind: str
) -> None:
    """A library whose section headers are gone is read through its dynamic segment (with
    a GNU hash table for ``full``, a SysV one for ``sysv``)."""
    data = bytearray(fake_acl_libs[kind].read_bytes())
    assert data[4] == 2 and data[5] == 1, "the test edits a little-endian ELF64 header"
    data[0x28:0x30] = bytes(8)  # e_shoff
    data[0x3C:0x40] = bytes(4)  # e_shnum, e_shstrndx
    stripped = tmp_path / "libstripped.so"
    stripped.write_bytes(bytes(data))
    assert elf.exported_symbols(stripped) == elf.exported_symbols(fake_acl_libs[kind])
    assert set(acl_driver.SIGNATURES) <= elf.exported_symbols(stripped)


def test_elf_rejects_what_is_not_elf(tmp_path: Path) -> None:
    text = tmp_path / "libascendcl.so"
    text.write_text("INPUT(libascendcl.so.1)\n")  # a linker script, as some distros ship
    with pytest.raises(elf.ElfError, match="is not an ELF file"):
        elf.exported_symbols(text)
    truncated = tmp_path / "libtruncated.so"
    truncated.write_bytes(b"\x7fELF\x02\x01\x01" + bytes(20))
    with pytest.raises(elf.ElfError, match="truncated"):
        elf.exported_symbols(truncated)


# --------------------------------------------------------------------------- allocator shim

PARTIAL_SHIM = """\
#include <stddef.h>
void *npu_platform_alloc(size_t size, int device, void *stream) {
    (void)size; (void)device; (void)stream; return NULL;
}
void npu_platform_free(void *ptr, size_t size, int device, void *stream) {
    (void)ptr; (void)size; (void)device; (void)stream;
}
"""


def test_alloc_shim_of_this_checkout_loads(tmp_path: Path) -> None:
    if not torch_route.shim_path().is_file():
        pytest.skip(f"{torch_route.shim_path()} is not built in this checkout")
    code, report = run_doctor(tmp_path, NPU_PLATFORM_EMULATE="1")
    assert report["alloc_shim"]["path"] == str(torch_route.shim_path())
    assert report["alloc_shim"]["missing"] == []
    v = verdict(report, "alloc-shim")
    assert (v["level"], v["title"]) == ("ok", "allocator shim loads")
    for symbol in (torch_route.ALLOC_FN, torch_route.FREE_FN, *doctor.SHIM_CALLBACK_SYMBOLS):
        assert symbol in v["detail"]


def test_alloc_shim_missing(tmp_path: Path) -> None:
    info = doctor.inspect_alloc_shim(tmp_path / "_alloc_shim.so")
    assert info["exists"] is False
    v = doctor.check_alloc_shim(info, on_npu=True)
    assert (v.level, v.title) == ("warn", "allocator shim is missing")
    assert "C compiler" in v.fix and "_alloc_shim.c" in v.fix
    # without an NPU nothing needs it
    assert doctor.check_alloc_shim(info, on_npu=False).level == "info"


def test_alloc_shim_not_loadable(tmp_path: Path) -> None:
    shim = tmp_path / "_alloc_shim.so"
    shim.write_bytes(b"not a shared library")
    v = doctor.check_alloc_shim(doctor.inspect_alloc_shim(shim), on_npu=True)
    assert (v.level, v.title) == ("warn", "allocator shim cannot be loaded")
    assert str(shim) in v.detail


def test_alloc_shim_lacking_entry_points(tmp_path: Path) -> None:
    if fake_acl_build.compiler() is None:
        pytest.skip("no C compiler (cc/gcc/clang)")
    source = tmp_path / "partial_shim.c"
    source.write_text(PARTIAL_SHIM)
    shim = fake_acl_build.compile_shared(str(source), str(tmp_path / "_alloc_shim.so"), [])
    info = doctor.inspect_alloc_shim(shim)
    assert info["missing"] == list(doctor.SHIM_CALLBACK_SYMBOLS)
    v = doctor.check_alloc_shim(info, on_npu=True)
    assert (v.level, v.title) == ("warn", "allocator shim lacks entry points")
    assert "npu_platform_set_callbacks, npu_platform_has_callbacks" in v.detail
