"""``flash_attn.bert_padding`` on the NPU: between padded batches and packed sequences.

Plain torch indexing (works on any device and with autograd), with flash_attn 2.7's
signatures and results:

* :func:`unpad_input` ``(hidden_states (B, S, ...), attention_mask (B, S), unused_mask=None)``
  returns ``(packed (T, ...), indices (T,), cu_seqlens (B + 1,) int32, max_seqlen_in_batch
  (int), seqused (B,) int32)``; tokens where ``attention_mask`` or ``unused_mask`` is set are
  kept, ``seqused`` counts the ``attention_mask`` ones. (flash_attn before 2.6 returned the
  first four only.)
* :func:`pad_input` ``(packed (T, ...), indices, batch, seqlen)`` returns ``(B, S, ...)``
  with zeros where nothing was packed.
* :func:`index_first_axis` ``(x, indices)`` = ``x[indices]`` along the first axis;
  :func:`index_put_first_axis` ``(values, indices, first_axis_dim)`` is its inverse.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["index_first_axis", "index_put_first_axis", "pad_input", "unpad_input"]


def index_first_axis(x: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """Rows ``indices`` of ``x`` (first axis)."""
    return torch.index_select(x, 0, indices)


def index_put_first_axis(
    values: torch.Tensor, indices: torch.Tensor, first_axis_dim: int
) -> torch.Tensor:
    """A ``(first_axis_dim, ...)`` tensor of zeros with ``values`` at rows ``indices``."""
    out = values.new_zeros((first_axis_dim, *values.shape[1:]))
    return out.index_copy(0, indices, values)


def unpad_input(
    hidden_states: torch.Tensor,
    attention_mask: torch.Tensor,
    unused_mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int, torch.Tensor]:
    """Pack the masked-in tokens of a padded batch; see the module docstring."""
    keep = attention_mask.bool()
    if unused_mask is not None:
        keep = keep | unused_mask.bool()
    seqlens = keep.sum(dim=-1, dtype=torch.int32)
    seqused = attention_mask.bool().sum(dim=-1, dtype=torch.int32)
    indices = torch.nonzero(keep.flatten(), as_tuple=False).flatten()
    max_seqlen = int(seqlens.max().item()) if seqlens.numel() else 0
    cu_seqlens = F.pad(torch.cumsum(seqlens, dim=0, dtype=torch.int32), (1, 0))
    flat = hidden_states.reshape(-1, *hidden_states.shape[2:])
    return index_first_axis(flat, indices), indices, cu_seqlens, max_seqlen, seqused


def pad_input(
    hidden_states: torch.Tensor, indices: torch.Tensor, batch: int, seqlen: int
) -> torch.Tensor:
    """Scatter packed tokens back into a zero-padded ``(batch, seqlen, ...)`` tensor."""
    out = index_put_first_axis(hidden_states, indices, batch * seqlen)
    return out.reshape(batch, seqlen, *hidden_states.shape[1:])
