"""Tensor/pipeline parallelism on HCCL.

vLLM's base device communicator already speaks ``torch.distributed`` over the group's device
backend, which is HCCL (torch_npu registers it), so the platform uses it unchanged. This
module only builds vLLM's *stateless* process groups on torch_npu's ``ProcessGroupHCCL``.
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch.distributed import PrefixStore, ProcessGroup


def new_hccl_process_group(
    prefix_store: PrefixStore, group_rank: int, group_size: int, timeout: timedelta
) -> ProcessGroup:
    """A process group on HCCL outside ``torch.distributed``'s global state .

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
