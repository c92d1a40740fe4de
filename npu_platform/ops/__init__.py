"""The op layer: the only way the rest of npu_platform runs a torch_npu kernel.

Every public function builds the arguments of one torch_npu op and hands them to
:func:`_call`, which binds them against torch_npu's own schema of that op
(:mod:`npu_platform.spec`: a misspelled keyword, a missing argument or a wrong kind raises
:class:`ContractError` before anything runs), checks the kernel's documented constraints
(:mod:`npu_platform.spec.rules`: a dtype, layout, head size or block size the kernel refuses
raises :class:`RuleViolation` citing torch_npu's documentation) and then calls
``torch_npu.<op>``. On the emulated NPU ``torch_npu`` is the emulated package, whose kernels
check the same rules and also refuse what the hardware kernels refuse; the code here is the
same. :func:`op_counts` counts calls per op. ``docs/kernel-precedents.md`` lists, for each
call, the hardware-proven framework that makes the same kind of call.

Public ops (shapes use T tokens, N query heads, N_kv KV heads, D head size):

``rms_norm(x, weight, eps)``
    ``npu_rms_norm``; returns y with x's shape.
``add_rms_norm(x, residual, weight, eps) -> (out, new_residual)``
    ``npu_add_rms_norm`` (returns y, rstd, x1 + x2); new_residual = x + residual.
``rotary_embedding(query, key, cos, sin, *, is_neox, head_size=None) -> (query, key)``
    ``npu_rotary_mul`` with ``rotary_mode='half'`` (GPT-NeoX) or ``'interleave'`` (GPT-J).
``silu_and_mul(x)``
    ``npu_swiglu(x, dim=-1)``: silu of the first half times the second half.
``write_kv_cache(key, value, key_cache, value_cache, slot_mapping)``
    ``npu_scatter_pa_kv_cache(..., cache_mode='Norm')``, in place.
``paged_attention(query, key_cache, value_cache, *, block_table, query_start_loc, seq_lens_kv,
num_heads, num_kv_heads, scale, causal=True, sliding_window=None)``
    ``npu_fused_infer_attention_score`` with ``input_layout='TND'`` and paged KV.
``fusion_attention(query, key, value, *, num_heads, scale, layout='BSND', cu_seqlens_q=None,
cu_seqlens_kv=None, causal=False, window=None)``
    ``npu_fusion_attention`` (no paging), a flash_attn replacement.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from npu_platform.errors import EnvironmentProblem
from npu_platform.spec import contract
from npu_platform.spec.contract import ContractError, RuleViolation, UnsupportedByReference

if TYPE_CHECKING:
    import torch

__all__ = [
    "ContractError",
    "RuleViolation",
    "UnsupportedByReference",
    "add_rms_norm",
    "backend",
    "compressed_causal_mask",
    "check_call",
    "fusion_attention",
    "op_counts",
    "paged_attention",
    "reset_op_counts",
    "rms_norm",
    "rotary_embedding",
    "silu_and_mul",
    "write_kv_cache",
]

INT_MAX = 2147483647
"""torch_npu's "no limit" for pre_tokens / next_tokens."""

# --------------------------------------------------------------------------- backend & counting

_counts: dict[str, int] = {}
_counts_lock = threading.Lock()


def op_counts() -> dict[str, int]:
    """Calls per torch_npu op name made through this module since the last reset."""
    with _counts_lock:
        return dict(_counts)


def reset_op_counts() -> None:
    with _counts_lock:
        _counts.clear()


def backend() -> Any:
    """The ``torch_npu`` module (raises EnvironmentProblem when detection finds no NPU)."""
    from npu_platform.detect import detect

    detection = detect()
    if not detection.is_npu:
        raise EnvironmentProblem(
            f"npu_platform.ops needs an Ascend NPU or the emulated NPU, but detection found "
            f"neither: {detection.reason}"
        )
    import torch_npu

    return torch_npu


def check_call(op: str, *args: Any, **kwargs: Any) -> str:
    """Bind a call of torch_npu ``op`` against its schema and check the kernel's documented
    rules (:mod:`npu_platform.spec.rules`); return the overload that fits.

    Raises :class:`ContractError` naming the op and the argument when no overload fits, and
    :class:`RuleViolation` (a ContractError citing the documentation) when the bound call
    breaks a documented constraint of the kernel.
    """
    from npu_platform.spec import rules
    from npu_platform.spec.schema import registry

    reg = registry()
    overloads = reg.overloads(op)
    if not overloads:
        raise ContractError(op, f"torch_npu has no op {op!r} in its schema ({reg.source})")
    first_error: ContractError | None = None
    for full in overloads:
        try:
            bound = contract.bind(reg.get(full), args, kwargs)
        except ContractError as exc:
            first_error = first_error or exc
            continue
        rules.check(full, bound)
        return full
    assert first_error is not None
    raise first_error


def _call(op: str, *args: Any, **kwargs: Any) -> Any:
    ns = backend()
    check_call(op, *args, **kwargs)
    with _counts_lock:
        _counts[op] = _counts.get(op, 0) + 1
    return getattr(ns, op)(*args, **kwargs)


# --------------------------------------------------------------------------- helpers

_masks: dict[str, torch.Tensor] = {}
_masks_lock = threading.Lock()


def compressed_causal_mask(device: Any) -> torch.Tensor:
    """The (2048, 2048) bool mask torch_npu's sparse modes 2/3/4 take (True = masked).

    ``torch.triu(ones, diagonal=1)``; one cached copy per device.
    """
    import torch

    key = str(device)
    mask = _masks.get(key)
    if mask is None:
        mask = torch.ones(2048, 2048, dtype=torch.bool).triu(diagonal=1).to(device)
        with _masks_lock:
            mask = _masks.setdefault(key, mask)
    return mask


def _int_list(name: str, values: Any) -> list[int]:
    """A Python list of ints from a list, tuple or (CPU preferred) integer tensor."""
    if hasattr(values, "tolist"):
        values = values.tolist()
    if not isinstance(values, Sequence):
        raise TypeError(f"{name} must be a sequence or 1-D tensor of ints, got {type(values)}")
    return [int(v) for v in values]


def _cumulative_ends(name: str, values: Any) -> list[int]:
    """``[0, e1, e2, ...]`` (vLLM's ``query_start_loc`` / flash_attn's ``cu_seqlens``) -> ends."""
    offsets = _int_list(name, values)
    if not offsets or offsets[0] != 0:
        raise ValueError(f"{name} must start with 0 (cumulative offsets), got {offsets[:4]}")
    return offsets[1:]


# --------------------------------------------------------------------------- norms


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """RMS norm over the last ``weight.dim()`` dimensions; same shape and dtype as x."""
    return _call("npu_rms_norm", x, weight, epsilon=float(eps))[0]


def add_rms_norm(
    x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor, eps: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """vLLM's fused add + RMS norm: ``s = x + residual``; returns ``(rms_norm(s), s)``."""
    y, _rstd, summed = _call("npu_add_rms_norm", x, residual, weight, epsilon=float(eps))
    return y, summed


# --------------------------------------------------------------------------- rotary


def _rope_view(mode: str, tokens: int) -> tuple[int, int]:
    """The leading dimensions that lay T tokens out as the hardware-proven users do.

    'half': BSND with B = 1, S = T and cos/sin 1S1D (sglang's ``apply_rotary_pos_emb_npu``);
    'interleave': SBND with S = T, B = 1 and cos/sin S11D (vllm-ascend's
    ``ComplexExpRotaryEmbedding``). Both are layouts torch_npu documents for the mode; the
    memory is the same (T, N, D) either way.
    """
    return (1, tokens) if mode == "half" else (tokens, 1)


def _rope_one(
    x: torch.Tensor,
    r1: torch.Tensor,
    r2: torch.Tensor,
    mode: str,
    head_size: int,
    rot: int,
) -> torch.Tensor:
    import torch

    shape = x.shape
    x4 = x.reshape(*_rope_view(mode, shape[0]), -1, head_size)
    if rot < head_size:
        y = _call("npu_rotary_mul", x4[..., :rot].contiguous(), r1, r2, rotary_mode=mode)
        y = torch.cat((y, x4[..., rot:]), dim=-1)
    else:
        y = _call("npu_rotary_mul", x4.contiguous(), r1, r2, rotary_mode=mode)
    return y.reshape(shape)


def rotary_embedding(
    query: torch.Tensor,
    key: torch.Tensor | None,
    cos: torch.Tensor,
    sin: torch.Tensor,
    *,
    is_neox: bool,
    head_size: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Rotary position embedding of query and key (new tensors, inputs untouched).

    query: (T, N, D) or (T, N * D) (then ``head_size`` is required); key likewise with its own
    head count, or None. cos, sin: (T, rotary_dim // 2), the per-token halves of vLLM's
    ``cos_sin_cache[positions]``. When ``rotary_dim < D`` only the first ``rotary_dim`` features
    of each head rotate (vLLM's partial rotary). ``is_neox`` selects rotate-half (GPT-NeoX,
    ``rotary_mode='half'``, cos laid out as ``[c, c]``) or pairwise rotation (GPT-J,
    ``'interleave'``, cos laid out as ``[c0, c0, c1, c1, ...]``).
    """
    import torch

    if head_size is None:
        if query.dim() != 3:
            raise ValueError("rotary_embedding: pass head_size when query is (T, N * D)")
        head_size = query.shape[-1]
    if cos.dim() != 2 or cos.shape != sin.shape or cos.shape[0] != query.shape[0]:
        raise ValueError(
            f"rotary_embedding: cos and sin must both be (T, rotary_dim // 2) with T = "
            f"{query.shape[0]}, got {tuple(cos.shape)} and {tuple(sin.shape)}"
        )
    rot = 2 * cos.shape[1]
    if rot > head_size:
        raise ValueError(f"rotary_embedding: rotary_dim {rot} exceeds head_size {head_size}")
    t = cos.shape[0]
    if is_neox:
        mode = "half"
        c, s = torch.cat((cos, cos), dim=-1), torch.cat((sin, sin), dim=-1)
    else:
        mode = "interleave"
        c, s = cos.repeat_interleave(2, dim=-1), sin.repeat_interleave(2, dim=-1)
    r1 = c.to(query.dtype).reshape(*_rope_view(mode, t), 1, rot)
    r2 = s.to(query.dtype).reshape(*_rope_view(mode, t), 1, rot)
    q_out = _rope_one(query, r1, r2, mode, head_size, rot)
    k_out = None if key is None else _rope_one(key, r1, r2, mode, head_size, rot)
    return q_out, k_out


# --------------------------------------------------------------------------- activation


def silu_and_mul(x: torch.Tensor) -> torch.Tensor:
    """vLLM's SiluAndMul: ``silu(x[..., :d]) * x[..., d:]`` with ``d = x.shape[-1] // 2``.

    ``npu_swiglu`` computes ``swish(A) * B`` with ``A, B = x.chunk(2, dim)``: the same
    convention (the gate is the first half), so no reordering is needed.
    """
    return _call("npu_swiglu", x, dim=-1)


# --------------------------------------------------------------------------- KV cache


def write_kv_cache(
    key: torch.Tensor,
    value: torch.Tensor,
    key_cache: torch.Tensor,
    value_cache: torch.Tensor,
    slot_mapping: torch.Tensor,
) -> None:
    """Store each token's key and value in its slot of the paged caches (in place).

    key, value: (T, N_kv, D); caches: (num_blocks, block_size, N_kv, D);
    slot_mapping: (T,) int32/int64 with ``slot = block_id * block_size + offset``. Every slot
    must be valid and distinct: slice off padded tokens (vLLM's slot -1) before calling.
    """
    _call(
        "npu_scatter_pa_kv_cache",
        key.contiguous(),
        value.contiguous(),
        key_cache,
        value_cache,
        slot_mapping,
        cache_mode="Norm",
    )


# --------------------------------------------------------------------------- attention


def _mask_args(causal: bool, left: int | None, right: int | None, device: Any) -> dict[str, Any]:
    """sparse_mode / atten_mask / pre & next tokens for causal and windowed attention."""
    if left is None and right is None:
        if causal:
            return {"sparse_mode": 3, "atten_mask": compressed_causal_mask(device)}
        return {"sparse_mode": 0}
    pre = INT_MAX if left is None or left < 0 else int(left)
    nxt = 0 if causal else (INT_MAX if right is None or right < 0 else int(right))
    return {
        "sparse_mode": 4,
        "atten_mask": compressed_causal_mask(device),
        "pre_tokens": pre,
        "next_tokens": nxt,
    }


def paged_attention(
    query: torch.Tensor,
    key_cache: torch.Tensor,
    value_cache: torch.Tensor,
    *,
    block_table: torch.Tensor,
    query_start_loc: Any,
    seq_lens_kv: Any,
    num_heads: int,
    num_kv_heads: int,
    scale: float,
    causal: bool = True,
    sliding_window: int | None = None,
) -> torch.Tensor:
    """Attention of a mixed batch (prefill, chunked prefill, decode) over paged KV caches.

    query: (T, N, D), all requests' query tokens back to back.
    key_cache, value_cache: (num_blocks, block_size, N_kv, D), contiguous; handed to the op
    as (num_blocks, block_size, N_kv * D), a layout FIA documents for paged attention.
    block_table: (num_reqs, max_blocks) block ids (int32; other int dtypes are converted).
    query_start_loc: cumulative query offsets ``[0, end_0, end_1, ...]`` (num_reqs + 1 ints;
    list or tensor; a CPU tensor avoids a device sync). FIA's ``actual_seq_lengths`` for TND
    is cumulative end offsets, so this passes ``query_start_loc[1:]``.
    seq_lens_kv: each request's KV length (context + new tokens), num_reqs ints; FIA's
    ``actual_seq_lengths_kv`` with paged KV is per request, not cumulative.
    causal: bottom-right aligned causal mask (query i of a request with q_len queries and
    kv_len keys sees keys ``j <= i + kv_len - q_len``): ``sparse_mode=3`` with the compressed
    2048x2048 mask. ``causal=False``: ``sparse_mode=0`` without mask (no masking).
    sliding_window: W as vLLM's Attention layer gets it (each query sees itself and the W - 1
    keys before it): ``sparse_mode=4`` (band), ``pre_tokens=W - 1, next_tokens=0``.
    Returns (T, N, D) in query's dtype (float16 or bfloat16: FIA takes no float32).
    """
    import torch

    if sliding_window is not None and not causal:
        raise ValueError("paged_attention: sliding_window needs causal=True")
    if key_cache.dim() != 4:
        raise ValueError(
            f"paged_attention: key_cache must be (num_blocks, block_size, N_kv, D), "
            f"got {tuple(key_cache.shape)}"
        )
    if not (key_cache.is_contiguous() and value_cache.is_contiguous()):
        raise ValueError(
            "paged_attention: key_cache and value_cache must be contiguous (they are viewed as "
            "(num_blocks, block_size, N_kv * D) without a copy)"
        )
    num_blocks, block_size = key_cache.shape[:2]
    k = key_cache.view(num_blocks, block_size, -1)
    v = value_cache.view(value_cache.shape[0], value_cache.shape[1], -1)
    if block_table.dtype != torch.int32:
        block_table = block_table.to(torch.int32)
    left = None if sliding_window is None else int(sliding_window) - 1
    mask_args = _mask_args(causal, left, None if left is None else 0, query.device)
    out, _lse = _call(
        "npu_fused_infer_attention_score",
        query.contiguous(),
        k,
        v,
        block_table=block_table,
        block_size=block_size,
        actual_seq_lengths=_cumulative_ends("query_start_loc", query_start_loc),
        actual_seq_lengths_kv=_int_list("seq_lens_kv", seq_lens_kv),
        num_heads=int(num_heads),
        num_key_value_heads=int(num_kv_heads),
        scale=float(scale),
        input_layout="TND",
        **mask_args,
    )
    return out


def fusion_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    *,
    num_heads: int,
    scale: float,
    layout: str = "BSND",
    cu_seqlens_q: Any = None,
    cu_seqlens_kv: Any = None,
    causal: bool = False,
    window: tuple[int, int] | None = None,
) -> torch.Tensor:
    """Non-paged attention on ``npu_fusion_attention``, shaped for flash_attn callers.

    layout 'BSND': query (B, Sq, N, D), key/value (B, Skv, N_kv, D).
    layout 'TND' (varlen): query (T, N, D), key/value (T_kv, N_kv, D) with ``cu_seqlens_q``
    and ``cu_seqlens_kv`` flash_attn-style ``[0, end_0, end_1, ...]`` (the op's
    ``actual_seq_qlen/kvlen`` are the cumulative ends, so ``cu_seqlens[1:]`` is passed).
    Also 'BNSD', 'BSH', 'SBH' as the op defines them. GQA when N_kv divides N.
    causal: bottom-right aligned like flash_attn >= 2.1 (``sparse_mode=3``).
    window: flash_attn's ``window_size=(left, right)``, -1 meaning unlimited; becomes the band
    mode (``sparse_mode=4``, ``pre_tockens=left``, ``next_tockens=right``, or 0 if causal).
    Returns the output in query's layout and dtype (value's head size).
    """
    extra: dict[str, Any] = {}
    if layout == "TND":
        if cu_seqlens_q is None or cu_seqlens_kv is None:
            raise ValueError("fusion_attention: layout 'TND' needs cu_seqlens_q and cu_seqlens_kv")
        extra["actual_seq_qlen"] = _cumulative_ends("cu_seqlens_q", cu_seqlens_q)
        extra["actual_seq_kvlen"] = _cumulative_ends("cu_seqlens_kv", cu_seqlens_kv)
    if window is not None and tuple(window) == (-1, -1):
        window = None
    left, right = (None, None) if window is None else window
    mask_args = _mask_args(causal, left, right, query.device)
    if "pre_tokens" in mask_args:
        mask_args["pre_tockens"] = mask_args.pop("pre_tokens")  # this op's own spelling
        mask_args["next_tockens"] = mask_args.pop("next_tokens")
    result = _call(
        "npu_fusion_attention",
        query,
        key,
        value,
        int(num_heads),
        layout,
        scale=float(scale),
        **mask_args,
        **extra,
    )
    return result[0]
