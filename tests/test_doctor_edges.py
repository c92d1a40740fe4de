"""In-process edge cases of ``npu_platform.doctor``: npu-smi that fails or cannot run, a
detection crash, a broken entry_points.txt, torch_memory_saver installs the doctor has to
dig into, and the report's wording. (tests/test_doctor.py runs the whole doctor in
subprocesses; these call its checks directly.)"""

from __future__ import annotations

import dataclasses
import os
import sys
import types
from pathlib import Path

import pytest

from npu_platform import detect as detect_mod
from npu_platform import doctor
from tests.fakedist import make_dist, make_executable, make_fake_npu_smi


def test_verdict_rejects_an_unknown_level() -> None:
    with pytest.raises(ValueError, match=r"verdict level 'fatal' is not one of \("):
        doctor.Verdict("x", "fatal", "title", "detail")


def test_unparsable_framework_version_is_a_warning() -> None:
    v = doctor.check_framework("vllm", "not-a-version")
    assert (v.level, v.title) == ("warn", "vllm version 'not-a-version' cannot be parsed")
    assert "cannot tell whether 'not-a-version' is inside" in v.detail


def test_source_hint_names_an_existing_set_env_script(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    if any(os.path.isfile(c) for c in doctor._SET_ENV_CANDIDATES[:2]):
        pytest.skip("a system-wide CANN set_env.sh exists here")
    assert doctor._source_hint().startswith("install the CANN toolkit and source its set_env.sh")
    script = tmp_path / "Ascend" / "ascend-toolkit" / "set_env.sh"
    script.parent.mkdir(parents=True)
    script.write_text("export ASCEND_HOME_PATH=/x\n")
    assert doctor._set_env_script() == str(script)
    assert doctor._source_hint() == f"source {script}"


def test_broken_entry_points_file_means_no_autoload_entry_point(
    tmp_path: Path, monkeypatch
) -> None:
    make_dist(
        tmp_path,
        "torch_npu",
        "2.13.0",
        entry_points="[torch.backends]\nnpu = torch_npu:_autoload\n",
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    assert doctor.torch_npu_autoload_entry_points() == ["npu = torch_npu:_autoload"]
    broken = make_dist(tmp_path, "broken", "1.0", entry_points="[torch.backends]\nno equals sign\n")
    assert broken.is_dir()
    monkeypatch.syspath_prepend(str(tmp_path))
    assert doctor.torch_npu_autoload_entry_points() == []


# -- npu-smi ----------------------------------------------------------------------------------


def _with_bin(tmp_path: Path, monkeypatch) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    return bin_dir


def test_npu_smi_failure_quotes_its_stderr(tmp_path: Path, monkeypatch) -> None:
    bin_dir = _with_bin(tmp_path, monkeypatch)
    make_executable(
        bin_dir / "npu-smi",
        f"#!{sys.executable}\nimport sys\nsys.stderr.write('dcmi init failed -8005\\n')\n"
        "sys.exit(3)\n",
    )
    info, v = doctor.collect_devices({"target": "real", "device_count": 1})
    assert info["error"] == "exit status 3: dcmi init failed -8005"
    assert (v.level, v.title) == ("warn", "`npu-smi info` failed")
    assert "exit status 3: dcmi init failed -8005" in v.detail


def test_npu_smi_that_cannot_run(tmp_path: Path, monkeypatch) -> None:
    bin_dir = _with_bin(tmp_path, monkeypatch)
    target = bin_dir / "npu-smi"
    target.write_bytes(b"\x00\x01 not a program")
    target.chmod(0o755)
    info, v = doctor.collect_devices({"target": "real", "device_count": 1})
    assert str(info["error"]).startswith("OSError: ") and "Exec format error" in str(info["error"])
    assert info["count"] == 0
    assert (v.level, v.title) == ("warn", "`npu-smi info` failed")


def test_npu_smi_listing_no_device(tmp_path: Path, monkeypatch) -> None:
    bin_dir = _with_bin(tmp_path, monkeypatch)
    make_fake_npu_smi(bin_dir, "+---------+\n| NPU  Name |\n+---------+\n")
    info, v = doctor.collect_devices({"target": "real", "device_count": 1})
    assert info["error"] is None and info["count"] == 0
    assert (v.level, v.title) == ("warn", "npu-smi lists no NPU")
    assert "/dev/davinci" in (v.fix or "")


def test_detection_crash_is_an_error_verdict(monkeypatch) -> None:
    def crash(refresh: bool = False) -> None:
        raise RuntimeError("driver exploded")

    monkeypatch.setattr(detect_mod, "detect", crash)
    info, v = doctor.run_detect()
    assert info == {
        "target": None,
        "reason": "RuntimeError: driver exploded",
        "device_count": 0,
    }
    assert v is not None and (v.level, v.title) == ("error", "NPU detection crashed")
    assert v.detail == "RuntimeError: driver exploded"


# -- torch_memory_saver ------------------------------------------------------------------------


@pytest.fixture
def saver_site(tmp_path: Path, monkeypatch) -> Path:
    site = tmp_path / "site"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.delitem(sys.modules, "torch_memory_saver", raising=False)
    return site


def test_memory_saver_without_record_is_searched_in_its_folder(saver_site: Path) -> None:
    info_dir = make_dist(
        saver_site,
        "torch_memory_saver",
        "0.0.7",
        files={
            "torch_memory_saver/__init__.py": "",
            "torch_memory_saver/sub/_hook.so": b"\x7fELF\x00libascendcl.so\x00aclrtMapMem\x00",
            "torch_memory_saver/notes.txt": "not a shared object\n",
        },
    )
    (info_dir / "RECORD").unlink()
    info = doctor.inspect_torch_memory_saver()
    so = str(saver_site / "torch_memory_saver" / "sub" / "_hook.so")
    assert info == {
        "installed": True,
        "version": "0.0.7",
        "build": "ascend",
        "shared_objects": {so: "ascend"},
    }
    assert doctor.check_torch_memory_saver(info, on_npu=True).level == "ok"


def test_memory_saver_without_record_or_spec(saver_site: Path, monkeypatch) -> None:
    """No RECORD and a torch_memory_saver module without a spec: nothing to inspect."""
    info_dir = make_dist(saver_site, "torch_memory_saver", "0.0.6", files={"x.so": b"\x7fELF"})
    (info_dir / "RECORD").unlink()
    monkeypatch.setitem(sys.modules, "torch_memory_saver", types.ModuleType("torch_memory_saver"))
    info = doctor.inspect_torch_memory_saver()
    assert (info["installed"], info["build"], info["shared_objects"]) == (True, "unknown", {})


def test_memory_saver_with_unreadable_and_unknown_objects(saver_site: Path) -> None:
    make_dist(
        saver_site,
        "torch_memory_saver",
        "0.0.8",
        files={
            "torch_memory_saver/__init__.py": "",
            "torch_memory_saver/plain.so": b"\x7fELF\x00nothing to see\x00",
            "torch_memory_saver/gone.so": b"\x7fELF",
        },
    )
    (saver_site / "torch_memory_saver" / "gone.so").unlink()  # listed in RECORD, not on disk
    info = doctor.inspect_torch_memory_saver()
    objects = info["shared_objects"]
    assert objects[str(saver_site / "torch_memory_saver" / "plain.so")] == "unknown"
    assert objects[str(saver_site / "torch_memory_saver" / "gone.so")] == (
        "unreadable (No such file or directory)"
    )
    assert info["build"] == "unknown"
    v = doctor.check_torch_memory_saver(info, on_npu=True)
    assert (v.level, v.title) == ("info", "torch_memory_saver 0.0.8: build not recognised")
    assert "libascendcl or the CUDA runtime" in v.detail


# -- rendering ---------------------------------------------------------------------------------


def test_render_text_of_a_report_that_can_work() -> None:
    real = doctor.run_checks()
    report = dataclasses.replace(
        real,
        verdicts=[
            doctor.Verdict("torch", "ok", "torch is fine", "detail"),
            doctor.Verdict("cann", "warn", "no CANN", "CANN is missing", "install CANN"),
        ],
    )
    assert report.ok and report.exit_code == 0
    text = doctor.render_text(report)
    assert text.endswith("Result: the stack can work (0 error(s), 1 warning(s)).\n")
    assert "fix: install CANN" in text and "[ WARN] no CANN" in text
    report.verdicts.append(doctor.Verdict("vllm", "error", "bad", "bad"))
    assert not report.ok and report.exit_code == 1
    assert doctor.render_text(report).endswith(
        "Result: the stack cannot work (1 error(s), 1 warning(s)).\n"
    )
