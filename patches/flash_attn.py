"""``flash_attn`` on the NPU: what ``import flash_attn`` gives when the start-up patches act.

Also answers ``flash_attn.flash_attn_interface``; ``flash_attn.bert_padding`` is
:mod:`npu_platform.patches.bert_padding`. Every function runs
:func:`npu_platform.ops.fusion_attention`, which calls torch_npu's ``npu_fusion_attention``
on an Ascend NPU and its contract-checked CPU reference on the emulated NPU.

Follows flash_attn 2.7's signatures. Supported: causal (bottom-right aligned, as flash_attn
>= 2.1) and non-causal attention, sliding windows (``window_size``), grouped-query and
multi-query attention (the KV head count divides the query head count), ``softmax_scale``
(default ``1/sqrt(head_dim)``), the packed variants. ``max_seqlen_q``/``max_seqlen_k`` are
accepted and not needed; ``deterministic`` is accepted and ignored (inference). Refused with
``NotImplementedError``: ``dropout_p > 0``, ``softcap``, ``alibi_slopes``,
``return_attn_probs=True`` (the op layer does not return the log-sum-exp) and paged KV
(``block_table``). Not provided: ``flash_attn_with_kvcache`` and the modules under
``flash_attn.layers`` / ``flash_attn.modules`` / ``flash_attn.ops`` (importing them fails).
Tensors: float16 or bfloat16 on an NPU (the emulation also takes float32).

Under ``torch.compile`` each call runs eagerly, as a graph break (``torch.compiler.disable``):
the op layer binds and checks the arguments in Python, which dynamo cannot trace with
symbolic shapes; the rest of a compiled model is captured around it.
"""

from __future__ import annotations

from typing import Any

import torch

from npu_platform import ops

__version__ = "2.7.4"
"""The flash_attn API level these functions follow."""

__all__ = [
    "flash_attn_func",
    "flash_attn_kvpacked_func",
    "flash_attn_qkvpacked_func",
    "flash_attn_varlen_func",
    "flash_attn_varlen_kvpacked_func",
    "flash_attn_varlen_qkvpacked_func",
]


def _refuse(
    dropout_p: float,
    softcap: float,
    alibi_slopes: Any,
    return_attn_probs: bool,
    block_table: Any = None,
) -> None:
    unsupported = []
    if dropout_p:
        unsupported.append(f"dropout_p={dropout_p} (only 0.0)")
    if softcap:
        unsupported.append(f"softcap={softcap} (only 0.0)")
    if alibi_slopes is not None:
        unsupported.append("alibi_slopes")
    if return_attn_probs:
        unsupported.append("return_attn_probs=True")
    if block_table is not None:
        unsupported.append("block_table (paged KV)")
    if unsupported:
        raise NotImplementedError(
            "npu_platform's flash_attn (npu_fusion_attention) does not support "
            + ", ".join(unsupported)
        )


def _scale(q: torch.Tensor, softmax_scale: float | None) -> float:
    return float(q.shape[-1] ** -0.5 if softmax_scale is None else softmax_scale)


def _window(window_size: Any) -> tuple[int, int] | None:
    if window_size is None:
        return None
    left, right = (int(w) for w in window_size)
    return None if (left, right) == (-1, -1) else (left, right)


def _check(name: str, t: torch.Tensor, dims: int, layout: str) -> None:
    if t.dim() != dims:
        raise ValueError(
            f"flash_attn: {name} must be {dims}-D {layout}, got shape {tuple(t.shape)}"
        )


@torch.compiler.disable
def flash_attn_func(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    dropout_p: float = 0.0,
    softmax_scale: float | None = None,
    causal: bool = False,
    window_size: tuple[int, int] = (-1, -1),
    softcap: float = 0.0,
    alibi_slopes: Any = None,
    deterministic: bool = False,
    return_attn_probs: bool = False,
) -> torch.Tensor:
    """q: (batch, seqlen_q, nheads, d); k, v: (batch, seqlen_k, nheads_k, d)."""
    _refuse(dropout_p, softcap, alibi_slopes, return_attn_probs)
    for name, t in (("q", q), ("k", k), ("v", v)):
        _check(name, t, 4, "(batch, seqlen, nheads, headdim)")
    return ops.fusion_attention(
        q.contiguous(),
        k.contiguous(),
        v.contiguous(),
        num_heads=q.shape[2],
        scale=_scale(q, softmax_scale),
        layout="BSND",
        causal=causal,
        window=_window(window_size),
    )


@torch.compiler.disable
def flash_attn_varlen_func(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    cu_seqlens_q: torch.Tensor,
    cu_seqlens_k: torch.Tensor,
    max_seqlen_q: int,
    max_seqlen_k: int,
    dropout_p: float = 0.0,
    softmax_scale: float | None = None,
    causal: bool = False,
    window_size: tuple[int, int] = (-1, -1),
    softcap: float = 0.0,
    alibi_slopes: Any = None,
    deterministic: bool = False,
    return_attn_probs: bool = False,
    block_table: Any = None,
) -> torch.Tensor:
    """q: (total_q, nheads, d); k, v: (total_k, nheads_k, d); cu_seqlens: (batch + 1,) int32."""
    _refuse(dropout_p, softcap, alibi_slopes, return_attn_probs, block_table)
    for name, t in (("q", q), ("k", k), ("v", v)):
        _check(name, t, 3, "(total_tokens, nheads, headdim)")
    return ops.fusion_attention(
        q.contiguous(),
        k.contiguous(),
        v.contiguous(),
        num_heads=q.shape[1],
        scale=_scale(q, softmax_scale),
        layout="TND",
        cu_seqlens_q=cu_seqlens_q,
        cu_seqlens_kv=cu_seqlens_k,
        causal=causal,
        window=_window(window_size),
    )


def flash_attn_qkvpacked_func(
    qkv: torch.Tensor, dropout_p: float = 0.0, softmax_scale: float | None = None, **kwargs: Any
) -> torch.Tensor:
    """qkv: (batch, seqlen, 3, nheads, d)."""
    _check("qkv", qkv, 5, "(batch, seqlen, 3, nheads, headdim)")
    q, k, v = qkv.unbind(dim=2)
    return flash_attn_func(q, k, v, dropout_p, softmax_scale, **kwargs)


def flash_attn_kvpacked_func(
    q: torch.Tensor,
    kv: torch.Tensor,
    dropout_p: float = 0.0,
    softmax_scale: float | None = None,
    **kwargs: Any,
) -> torch.Tensor:
    """q: (batch, seqlen_q, nheads, d); kv: (batch, seqlen_k, 2, nheads_k, d)."""
    _check("kv", kv, 5, "(batch, seqlen, 2, nheads_k, headdim)")
    k, v = kv.unbind(dim=2)
    return flash_attn_func(q, k, v, dropout_p, softmax_scale, **kwargs)


def flash_attn_varlen_qkvpacked_func(
    qkv: torch.Tensor,
    cu_seqlens: torch.Tensor,
    max_seqlen: int,
    dropout_p: float = 0.0,
    softmax_scale: float | None = None,
    **kwargs: Any,
) -> torch.Tensor:
    """qkv: (total, 3, nheads, d)."""
    _check("qkv", qkv, 4, "(total_tokens, 3, nheads, headdim)")
    q, k, v = qkv.unbind(dim=1)
    return flash_attn_varlen_func(
        q, k, v, cu_seqlens, cu_seqlens, max_seqlen, max_seqlen, dropout_p, softmax_scale, **kwargs
    )


def flash_attn_varlen_kvpacked_func(
    q: torch.Tensor,
    kv: torch.Tensor,
    cu_seqlens_q: torch.Tensor,
    cu_seqlens_k: torch.Tensor,
    max_seqlen_q: int,
    max_seqlen_k: int,
    dropout_p: float = 0.0,
    softmax_scale: float | None = None,
    **kwargs: Any,
) -> torch.Tensor:
    """q: (total_q, nheads, d); kv: (total_k, 2, nheads_k, d)."""
    _check("kv", kv, 4, "(total_tokens, 2, nheads_k, headdim)")
    k, v = kv.unbind(dim=1)
    return flash_attn_varlen_func(
        q,
        k,
        v,
        cu_seqlens_q,
        cu_seqlens_k,
        max_seqlen_q,
        max_seqlen_k,
        dropout_p,
        softmax_scale,
        **kwargs,
    )
