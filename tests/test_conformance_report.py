"""``npu-platform conformance``'s report in-process: the text table, skipped and failing
framework groups, and the JSON answer where there is no NPU."""

from __future__ import annotations

import io
import json

import pytest

from npu_platform import conformance


def test_framework_groups_that_are_absent_or_broken(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(conformance._FRAMEWORK_MODULES, "vllm", ("no_such_framework", "x.y"))
    monkeypatch.setitem(
        conformance._FRAMEWORK_MODULES, "sglang", ("json", "npu_platform.no_such_checks")
    )
    assert conformance._framework_checks("vllm") == [
        ("vllm integration", True, "skipped: no_such_framework is not installed")
    ]
    [(name, ok, detail)] = conformance._framework_checks("sglang")
    assert (name, ok) == ("sglang integration", False)
    assert detail == "raised ModuleNotFoundError: No module named 'npu_platform.no_such_checks'"


def test_text_report_on_the_emulated_npu(emulated, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(conformance._FRAMEWORK_MODULES, "vllm", ("no_such_framework", "x.y"))
    monkeypatch.setitem(
        conformance._FRAMEWORK_MODULES, "sglang", ("json", "npu_platform.no_such_checks")
    )
    out = io.StringIO()
    assert conformance.main(conformance.GROUPS, stream=out) == 1
    text = out.getvalue()
    assert text.startswith("npu-platform conformance on the emulated NPU (NPU_PLATFORM_EMULATE=1")
    assert "[pass] resume keeps the addresses" in text
    assert "[skip] vllm integration" in text
    assert "[FAIL] sglang integration" in text
    rows = sum(len(r) for r in conformance.run(["memory"]).values()) + 2
    assert text.rstrip().endswith(f"{rows - 1} passed, 1 failed")


def test_json_answer_without_an_npu() -> None:
    from npu_platform.detect import detect

    assert not detect(refresh=True).is_npu
    out = io.StringIO()
    assert conformance.main(["memory"], as_json=True, stream=out) == 1
    report = json.loads(out.getvalue())
    assert report["ok"] is False and report["detect"]["target"] == "none"
    assert report["error"].startswith("conformance needs an NPU, real or emulated: ")
    assert report["error"].endswith("Run `npu-platform doctor` for details.")
