"""PyTorch replacements for the Triton kernels vLLM core launches on our path.

vLLM computes each token's KV-cache slot with a Triton kernel
(``vllm.v1.worker.block_table.ComputeSlotMappingKernel.kernel``). The NPU runs no Triton
here, so :func:`register` swaps in :func:`compute_slot_mapping`, written with tensor ops
that run on whatever device the tensors live on, through vLLM's
``vllm.triton_utils.dispatcher.register_kernels`` (the mechanism vLLM provides for
platforms without Triton).

Kernels for speculative decoding and Mamba state copies are not replaced: those features
are not supported on the NPU platform yet.
"""

from __future__ import annotations

import threading

import torch

_lock = threading.Lock()
_registered = False

SLOT_MAPPING_KERNEL = "vllm.v1.worker.block_table.ComputeSlotMappingKernel.kernel"


def compute_slot_mapping(
    num_tokens: int,
    max_num_tokens: int,
    query_start_loc_ptr: torch.Tensor,
    positions_ptr: torch.Tensor,
    block_table_ptr: torch.Tensor,
    block_table_stride: int,
    slot_mapping_ptr: torch.Tensor,
    KV_CACHE_BLOCK_SIZE: int,  # noqa: N803 - the Triton kernel's argument names
    TOTAL_CP_WORLD_SIZE: int,  # noqa: N803
    TOTAL_CP_RANK: int,  # noqa: N803
    CP_KV_CACHE_INTERLEAVE_SIZE: int,  # noqa: N803
    PAD_ID: int,  # noqa: N803
    BLOCK_SIZE: int,  # noqa: N803
) -> None:
    """Same contract as the Triton kernel: fill ``slot_mapping[:max_num_tokens]``.

    Token ``t`` of request ``r`` at position ``p`` goes to slot
    ``block_table[r, p // bs] * bs + p % bs`` (with context-parallel interleaving when
    ``TOTAL_CP_WORLD_SIZE > 1``; tokens another CP rank stores get ``PAD_ID``); entries past
    ``num_tokens`` are ``PAD_ID``.
    """
    device = slot_mapping_ptr.device
    num_tokens = int(num_tokens)
    out = slot_mapping_ptr[:num_tokens]
    if num_tokens:
        qsl = query_start_loc_ptr.to(torch.int64)
        token = torch.arange(num_tokens, device=device, dtype=torch.int64)
        req = torch.searchsorted(qsl[1:], token, right=True)
        pos = positions_ptr[:num_tokens].to(torch.int64)
        virtual_block = KV_CACHE_BLOCK_SIZE * TOTAL_CP_WORLD_SIZE
        block_index = pos // virtual_block
        offset = pos - block_index * virtual_block
        interleave = CP_KV_CACHE_INTERLEAVE_SIZE
        is_local = (offset // interleave) % TOTAL_CP_WORLD_SIZE == TOTAL_CP_RANK
        local_offset = (offset // (TOTAL_CP_WORLD_SIZE * interleave)) * interleave + (
            offset % interleave
        )
        flat = block_table_ptr.reshape(-1)
        entry = torch.where(is_local, req * int(block_table_stride) + block_index, 0)
        blocks = flat.index_select(0, entry).to(torch.int64)
        slots = blocks * KV_CACHE_BLOCK_SIZE + local_offset
        out.copy_(torch.where(is_local, slots, torch.full_like(slots, PAD_ID)))
    if max_num_tokens > num_tokens:
        slot_mapping_ptr[num_tokens:max_num_tokens].fill_(PAD_ID)


def register() -> None:
    """Install the replacements (once per process)."""
    global _registered
    if _registered:
        return
    with _lock:
        if _registered:
            return
        from vllm.triton_utils.dispatcher import register_kernels

        register_kernels({SLOT_MAPPING_KERNEL: compute_slot_mapping})
        _registered = True
