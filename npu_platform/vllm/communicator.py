"""Device communicator for tensor/pipeline parallelism: HCCL on the NPU, gloo in emulation.

vLLM's base communicator already speaks ``torch.distributed`` over the group's device
backend, which is HCCL on an Ascend NPU (torch_npu registers it) and gloo on the emulated
NPU. This subclass only replaces the two collectives gloo lacks as tensor-in/tensor-out
calls (``all_gather_into_tensor``, ``reduce_scatter_tensor``) with their list forms when the
group runs on gloo.
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist
from vllm.distributed.device_communicators.base_device_communicator import (
    DeviceCommunicatorBase,
)

if TYPE_CHECKING:
    from torch.distributed import PrefixStore, ProcessGroup


class NPUCommunicator(DeviceCommunicatorBase):
    def __init__(
        self,
        cpu_group: ProcessGroup,
        device: torch.device | None = None,
        device_group: ProcessGroup | None = None,
        unique_name: str = "",
        **kwargs: Any,
    ) -> None:
        super().__init__(cpu_group, device, device_group, unique_name, **kwargs)
        group = device_group if device_group is not None else cpu_group
        try:
            backend = str(dist.get_backend(group))
        except Exception:  # stateless groups are unknown to torch.distributed
            backend = "gloo" if self.device.type == "cpu" else "hccl"
        self.backend = backend
        self.uses_gloo = backend == "gloo"

    def all_gather(self, input_: torch.Tensor, dim: int = -1) -> torch.Tensor:
        if not self.uses_gloo:
            return super().all_gather(input_, dim)
        if self.world_size == 1:
            return input_
        if dim < 0:
            dim += input_.dim()
        parts = [torch.empty_like(input_) for _ in range(self.world_size)]
        dist.all_gather(parts, input_.contiguous(), group=self.device_group)
        return torch.cat(parts, dim=dim)

    def reduce_scatter(self, input_: torch.Tensor, dim: int = -1) -> torch.Tensor:
        if not self.uses_gloo:
            return super().reduce_scatter(input_, dim)
        if self.world_size == 1:
            return input_
        if dim < 0:
            dim += input_.dim()
        summed = input_.contiguous().clone()
        dist.all_reduce(summed, group=self.device_group)
        return summed.chunk(self.world_size, dim=dim)[self.rank_in_group].contiguous()


def new_hccl_process_group(
    prefix_store: PrefixStore, group_rank: int, group_size: int, timeout: timedelta
) -> ProcessGroup:
    """A process group on HCCL outside ``torch.distributed``'s global state (real NPU only).

    Mirrors how vLLM builds its stateless NCCL groups, with torch_npu's ``ProcessGroupHCCL``.
    """
    from torch.distributed import ProcessGroup as TorchProcessGroup

    from npu_platform import device as npu_device

    ProcessGroupHCCL = npu_device.hccl_process_group_class()  # noqa: N806 - a class
    pg = TorchProcessGroup(prefix_store, group_rank, group_size)
    options = ProcessGroupHCCL.Options()
    options._timeout = timeout
    backend = ProcessGroupHCCL(prefix_store, group_rank, group_size, options)
    backend._set_sequence_number_for_group()
    backend_type = TorchProcessGroup.BackendType.CUSTOM
    pg._set_default_backend(backend_type)
    pg._register_backend(npu_device.torch_device(), backend_type, backend)
    return pg
