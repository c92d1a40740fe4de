"""Small corners of configuration and lookup: empty variables, bad supported-range constants,
unreadable distributions, the torch_npu data search, detection shortcuts and the command
line's output into a closed pipe."""

from __future__ import annotations

import io
import sys
import types

import pytest

from npu_platform import cli, env, torch_npu_data, versions
from npu_platform.detect import Detection, Target, detect, is_emulated, is_npu
from npu_platform.errors import ConfigError, EnvironmentProblem


@pytest.mark.parametrize(
    ("name", "default"),
    [
        ("NPU_PLATFORM_EMULATE_DEVICES", 1),
        ("NPU_PLATFORM_TORCH_MEMORY_SAVER", "npu_platform"),
        ("NPU_PLATFORM_PATCH_ONLY", None),
        ("NPU_PLATFORM_TORCH_NPU_DATA", None),
    ],
)
def test_an_empty_variable_means_its_default(name: str, default: object) -> None:
    assert env.get(name, {name: ""}) == default
    assert env.get(name, {}) == default


def test_values_of_each_kind_are_parsed() -> None:
    assert env.get("NPU_PLATFORM_TORCH_NPU_DATA", {"NPU_PLATFORM_TORCH_NPU_DATA": "/d"}) == "/d"
    assert env.get("NPU_PLATFORM_PATCH_ONLY", {"NPU_PLATFORM_PATCH_ONLY": "CUDA, flash_attn,"}) == (
        "cuda",
        "flash_attn",
    )
    assert env.VARIABLES["NPU_PLATFORM_TORCH_NPU_DATA"].accepted() == "a path"
    with pytest.raises(ConfigError) as err:
        env.get("NPU_PLATFORM_EMULATE_DEVICES", {"NPU_PLATFORM_EMULATE_DEVICES": "0"})
    assert str(err.value) == (
        "NPU_PLATFORM_EMULATE_DEVICES='0' is not valid: NPU_PLATFORM_EMULATE_DEVICES accepts "
        "an integer >= 1."
    )


def test_a_nameless_distribution_is_not_installed() -> None:
    # importlib.metadata raises ValueError here, not PackageNotFoundError.
    assert versions.installed_version("") is None


def test_a_broken_supported_range_constant_is_reported_as_ours(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(versions.SUPPORTED, "sglang", "0.5.23")
    with pytest.raises(ValueError) as err:
        versions.specifier("sglang")
    assert str(err.value) == "SUPPORTED['sglang'] = '0.5.23' is not a valid specifier"


def test_the_data_folder_variable_is_searched_first(
    tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "csrc").mkdir()
    wanted = tmp_path / "csrc" / "ops.yaml"
    wanted.write_text("custom: []\n", encoding="utf-8")
    monkeypatch.setenv("NPU_PLATFORM_TORCH_NPU_DATA", str(tmp_path))
    assert torch_npu_data.candidate_roots()[0] == ("NPU_PLATFORM_TORCH_NPU_DATA", str(tmp_path))
    assert torch_npu_data.find("csrc/ops.yaml") == str(wanted)
    with pytest.raises(EnvironmentProblem) as err:
        torch_npu_data.find("csrc/missing.yaml")
    message = str(err.value)
    assert "torch_npu data file csrc/missing.yaml not found" in message
    assert f"{tmp_path}/csrc/missing.yaml (NPU_PLATFORM_TORCH_NPU_DATA)" in message
    assert "(unpacked torch-npu wheel)" in message


def test_a_torch_npu_module_without_a_spec_is_skipped(monkeypatch: pytest.MonkeyPatch) -> None:
    """A stand-in ``torch_npu`` put into sys.modules by hand has no __spec__: find_spec
    raises ValueError, and the search goes on to the unpacked wheel."""
    monkeypatch.setitem(sys.modules, "torch_npu", types.ModuleType("torch_npu"))
    monkeypatch.delenv("NPU_PLATFORM_TORCH_NPU_DATA", raising=False)
    assert torch_npu_data.candidate_roots() == [
        ("unpacked torch-npu wheel", torch_npu_data.shared_data_dir())
    ]


def test_detection_shortcuts(emulated) -> None:
    assert is_npu() is True and is_emulated() is True
    decision = detect()
    assert repr(decision) == f"Detection('emulated', devices=1, reason={decision.reason!r})"
    assert repr(Detection(Target.NONE, "no")) == "Detection('none', devices=0, reason='no')"


def test_output_into_a_closed_pipe_is_exit_status_1(monkeypatch: pytest.MonkeyPatch) -> None:
    class ClosedPipe(io.StringIO):
        def write(self, text: str) -> int:
            raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(sys, "stdout", ClosedPipe())
    assert cli.main(["conformance", "--only", "tensorflow"]) == 1
