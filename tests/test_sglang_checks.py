"""The sglang integration's guards, probes and self-checks in-process, no sglang server:
the memory-request hooks around sglang's tokenizer manager, the Triton and graph capability
probes, the ``npu-platform conformance`` sglang checks on their failure paths, and the
platform's start-up without sglang's plugin framework."""

from __future__ import annotations

import asyncio
import logging
import sys
import types
from collections.abc import Iterator

import pytest
import torch

from npu_platform.detect import Detection, Target
from npu_platform.sglang import capabilities, memory_requests, memory_saver
from npu_platform.sglang import conformance as sconf
from npu_platform.sglang.server_args import UnsupportedSetting, apply_defaults, check_memory_saver

ALL = ["kv_cache", "weights", "cuda_graph"]


# --------------------------------------------------------------------------- memory requests


class _Manager:
    """Stands for sglang's TokenizerManager: the hooks keep their state on it."""


def _request(tags=None):
    from sglang.srt.managers.io_struct import (
        ReleaseMemoryOccupationReqInput,
        ResumeMemoryOccupationReqInput,
    )

    return ReleaseMemoryOccupationReqInput(tags=tags), ResumeMemoryOccupationReqInput(tags=tags)


def test_hooks_track_released_tags_and_stop_bad_requests_before_the_schedulers() -> None:
    sent: list[tuple[str, list[str]]] = []

    def forward(action: str, fail: bool = False):
        """What sglang's own method does here: send the request on to the schedulers."""

        async def original(self, obj):
            sent.append((action, list(obj.tags)))
            if fail:
                raise RuntimeError("scheduler went away")
            return f"{action} done"

        return original

    manager = _Manager()

    async def scenario() -> None:
        release, _ = _request(["kv_cache"])
        assert await memory_requests.release_hook(forward("release"), manager, release) == (
            "release done"
        )
        # {} releases what is not released yet, in sglang's tag order.
        release_all, _ = _request()
        await memory_requests.release_hook(forward("release"), manager, release_all)
        assert release_all.tags == ["weights", "cuda_graph"]
        # A second release of a released tag never reaches the schedulers.
        again, _ = _request(["weights"])
        with pytest.raises(ValueError, match="'weights' already released"):
            await memory_requests.release_hook(forward("release"), manager, again)
        _, resume = _request(["kv_cache"])
        await memory_requests.resume_hook(forward("resume"), manager, resume)
        # sglang failing leaves the set as it was: cuda_graph stays released.
        _, failing = _request(["cuda_graph"])
        with pytest.raises(RuntimeError, match="scheduler went away"):
            await memory_requests.resume_hook(forward("resume", fail=True), manager, failing)
        _, rest = _request()
        await memory_requests.resume_hook(forward("resume"), manager, rest)
        assert rest.tags == ["weights", "cuda_graph"]

    asyncio.run(scenario())
    assert sent == [
        ("release", ["kv_cache"]),
        ("release", ["weights", "cuda_graph"]),
        ("resume", ["kv_cache"]),
        ("resume", ["cuda_graph"]),
        ("resume", ["weights", "cuda_graph"]),
    ]
    assert getattr(manager, memory_requests._STATE) == set()


def test_concurrent_requests_are_checked_one_after_the_other() -> None:
    """Two ``{}`` releases at once: the second sees the first's tags as released."""
    order: list[str] = []

    async def original(self, obj):
        order.append("start")
        await asyncio.sleep(0.01)
        order.append("end")

    async def scenario() -> list:
        manager = _Manager()
        first, _ = _request()
        second, _ = _request()
        return await asyncio.gather(
            memory_requests.release_hook(original, manager, first),
            memory_requests.release_hook(original, manager, second),
            return_exceptions=True,
        )

    results = asyncio.run(scenario())
    assert results[0] is None
    assert isinstance(results[1], ValueError) and "every tag is released" in str(results[1])
    assert order == ["start", "end"]


# --------------------------------------------------------------------------- capabilities


def test_triton_probe_without_triton(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "triton.backends", None)
    ok, reason = capabilities.triton_backend()
    assert ok is False
    assert reason.startswith("triton is not importable (ModuleNotFoundError")


class _Driver:
    def __init__(self, active: bool | Exception) -> None:
        self.active = active

    def is_active(self) -> bool:
        if isinstance(self.active, Exception):
            raise self.active
        return self.active


@pytest.mark.parametrize(
    ("active", "expected"),
    [
        (True, (True, "Triton backend 'ascend' is active")),
        (False, (False, "Triton backend 'ascend' is installed but not active")),
        (
            RuntimeError("libascend_hal.so not found"),
            (
                False,
                "Triton backend 'ascend' failed its activity check: libascend_hal.so not found",
            ),
        ),
    ],
)
def test_triton_probe_asks_an_ascend_backends_driver(
    monkeypatch: pytest.MonkeyPatch, active, expected
) -> None:
    """A triton-ascend backend registered in Triton's table, as its package registers it."""
    from triton.backends import backends

    monkeypatch.setitem(backends, "ascend", types.SimpleNamespace(driver=_Driver(active)))
    assert capabilities.triton_backend() == expected


def test_graph_probe_follows_torch_npus_graph_class(
    emulated, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert capabilities.graph_support() == (
        True,
        "torch.npu.NPUGraph supports capture with argument updates",
    )

    class OldGraph:  # a torch_npu whose NPUGraph has no update()
        pass

    monkeypatch.setattr(torch.npu, "NPUGraph", OldGraph)
    ok, reason = capabilities.graph_support()
    assert ok is False and "cannot update captured arguments" in reason
    monkeypatch.delattr(torch.npu, "NPUGraph")
    ok, reason = capabilities.graph_support()
    assert ok is False and "has no NPUGraph" in reason


# --------------------------------------------------------------------------- conformance


@pytest.fixture
def saver(emulated, monkeypatch: pytest.MonkeyPatch) -> Iterator[types.SimpleNamespace]:
    """The emulated NPU with a torch_memory_saver singleton of this test's own."""
    from npu_platform import torch_memory_saver as facade

    monkeypatch.delenv("LD_PRELOAD", raising=False)
    monkeypatch.setattr(facade, "torch_memory_saver", facade.TorchMemorySaver())
    try:
        yield types.SimpleNamespace(facade=facade)
    finally:
        facade.torch_memory_saver.manager.free_all()
        memory_saver.uninstall()


def test_conformance_checks_pass_on_the_emulated_npu(saver) -> None:
    results = {name: (ok, detail) for name, ok, detail in sconf.run_all()}
    assert all(ok for ok, _ in results.values()), results
    ok, detail = results["sglang memory-saver adapter backed by npu_platform"]
    assert "2 MiB pause/resume round trip" in detail and "kept data and address" in detail
    ok, detail = results["sglang server-arg defaults apply"]
    assert "preload hook mode refused" in detail


def test_conformance_without_an_npu_skips_the_device_checks() -> None:
    from npu_platform.detect import detect

    assert not detect(refresh=True).is_npu
    for check in (sconf.check_adapter_backed, sconf.check_server_arg_defaults):
        name, ok, detail = check()
        assert ok is True and detail.startswith("skipped: no NPU, real or emulated (")


def test_a_missing_entry_point_is_named_with_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    name, ok, detail = sconf.check_entry_points()
    assert ok, detail
    gone = "npu_platform.entry_points.sglang:gone"
    monkeypatch.setitem(sconf.EXPECTED_ENTRY_POINTS, sconf.PLUGINS_GROUP, gone)
    name, ok, detail = sconf.check_entry_points()
    assert ok is False
    assert detail == (
        f"missing sglang.srt.plugins -> {gone} (reinstall npu-platform: pip install -e .)"
    )


def test_platform_class_failures_are_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sconf, "PLATFORM_CLASS", "builtins.dict")
    assert sconf.check_platform_class() == (
        "sglang platform class resolves",
        False,
        "builtins.dict is not a subclass of NPUSRTPlatform",
    )
    monkeypatch.setattr(sconf, "PLATFORM_CLASS", "npu_platform.sglang.no_such_module.Platform")
    name, ok, detail = sconf.check_platform_class()
    assert ok is False
    assert detail == (
        "raised AttributeError: module 'npu_platform.sglang' has no attribute 'no_such_module'"
    )


def test_on_a_real_npu_sglangs_own_resolution_must_pick_our_platform(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Detection says REAL, but sglang in this process resolved another platform (here no
    NPU stack is loaded, so sglang's resolution finds none)."""
    monkeypatch.setattr(sconf, "detect", lambda: Detection(Target.REAL, "one NPU", 1))
    from sglang.srt import platforms

    current = type(platforms.current_platform)
    assert current.__name__ != "NPUPlatform"
    name, ok, detail = sconf.check_platform_class()
    assert ok is False
    assert f"but sglang resolved {current.__module__}.{current.__qualname__}" in detail
    assert "SGLANG_PLATFORM or SGLANG_PLUGINS may exclude npu_platform" in detail


def test_adapter_on_the_installed_saver_is_reported(saver, monkeypatch: pytest.MonkeyPatch) -> None:
    """NPU_PLATFORM_TORCH_MEMORY_SAVER=installed: sglang's adapter keeps whatever it
    imported; the check says it is not ours instead of passing."""
    import sglang.srt.utils.torch_memory_saver_adapter as adapter_module

    monkeypatch.setenv("NPU_PLATFORM_TORCH_MEMORY_SAVER", "installed")
    monkeypatch.setattr(adapter_module, "_memory_saver", object(), raising=False)
    monkeypatch.setattr(adapter_module, "import_error", None, raising=False)
    name, ok, detail = sconf.check_adapter_backed()
    assert ok is False
    assert detail.startswith("adapter uses Status(") and "adapter_backed_by_npu_platform=False" in (
        detail
    )


def test_a_bad_memory_saver_choice_is_reported_not_raised(
    saver, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sglang.srt.utils.torch_memory_saver_adapter as adapter_module

    monkeypatch.setenv("NPU_PLATFORM_TORCH_MEMORY_SAVER", "cuda")
    monkeypatch.setattr(adapter_module, "_memory_saver", object(), raising=False)
    name, ok, detail = sconf.check_adapter_backed()
    assert ok is False
    assert (
        detail.startswith("raised npu_platform.errors.ConfigError: ")
        and "NPU_PLATFORM_TORCH_MEMORY_SAVER" in detail
    )


def test_round_trip_through_a_disabled_adapter_fails_saying_what_it_saw(saver) -> None:
    import sglang.srt.utils.torch_memory_saver_adapter as adapter_module

    memory_saver.install()
    noop = adapter_module.TorchMemorySaverAdapter.create(enable=False)
    assert memory_saver.adapter_backed_by_manager(noop) is False
    with pytest.raises(AssertionError, match=r"round trip failed \(paused=0, intact=True\)"):
        sconf._round_trip(noop)


def test_server_arg_check_failures_are_reported(saver, monkeypatch: pytest.MonkeyPatch) -> None:
    # sglang's base platform declares no NPU defaults: the device is not defaulted to npu.
    monkeypatch.setattr(sconf, "PLATFORM_CLASS", "sglang.srt.platforms.interface.SRTPlatform")
    name, ok, detail = sconf.check_server_arg_defaults()
    assert ok is False and detail.startswith("device not defaulted to 'npu'")
    monkeypatch.setattr(sconf, "PLATFORM_CLASS", "builtins.dict")
    name, ok, detail = sconf.check_server_arg_defaults()
    assert ok is False
    assert (
        detail
        == "raised AttributeError: 'dict' object has no attribute 'apply_server_args_defaults'"
    )


# --------------------------------------------------------------------------- server args


def test_installed_saver_choice_is_left_unchecked(saver, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NPU_PLATFORM_TORCH_MEMORY_SAVER", "installed")
    memory_saver.uninstall()
    check_memory_saver({})
    assert not memory_saver.installed()  # the user's package: nothing redirected
    monkeypatch.delenv("NPU_PLATFORM_TORCH_MEMORY_SAVER")
    check_memory_saver({})
    assert memory_saver.installed()
    with pytest.raises(UnsupportedSetting, match="preload hook mode cannot work"):
        check_memory_saver({"LD_PRELOAD": "/x/torch_memory_saver_hook_mode_preload.abi3.so"})


def test_another_device_skips_the_npu_defaults(caplog: pytest.LogCaptureFixture) -> None:
    cfg = types.SimpleNamespace(device="cpu", dtype="float32", enable_memory_saver=True)
    with caplog.at_level(logging.WARNING, logger="npu_platform.sglang"):
        apply_defaults(cfg, environ={"LD_PRELOAD": "torch_memory_saver_hook_mode_preload.so"})
    assert cfg.device == "cpu"  # float32 and the preload were not refused either
    assert "--device is 'cpu'; its NPU defaults and checks are skipped" in caplog.text


# --------------------------------------------------------------------------- platform


def test_platform_starts_without_sglangs_plugin_framework(
    saver, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A trimmed sglang without ``sglang.srt.plugins``: the platform comes up and says which
    hooks it could not register."""
    from npu_platform.sglang.platform import NPUPlatform

    monkeypatch.setitem(sys.modules, "sglang.srt.plugins.hook_registry", None)
    monkeypatch.setattr(memory_saver, "_hooks_registered", False)
    monkeypatch.setattr(memory_requests, "_registered", False)
    monkeypatch.setattr(capabilities, "_fallbacks_registered", False)
    with caplog.at_level(logging.WARNING, logger=capabilities.logger.name):
        platform = NPUPlatform()
    warnings = [r.getMessage() for r in caplog.records if "cannot register" in r.getMessage()]
    assert len(warnings) == 2, warnings
    assert all("sglang.srt.plugins.hook_registry" in w for w in warnings)
    assert platform.triton is False and platform.capabilities.supports_triton is False
    assert memory_saver._hooks_registered is False


def test_redirect_lookups_and_the_cuda_graph_hook_when_not_ours(
    saver, monkeypatch: pytest.MonkeyPatch
) -> None:
    memory_saver.uninstall()
    assert memory_saver.find_spec(memory_saver.TMS_MODULE) is None  # nothing installed
    memory_saver.install()
    spec = memory_saver.find_spec(memory_saver.TMS_MODULE)
    assert spec is not None and spec.origin == (
        "redirected to npu_platform.torch_memory_saver by npu_platform"
    )
    assert memory_saver.find_spec("numpy") is None

    import sglang.srt.utils.torch_memory_saver_adapter as adapter_module

    # Another saver behind sglang's adapter: sglang's own cuda_graph runs, arguments as given.
    monkeypatch.setattr(adapter_module, "_memory_saver", object(), raising=False)
    calls = []

    def sglangs_cuda_graph(self, *args, **kwargs):
        calls.append((self, args, kwargs))
        return "sglang's"

    result = memory_saver.adapter_cuda_graph_hook(sglangs_cuda_graph, "adapter", "g", pool=3)
    assert result == "sglang's" and calls == [("adapter", ("g",), {"pool": 3})]
    # Before sglang's adapter module is imported there is nothing to patch.
    monkeypatch.delitem(sys.modules, memory_saver.ADAPTER_MODULE)
    assert memory_saver.patch_adapter() is False
