"""``torch_npu.profiler`` of the emulated torch_npu: torch's profiler, with NPU activity.

torch_npu's profiler drives CANN's msprof and exports its own trace format. On the emulated
NPU every kernel runs on the host, so the host (CPU) activity of torch's own profiler records
them all: :class:`profile` is ``torch.profiler.profile`` that accepts torch_npu's arguments
(``ProfilerActivity.NPU``, ``experimental_config``) and records NPU activity as CPU activity.
sglang's NPU path patches ``torch.profiler.profile`` and ``ProfilerActivity.CUDA`` with these
at import (``sglang/srt/utils/profile_utils.py``), so they must work as torch's do.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable
from typing import Any

import torch.profiler as _torch_profiler

__all__ = [
    "AiCMetrics",
    "ExportType",
    "HostSystem",
    "ProfilerAction",
    "ProfilerActivity",
    "ProfilerLevel",
    "_ExperimentalConfig",
    "profile",
    "schedule",
    "supported_activities",
    "tensorboard_trace_handler",
]

ProfilerAction = _torch_profiler.ProfilerAction
schedule = _torch_profiler.schedule
_TorchActivity = _torch_profiler.ProfilerActivity
_torch_profile = _torch_profiler.profile


class ProfilerActivity(enum.Enum):
    """torch_npu's activities (``torch_npu._C._profiler.ProfilerActivity``)."""

    CPU = "CPU"
    NPU = "NPU"


def supported_activities() -> set[ProfilerActivity]:
    return {ProfilerActivity.CPU, ProfilerActivity.NPU}


class ProfilerLevel:
    Level0 = "Level0"
    Level1 = "Level1"
    Level2 = "Level2"
    Level_none = "Level_none"


class AiCMetrics:
    PipeUtilization = "ACL_AICORE_PIPE_UTILIZATION"
    ArithmeticUtilization = "ACL_AICORE_ARITHMETIC_UTILIZATION"
    Memory = "ACL_AICORE_MEMORY_BANDWIDTH"
    MemoryL0 = "ACL_AICORE_L0B_AND_WIDTH"
    MemoryUB = "ACL_AICORE_MEMORY_UB"
    ResourceConflictRatio = "ACL_AICORE_RESOURCE_CONFLICT_RATIO"
    L2Cache = "ACL_AICORE_L2_CACHE"
    MemoryAccess = "ACL_AICORE_MEMORY_ACCESS"
    AiCoreNone = "ACL_AICORE_NONE"


class ExportType:
    Db = "db"
    Text = "text"


class HostSystem:
    CPU = "cpu"
    MEM = "mem"
    DISK = "disk"
    NETWORK = "network"
    OSRT = "osrt"
    NUMA = "numa"


class _ExperimentalConfig:
    """torch_npu's msprof options; kept for inspection, no effect on the host profiler."""

    def __init__(
        self,
        profiler_level: str = ProfilerLevel.Level0,
        aic_metrics: str = AiCMetrics.PipeUtilization,
        l2_cache: bool = False,
        msprof_tx: bool = False,
        mstx: bool = False,
        data_simplification: bool = True,
        record_op_args: bool = False,
        op_attr: bool = False,
        gc_detect_threshold: float | None = None,
        export_type: str | list[str] = ExportType.Text,
        host_sys: list[str] | None = None,
        mstx_domain_include: list[str] | None = None,
        mstx_domain_exclude: list[str] | None = None,
        sys_io: bool = False,
        sys_interconnection: bool = False,
    ) -> None:
        self.options = dict(locals())
        del self.options["self"]


def _host_activities(activities: Iterable[Any] | None) -> list[Any] | None:
    """torch's activities for torch_npu's (or torch's own): NPU work is host work here."""
    if activities is None:
        return None
    result: list[Any] = []
    for activity in activities:
        if activity in (ProfilerActivity.CPU, ProfilerActivity.NPU, _TorchActivity.CPU):
            mapped = _TorchActivity.CPU
        else:
            mapped = activity
        if mapped not in result:
            result.append(mapped)
    return result


class profile(_torch_profile):  # noqa: N801 - torch_npu's name
    """``torch_npu.profiler.profile``: torch's profiler over the emulated NPU's host work."""

    def __init__(
        self,
        *,
        activities: Iterable[Any] | None = None,
        schedule: Callable[[int], Any] | None = None,
        on_trace_ready: Callable[..., Any] | None = None,
        record_shapes: bool = False,
        profile_memory: bool = False,
        with_stack: bool = False,
        with_flops: bool = False,
        with_modules: bool = False,
        experimental_config: Any = None,
        execution_trace_observer: Any = None,
        custom_trace_id_callback: Callable[[], str] | None = None,
        use_cuda: bool | None = None,
    ) -> None:
        self.npu_experimental_config = experimental_config
        super().__init__(
            activities=_host_activities(activities),
            schedule=schedule,
            on_trace_ready=on_trace_ready,
            record_shapes=record_shapes,
            profile_memory=profile_memory,
            with_stack=with_stack,
            with_flops=with_flops,
            with_modules=with_modules,
            execution_trace_observer=execution_trace_observer,
            custom_trace_id_callback=custom_trace_id_callback,
            use_cuda=use_cuda,
        )


def tensorboard_trace_handler(
    dir_name: str | None = None,
    worker_name: str | None = None,
    analyse_flag: bool = True,
    async_mode: bool = False,
) -> Callable[..., None]:
    """Writes each trace as a Chrome trace under ``dir_name`` (torch's handler)."""
    return _torch_profiler.tensorboard_trace_handler(dir_name or ".", worker_name)
