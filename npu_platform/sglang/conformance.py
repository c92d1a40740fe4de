"""Conformance checks of the sglang integration, as plain functions.

Each check returns ``(name, passed, detail)``. A check that does not apply on this machine
(for example "the adapter is backed by our manager" where there is no NPU, real or
emulated) passes with a detail starting ``"skipped:"``. :func:`run_all` runs them all in
order; the ``npu-platform conformance`` command prints them.

Checks that need sglang import it (a few seconds); none of them starts a server, and the
only device memory touched is a 2 MiB round trip on the NPU (real or emulated).
"""

from __future__ import annotations

import importlib.metadata
import traceback
from collections.abc import Callable

from npu_platform.detect import Target, detect

Result = tuple[str, bool, str]

PLATFORM_GROUP = "sglang.srt.platforms"
PLUGINS_GROUP = "sglang.srt.plugins"
EXPECTED_ENTRY_POINTS = {
    PLATFORM_GROUP: "npu_platform.entry_points.sglang:platform_plugin",
    PLUGINS_GROUP: "npu_platform.entry_points.sglang:register",
}
PLATFORM_CLASS = "npu_platform.sglang.platform.NPUPlatform"


def _failure(name: str, exc: BaseException) -> Result:
    last = traceback.format_exception_only(type(exc), exc)[-1].strip()
    return (name, False, f"raised {last}")


def check_entry_points() -> Result:
    """Both sglang entry points are registered and point at our functions."""
    name = "sglang entry points registered"
    found: list[str] = []
    missing: list[str] = []
    for group, value in EXPECTED_ENTRY_POINTS.items():
        matches = [ep for ep in importlib.metadata.entry_points(group=group) if ep.value == value]
        if matches:
            found.append(f"{group}: {matches[0].name} -> {value}")
        else:
            missing.append(f"{group} -> {value}")
    if missing:
        return (
            name,
            False,
            "missing " + "; ".join(missing) + " (reinstall npu-platform: pip install -e .)",
        )
    return (name, True, "; ".join(found))


def check_platform_class() -> Result:
    """Our platform class imports and keeps sglang's in-tree NPU identity; on a real NPU,
    sglang's own resolution picks it."""
    name = "sglang platform class resolves"
    try:
        import pkgutil

        from sglang.srt.platforms.interface import SRTPlatform
        from sglang.srt.platforms.npu import NPUSRTPlatform

        cls = pkgutil.resolve_name(PLATFORM_CLASS)
        if not (isinstance(cls, type) and issubclass(cls, NPUSRTPlatform)):
            return (name, False, f"{PLATFORM_CLASS} is not a subclass of NPUSRTPlatform")
        assert issubclass(cls, SRTPlatform)
        detail = f"{PLATFORM_CLASS} subclasses sglang's NPUSRTPlatform"
        if detect().target is Target.REAL:
            from sglang.srt import platforms

            current = type(platforms.current_platform)
            if current is not cls:
                return (
                    name,
                    False,
                    f"{detail}, but sglang resolved {current.__module__}.{current.__qualname__} "
                    "(SGLANG_PLATFORM or SGLANG_PLUGINS may exclude npu_platform)",
                )
            detail += "; sglang's current_platform is it"
        return (name, True, detail)
    except Exception as exc:
        return _failure(name, exc)


def check_adapter_backed() -> Result:
    """sglang's ``TorchMemorySaverAdapter.create(enable=True)`` forwards to our manager."""
    name = "sglang memory-saver adapter backed by npu_platform"
    decision = detect()
    if not decision.is_npu:
        return (name, True, f"skipped: no NPU, real or emulated ({decision.reason})")
    try:
        from npu_platform.sglang import memory_saver

        memory_saver.install()
        import sglang.srt.utils.torch_memory_saver_adapter as adapter_module

        adapter = adapter_module.TorchMemorySaverAdapter.create(enable=True)
        if not memory_saver.adapter_backed_by_manager(adapter):
            return (name, False, f"adapter uses {memory_saver.status()}")
        detail = "TorchMemorySaverAdapter -> npu_platform.torch_memory_saver"
        detail += "; " + _round_trip(adapter)
        return (name, True, detail)
    except Exception as exc:
        return _failure(name, exc)


def _round_trip(adapter: object) -> str:
    """2 MiB of device memory tagged through sglang's adapter, paused and resumed."""
    import torch

    from npu_platform import device
    from npu_platform.torch_memory_saver import torch_memory_saver as saver

    tag = "npu_platform_conformance"
    with adapter.region(tag, enable_cpu_backup=True):  # type: ignore[attr-defined]
        tensor = torch.empty(2 << 20, dtype=torch.uint8, device=device.torch_device())
    tensor.fill_(7)
    ptr = tensor.data_ptr()
    adapter.pause(tag)  # type: ignore[attr-defined]
    paused = saver.manager.stats().get(tag, {}).get("paused_bytes", 0)
    adapter.resume(tag)  # type: ignore[attr-defined]
    intact = bool((tensor == 7).all()) and tensor.data_ptr() == ptr
    del tensor
    if not (paused and intact):
        raise AssertionError(f"pause/resume round trip failed (paused={paused}, intact={intact})")
    return (
        f"2 MiB pause/resume round trip with CPU backup on the {saver.manager.driver.name} "
        "driver kept data and address"
    )


def check_server_arg_defaults() -> Result:
    """Our ``apply_server_args_defaults`` runs through sglang's recorder and declares."""
    name = "sglang server-arg defaults apply"
    decision = detect()
    if not decision.is_npu:
        return (name, True, f"skipped: no NPU, real or emulated ({decision.reason})")
    try:
        import pkgutil

        from sglang.srt.arg_groups.overrides import record_foreign_defaults, resolving_view
        from sglang.srt.server_args import ServerArgs

        from npu_platform.sglang.server_args import UnsupportedSetting, check_memory_saver

        platform = pkgutil.resolve_name(PLATFORM_CLASS)()
        args = ServerArgs(model_path="dummy", enable_memory_saver=True)
        record_foreign_defaults(args, "platform:npu", platform.apply_server_args_defaults)
        declared = dict(
            item
            for _source, fields in getattr(args, "_resolved_overrides", [])
            for item in fields.items()
        )
        if resolving_view(args).device != "npu":
            return (name, False, f"device not defaulted to 'npu' (declared: {declared})")
        try:
            check_memory_saver({"LD_PRELOAD": "/x/torch_memory_saver_hook_mode_preload.abi3.so"})
        except UnsupportedSetting:
            pass
        else:
            return (name, False, "--enable-memory-saver with the preload hook mode was accepted")
        return (
            name,
            True,
            f"declared {declared}; --enable-memory-saver accepted; preload hook mode refused",
        )
    except Exception as exc:
        return _failure(name, exc)


CHECKS: tuple[Callable[[], Result], ...] = (
    check_entry_points,
    check_platform_class,
    check_adapter_backed,
    check_server_arg_defaults,
)


def run_all() -> list[Result]:
    return [check() for check in CHECKS]
