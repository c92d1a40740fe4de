"""The vLLM conformance checks (:mod:`npu_platform.vllm.conformance`) run in this process,
fed with broken inputs: each failing check must return ``passed=False`` with a detail that
names what is wrong.

The broken inputs are real objects: an installed distribution (a ``.dist-info`` folder on
``sys.path``) whose entry points do not load, platform and attention-backend classes that
break the contract, vLLM's registries holding other classes, and a generation child that
crashes, hangs, or answers a different platform or different tokens. vLLM's own global
state (its resolved platform, the attention-backend overrides and the custom-op registries)
is set for one test and restored afterwards; vLLM's general plugins are marked as loaded so
no check registers anything in this process.
"""

from __future__ import annotations

import json
import textwrap
import time
from pathlib import Path

import pytest
from vllm.v1.attention.backend import AttentionMetadataBuilder

from npu_platform.detect import detect
from npu_platform.vllm import conformance
from npu_platform.vllm.platform import NPUPlatform

THIS = __name__
NPU_PLATFORM_PATH = "npu_platform.vllm.platform.NPUPlatform"
NPU_BACKEND_PATH = "npu_platform.vllm.attention.NPUAttentionBackend"


# --------------------------------------------------------------------------- broken classes


class NotCallablePlatform(NPUPlatform):
    """Overrides a required hook with something that cannot be called."""

    import_kernels = None


class RaisingPlatform(NPUPlatform):
    """A required query raises."""

    @classmethod
    def get_device_uuid(cls, device_id: int = 0) -> str:
        raise RuntimeError("no device UUID on this board")


class OtherBackendPlatform(NPUPlatform):
    """Selects an attention backend that is not ours."""

    @classmethod
    def get_attn_backend_cls(cls, selected_backend, attn_selector_config, num_heads=None):
        return "vllm.v1.attention.backends.cpu_attn.CPUAttentionBackend"


class AbstractBuilder(AttentionMetadataBuilder):
    """Leaves ``build`` abstract."""


class BrokenBackend:
    """An attention backend breaking every part of the contract the check inspects."""

    forward_includes_kv_cache_update = True

    @staticmethod
    def get_name() -> str:
        return "SOMETHING_ELSE"

    @staticmethod
    def get_impl_cls() -> type:
        return object

    @staticmethod
    def get_builder_cls() -> type:
        return AbstractBuilder

    @classmethod
    def supported_kv_cache_layouts(cls) -> tuple:
        return ()

    @classmethod
    def customize_spec(cls, spec):
        return spec


class NotAnOp:
    """Registered as a custom op, but neither vLLM's op nor with ``forward_oot``."""


# --------------------------------------------------------------------------- fixtures


def _restore(registry: dict, saved: dict) -> None:
    """Undo a test's changes to one of vLLM's registries. Entries vLLM's own modules added
    meanwhile (imported for the first time during the test) stay: those modules will not
    register again."""
    for key in [k for k in registry if k not in saved]:
        value = registry[key]
        if not (isinstance(value, type) and value.__module__.startswith("vllm.")):
            del registry[key]
    registry.update(saved)


@pytest.fixture
def vllm_state(monkeypatch):
    """vLLM's process-wide registries, restored after the test; general plugins count as
    loaded (the checks call ``load_general_plugins``, which then registers nothing)."""
    import vllm.platforms
    import vllm.plugins
    from vllm.model_executor.custom_op import op_registry, op_registry_oot
    from vllm.v1.attention.backends import registry

    monkeypatch.setattr(vllm.plugins, "plugins_loaded", True)
    monkeypatch.setattr(vllm.platforms, "_current_platform", vllm.platforms._current_platform)
    registries = (op_registry_oot, op_registry, registry._ATTN_OVERRIDES)
    saved = [dict(r) for r in registries]
    yield monkeypatch
    for current, before in zip(registries, saved, strict=True):
        _restore(current, before)


@pytest.fixture
def on_npu(emulated, vllm_state):
    """The emulated NPU, with our platform as vLLM's current platform."""
    import vllm.platforms

    vllm_state.setattr(vllm.platforms, "_current_platform", NPUPlatform())
    return vllm_state


@pytest.fixture
def no_npu(monkeypatch):
    monkeypatch.delenv("NPU_PLATFORM_EMULATE", raising=False)
    detect(refresh=True)
    yield
    detect(refresh=True)


def _expect_platform(monkeypatch, path: str) -> None:
    monkeypatch.setattr(conformance, "_expected_platform_path", lambda: path)


# --------------------------------------------------------------------------- introspection


def test_not_implemented_detection_on_sources_it_cannot_read_or_parse():
    def raises():
        raise NotImplementedError("subclass it")

    def returns():
        return NotImplemented

    assert conformance.raises_not_implemented(raises) is True
    assert conformance.raises_not_implemented(returns) is False
    # A builtin has no Python source; a lambda in a loop header has source (that one line)
    # that does not parse on its own. Neither counts as raising.
    assert conformance.raises_not_implemented(len) is False
    for in_header in [lambda: 1]:
        assert conformance.raises_not_implemented(in_header) is False


def test_not_overridden_finds_requirements_itself_and_names_foreign_owners():
    from vllm.platforms.interface import Platform, UnspecifiedPlatform

    assert conformance.not_overridden(NPUPlatform) == []
    missing = conformance.not_overridden(UnspecifiedPlatform)
    assert missing == sorted(conformance.required_platform_methods())
    assert {"get_device_name", "set_device", "get_attn_backend_cls"} <= set(missing)
    # A required name nothing in the MRO defines is missing too.
    assert conformance.not_overridden(Platform, {"no_such_hook"}) == ["no_such_hook"]


# --------------------------------------------------------------------------- entry points


def test_entry_point_problems_are_each_named(tmp_path, monkeypatch):
    _install_distribution(
        tmp_path,
        "npu_platform_probe",
        """
        [npu_platform_probe.unloadable]
        probe = npu_platform_no_such_module:plugin

        [npu_platform_probe.not_callable]
        probe = npu_platform.vllm.conformance:PLATFORM_GROUP

        [npu_platform_probe.good]
        probe = npu_platform.vllm.conformance:run_all
        """,
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(
        conformance,
        "EXPECTED_ENTRY_POINTS",
        {
            "npu_platform_probe.missing": "npu_platform.vllm.conformance:main",
            "npu_platform_probe.unloadable": "npu_platform_no_such_module:plugin",
            "npu_platform_probe.not_callable": "npu_platform.vllm.conformance:PLATFORM_GROUP",
            "npu_platform_probe.good": "npu_platform.vllm.conformance:run_all",
        },
    )
    name, passed, detail = conformance.check_entry_points()
    assert name == "vllm entry points registered"
    assert passed is False
    problems = detail.split("; ")
    assert problems[0] == "npu_platform_probe.missing -> npu_platform.vllm.conformance:main missing"
    assert problems[1].startswith(
        "npu_platform_probe.unloadable -> npu_platform_no_such_module:plugin does not load "
        "(ModuleNotFoundError("
    )
    assert problems[2].startswith(
        "npu_platform_probe.not_callable -> npu_platform.vllm.conformance:PLATFORM_GROUP "
        "is not callable"
    )
    assert len(problems) == 3, "the loadable, callable entry point is no problem"
    assert detail.endswith("(reinstall npu-platform: pip install -e .)")


# --------------------------------------------------------------------------- without an NPU


def test_without_an_npu_the_npu_checks_skip_and_say_why(no_npu, capsys):
    reason = detect().reason
    for check in conformance.CHECKS[1:]:
        name, passed, detail = check()
        assert passed is True, name
        assert detail == f"skipped: no NPU, real or emulated ({reason})"
    # The command: the entry points pass, everything else is a skip, and the status is 0.
    assert conformance.main([]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("[pass] vllm entry points registered: ")
    assert [line[:6] for line in lines[1:]] == ["[skip]"] * 5
    assert "vllm greedy generation on a tiny model: skipped: no NPU" in lines[-1]


# --------------------------------------------------------------------------- the command


def test_command_prints_a_table_and_fails_when_a_check_fails(monkeypatch, capsys):
    monkeypatch.setattr(
        conformance,
        "CHECKS",
        (
            lambda: ("first", True, "fine"),
            lambda: ("second", False, "broken because of X"),
            lambda: ("third", True, "skipped: not here"),
        ),
    )
    assert conformance.main([]) == 1
    assert capsys.readouterr().out.splitlines() == [
        "[pass] first: fine",
        "[FAIL] second: broken because of X",
        "[skip] third: skipped: not here",
    ]
    monkeypatch.setattr(conformance, "CHECKS", (lambda: ("only", True, "fine"),))
    assert conformance.main([]) == 0


@pytest.mark.parametrize("args", [["bogus"], ["generate"], ["generate", "a", "b"]])
def test_command_usage_errors(args, capsys):
    assert conformance.main(args) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.strip() == "usage: python -m npu_platform.vllm.conformance [generate DIR]"


# --------------------------------------------------------------------------- platform class


def test_platform_class_check_passes_when_vllm_resolved_ours(on_npu):
    name, passed, detail = conformance.check_platform_class()
    assert (name, passed) == ("vllm platform class resolves to ours", True)
    assert detail == f"emulated NPU -> {NPU_PLATFORM_PATH}"


def test_platform_class_check_names_the_platform_that_won(on_npu):
    import vllm.platforms
    from vllm.platforms.interface import UnspecifiedPlatform

    on_npu.setattr(vllm.platforms, "_current_platform", UnspecifiedPlatform())
    _, passed, detail = conformance.check_platform_class()
    assert passed is False
    assert detail.startswith(
        f"vLLM resolved vllm.platforms.interface.UnspecifiedPlatform, not {NPU_PLATFORM_PATH}"
    )
    assert "VLLM_PLUGINS, VLLM_TARGET_DEVICE or another platform plugin" in detail


def test_platform_class_check_fails_when_the_entry_point_declines(on_npu):
    """An unsupported vLLM: the platform entry point answers None even on an NPU."""
    from npu_platform.entry_points import vllm as entry

    from npu_platform import versions

    on_npu.setitem(versions.SUPPORTED, "vllm", ">=99")
    entry._vllm_supported.cache_clear()
    try:
        _, passed, detail = conformance.check_platform_class()
    finally:
        entry._vllm_supported.cache_clear()
    assert passed is False
    assert detail == f"the platform entry point answers None, not {NPU_PLATFORM_PATH}"


def rival_platform() -> str:
    """A second installed platform plugin that also claims this machine."""
    return "vllm.platforms.interface.UnspecifiedPlatform"


def _install_distribution(root: Path, name: str, entry_points: str) -> None:
    dist = root / f"{name}-0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0\n")
    (dist / "entry_points.txt").write_text(textwrap.dedent(entry_points))


def test_platform_class_check_reports_a_rival_platform_plugin(on_npu, tmp_path):
    """Another installed platform plugin claims the NPU too: vLLM refuses to resolve a
    platform, and the check says so instead of raising."""
    import vllm.platforms

    _install_distribution(
        tmp_path,
        "rival_npu_plugin",
        f"""
        [vllm.platform_plugins]
        rival = {THIS}:rival_platform
        """,
    )
    on_npu.syspath_prepend(str(tmp_path))
    on_npu.delenv("VLLM_PLUGINS", raising=False)
    on_npu.setattr(vllm.platforms, "_current_platform", None)
    _, passed, detail = conformance.check_platform_class()
    assert passed is False
    assert detail.startswith(
        "raised RuntimeError: Only one platform plugin can be activated, but got: "
    )
    assert "'rival'" in detail and "'npu_platform'" in detail


# --------------------------------------------------------------------------- platform methods


def test_platform_methods_pass_and_only_required_ones_are_called(on_npu):
    on_npu.setitem(conformance._SAFE_CALLS, "is_cuda_alike", ())
    required = conformance.required_platform_methods()
    assert "is_cuda_alike" not in required
    called = sum(1 for method in conformance._SAFE_CALLS if method in required)
    name, passed, detail = conformance.check_platform_methods()
    assert (name, passed) == ("vllm platform methods implemented", True), detail
    assert detail == (
        f"{len(required)} required methods overridden by NPUPlatform; {called} called without "
        f"error; communicator {NPUPlatform.get_device_communicator_cls()} imports"
    )


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        (
            "vllm.platforms.interface:Platform",
            "Platform does not override: ",
        ),
        (f"{THIS}:NotCallablePlatform", "not callable: import_kernels"),
        (
            f"{THIS}:RaisingPlatform",
            "RaisingPlatform.get_device_uuid() raised RuntimeError('no device UUID on this board')",
        ),
        (
            "npu_platform.vllm.no_such_module:NPUPlatform",
            "raised ModuleNotFoundError: No module named 'npu_platform.vllm.no_such_module'",
        ),
    ],
)
def test_platform_methods_check_names_the_broken_method(on_npu, path, expected):
    _expect_platform(on_npu, path)
    _, passed, detail = conformance.check_platform_methods()
    assert passed is False
    assert detail.startswith(expected), detail
    if "does not override" in expected:
        assert "get_device_name" in detail and "set_device" in detail


# --------------------------------------------------------------------------- attention backend


def _backend(monkeypatch, name: str, override: str | None = None, path: str | None = None):
    """Make the check look for backend ``name`` (overridden to ``override``) and expect our
    platform to select ``path``."""
    from vllm.v1.attention.backends import registry

    from npu_platform.vllm import platform

    monkeypatch.setattr(platform, "ATTENTION_BACKEND_NAME", name)
    if path is not None:
        monkeypatch.setattr(platform, "ATTENTION_BACKEND_PATH", path)
    if override is not None:
        registry._ATTN_OVERRIDES[registry.AttentionBackendEnum[name]] = override


def test_attention_check_fails_when_the_backend_is_not_registered(on_npu):
    _backend(on_npu, "NPU_ATTN_NOT_REGISTERED")
    _, passed, detail = conformance.check_attention_backend()
    assert (passed, detail) == (False, "NPU_ATTN_NOT_REGISTERED is not in AttentionBackendEnum")


def test_attention_check_fails_when_the_name_points_elsewhere(on_npu):
    _backend(on_npu, "CUSTOM", override=f"{THIS}.BrokenBackend")
    _, passed, detail = conformance.check_attention_backend()
    assert (passed, detail) == (False, f"CUSTOM points at {THIS}.BrokenBackend")


def test_attention_check_fails_when_the_platform_selects_another_backend(on_npu):
    _backend(on_npu, "CUSTOM", override=NPU_BACKEND_PATH)
    _expect_platform(on_npu, f"{THIS}.OtherBackendPlatform")
    _, passed, detail = conformance.check_attention_backend()
    assert passed is False
    assert detail == (
        "the platform selects vllm.v1.attention.backends.cpu_attn.CPUAttentionBackend for None"
    )


def test_attention_check_lists_every_contract_breach(on_npu):
    path = f"{THIS}.BrokenBackend"
    _backend(on_npu, "CUSTOM", override=path, path=path)
    _, passed, detail = conformance.check_attention_backend()
    assert passed is False
    problems = detail.split("; ")
    assert problems[0] == "get_name() is 'SOMETHING_ELSE'"
    assert problems[1] == "<class 'object'> is not an AttentionImpl"
    assert problems[2] == "AbstractBuilder leaves abstract methods"
    assert problems[3] == "no KV-cache layout declared (())"
    assert problems[4].startswith("unexpected KV-cache spec FullAttentionSpec(")
    assert problems[5] == "the KV-cache update is not a separate do_kv_cache_update step"
    assert len(problems) == 6


def test_attention_check_reports_our_backend_under_another_name(on_npu):
    """Our backend registered under a name that is not its own: only the name is wrong."""
    _backend(on_npu, "CUSTOM", override=NPU_BACKEND_PATH)
    _, passed, detail = conformance.check_attention_backend()
    assert (passed, detail) == (False, "get_name() is 'NPU_ATTN'")


def test_attention_check_reports_an_exception(on_npu):
    _backend(on_npu, "CUSTOM", override=NPU_BACKEND_PATH)
    _expect_platform(on_npu, "npu_platform.vllm.no_such_module.NPUPlatform")
    _, passed, detail = conformance.check_attention_backend()
    assert passed is False
    assert detail == (
        "raised AttributeError: module 'npu_platform.vllm' has no attribute 'no_such_module'"
    )


# --------------------------------------------------------------------------- custom ops


def _register_ours(monkeypatch):
    from vllm.model_executor.custom_op import op_registry_oot

    from npu_platform.vllm.custom_ops import OOT_OPS

    for op, cls in OOT_OPS.items():
        op_registry_oot[op] = cls


def test_custom_ops_check_passes_with_ours_registered(on_npu):
    _register_ours(on_npu)
    name, passed, detail = conformance.check_custom_ops()
    assert (name, passed) == ("vllm custom ops registered", True)
    assert detail == (
        "RMSNorm -> NPURMSNorm, RotaryEmbedding -> NPURotaryEmbedding, SiluAndMul -> NPUSiluAndMul"
    )


def test_custom_ops_check_names_ops_registered_to_others(on_npu):
    from vllm.model_executor.custom_op import op_registry_oot

    _register_ours(on_npu)
    del op_registry_oot["RMSNorm"]
    op_registry_oot["SiluAndMul"] = NotAnOp
    _, passed, detail = conformance.check_custom_ops()
    assert passed is False
    assert detail == f"RMSNorm -> None; SiluAndMul -> {NotAnOp!r}"


def test_custom_ops_check_names_a_replacement_that_breaks_the_op(on_npu):
    from vllm.model_executor.custom_op import op_registry_oot

    from npu_platform.vllm import custom_ops

    _register_ours(on_npu)
    on_npu.setitem(custom_ops.OOT_OPS, "SiluAndMul", NotAnOp)
    op_registry_oot["SiluAndMul"] = NotAnOp
    _, passed, detail = conformance.check_custom_ops()
    assert passed is False
    ours = f"{THIS}.NotAnOp"
    assert detail == (
        f"{ours} does not subclass vllm.model_executor.layers.activation.SiluAndMul; "
        f"{ours} does not define forward_oot"
    )


def test_custom_ops_check_reports_an_exception(on_npu):
    from vllm.model_executor.custom_op import op_registry

    _register_ours(on_npu)
    op_registry["corrupt"] = "not a class"
    _, passed, detail = conformance.check_custom_ops()
    assert passed is False
    assert detail == "raised AttributeError: 'str' object has no attribute '__name__'"


def test_custom_ops_check_names_a_replacement_vllm_would_never_use(on_npu):
    """vLLM swaps in an out-of-tree op by the class name of the op it builds: a replacement
    registered under a name no vLLM op class has is never used."""
    from vllm.model_executor.custom_op import op_registry_oot

    from npu_platform.vllm import custom_ops

    _register_ours(on_npu)
    on_npu.setattr(conformance, "CUSTOM_OPS", (*conformance.CUSTOM_OPS, "RMSNormV2"))
    on_npu.setitem(custom_ops.OOT_OPS, "RMSNormV2", custom_ops.NPURMSNorm)
    op_registry_oot["RMSNormV2"] = custom_ops.NPURMSNorm
    _, passed, detail = conformance.check_custom_ops()
    assert (passed, detail) == (
        False,
        "vLLM has no custom op class RMSNormV2 (ours would never be used)",
    )


# --------------------------------------------------------------------------- generation


FAKE_CHILD = '''
"""Stands in for ``python -m npu_platform.vllm.conformance generate DIR``."""
import json, os, sys, time

if sys.argv[1:2] != ["generate"] or not os.path.isdir(sys.argv[2]):
    sys.exit(f"bad arguments {sys.argv[1:]}")
if os.environ.get("VLLM_ENABLE_V1_MULTIPROCESSING") != "0":
    sys.exit("the engine core must run in the child itself")
mode = os.environ["FAKE_CHILD_MODE"]
print("INFO some vLLM log line", flush=True)
if mode == "crash":
    sys.stderr.write("starting\\nTraceback (most recent call last):\\n")
    sys.stderr.write("  ...\\nRuntimeError: boom\\n")
    sys.exit(3)
if mode == "hang":
    time.sleep(120)
if mode == "garbage":
    print("NPU-PLATFORM-CONFORMANCE-RESULT {not json", flush=True)
if mode == "result":
    print("NPU-PLATFORM-CONFORMANCE-RESULT " + os.environ["FAKE_CHILD_RESULT"], flush=True)
'''


def _result(platform=NPU_PLATFORM_PATH, ok=True, equal=(True, False)) -> dict:
    return {
        "platform": platform,
        "block_size": 128,
        "head_size": 128,
        "ref": [[1, 2], [3, 4]],
        "got": [[1, 2], [3, 5]],
        "agreement": {
            "ok": ok,
            "sequences": [{"equal": e} for e in equal],
        },
    }


@pytest.fixture
def fake_child(emulated, tmp_path, monkeypatch):
    (tmp_path / "fake_conformance_child.py").write_text(FAKE_CHILD)
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    monkeypatch.delenv("VLLM_ENABLE_V1_MULTIPROCESSING", raising=False)
    monkeypatch.setattr(conformance, "_MODULE", "fake_conformance_child")

    def run(mode: str, result: dict | None = None):
        monkeypatch.setenv("FAKE_CHILD_MODE", mode)
        monkeypatch.setenv("FAKE_CHILD_RESULT", json.dumps(result))
        return conformance.check_greedy_generation()

    return run


def test_generation_check_passes_on_agreement(fake_child):
    name, passed, detail = fake_child("result", _result())
    assert (name, passed) == ("vllm greedy generation on a tiny model", True)
    assert detail == (
        f"2 prompts x {conformance.GENERATION_TOKENS} tokens, bfloat16, block size 128, head "
        "size 128: 1 equal to Hugging Face greedy generate, the rest up to a near-tie; vLLM on "
        "NPUPlatform"
    )


def test_generation_check_fails_on_disagreement(fake_child):
    _, passed, detail = fake_child("result", _result(ok=False))
    assert passed is False
    assert detail.startswith(
        "vLLM's tokens [[1, 2], [3, 5]] differ from Hugging Face's [[1, 2], [3, 4]] beyond a "
        "near-tie (bfloat16, block size 128, head size 128): "
    )


def test_generation_check_fails_on_another_platform(fake_child):
    _, passed, detail = fake_child("result", _result(platform="vllm.platforms.cpu.CpuPlatform"))
    assert (passed, detail) == (
        False,
        f"vLLM ran on vllm.platforms.cpu.CpuPlatform, not {NPU_PLATFORM_PATH}",
    )


def test_generation_check_reports_the_childs_last_words(fake_child):
    _, passed, detail = fake_child("crash")
    assert (passed, detail) == (
        False,
        "the child exited with 3: Traceback (most recent call last): |   ... | RuntimeError: boom",
    )
    # A child that exits cleanly without a result is a failure too.
    _, passed, detail = fake_child("silent")
    assert (passed, detail) == (False, "the child exited with 0: ")


def test_generation_check_reports_an_unreadable_result(fake_child):
    _, passed, detail = fake_child("garbage")
    assert passed is False
    assert detail == (
        "raised json.decoder.JSONDecodeError: Expecting property name enclosed in double "
        "quotes: line 1 column 2 (char 1)"
    )


def test_generation_check_gives_up_on_a_hung_child(fake_child, monkeypatch):
    monkeypatch.setattr(conformance, "GENERATION_TIMEOUT_S", 3)
    start = time.monotonic()
    _, passed, detail = fake_child("hang")
    assert time.monotonic() - start < 60
    assert (passed, detail) == (False, "the child did not finish in 3 s")


def test_failure_detail_is_the_exceptions_last_line():
    try:
        raise KeyError("platform")
    except KeyError as exc:
        assert conformance._failure("x", exc) == ("x", False, "raised KeyError: 'platform'")
