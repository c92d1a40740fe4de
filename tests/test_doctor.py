"""``npu-platform doctor``: each situation is built for real (fake distributions, libraries
and tools in temporary folders, environment variables) and the doctor runs in a child
interpreter, ``python -m npu_platform doctor --json``, exactly as a user would run it."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from npu_platform import cann, doctor
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


def supported_frameworks(site_dir: Path, vllm: str = "0.33.1", sglang: str = "0.5.23") -> None:
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
        ("vllm", "0.33.2", "ok"),
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
    assert doctor.check_framework("vllm", "0.33.0rc1").level == "ok"
    assert doctor.check_framework("vllm", "0.32.1.dev3+g1234abc").level == "ok"
    assert doctor.check_framework("vllm", "0.32.0+cpu").level == "ok"
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
