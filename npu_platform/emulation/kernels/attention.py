"""CPU references of torch_npu's attention ops.

``npu_fused_infer_attention_score`` (FIA, inference) and ``npu_fusion_attention`` (FA,
training/varlen), both computed as plain softmax attention in float32 per request.

Facts from torch_npu's documentation that the references implement
------------------------------------------------------------------
Masks (both ops): a mask value of 1/True means "do not attend". ``sparse_mode`` 2, 3 and 4
take the *compressed* mask, ``torch.triu(torch.ones(2048, 2048), diagonal=1)`` as bool, int8
or uint8, of shape (2048, 2048), (1, 2048, 2048) or (1, 1, 2048, 2048); the kernel derives
each request's mask from it. With ``Sq`` query and ``Skv`` key positions per request and
``i``, ``j`` positions inside the request:

* 2 leftUpCausal: attend iff ``j <= i``;
* 3 rightDownCausal: attend iff ``j <= i + (Skv - Sq)`` (causal with the query at the end of
  the sequence: vLLM's causal attention for prefill, chunked prefill and decode); pre/next
  tokens are ignored;
* 4 band, origin at the bottom right: attend iff
  ``-pre_tokens <= j - (i + Skv - Sq) <= next_tokens`` (a causal sliding window of W tokens
  is ``pre_tokens = W - 1, next_tokens = 0``);
* 0 defaultMask without a mask: no masking (pre/next tokens ignored).

FIA with ``input_layout='TND'``: query (T, N, D); ``actual_seq_lengths`` is required and
*cumulative* (the end offset of each request's query tokens; its length is the batch size).
With paged KV (``block_table`` given) ``actual_seq_lengths_kv`` holds each request's own KV
length (not cumulative), key/value are caches laid out as (num_blocks, block_size, H_kv*D) or
(num_blocks, H_kv, block_size, D), and ``block_table`` is int32 (batch, max_blocks). Without
``block_table`` key/value are (T_kv, H_kv, D) and ``actual_seq_lengths_kv`` is cumulative.
Returns (attention_out (T, N, D), softmax_lse): lse is float32 (T, N, 1) when
``softmax_lse_flag`` else a float32 tensor of shape (1,) holding 0. Query dtype must be
float16 or bfloat16 (int8 is quantised and not emulated; float32 is not supported by FIA).

FA: layouts BSH, SBH, BSND, BNSD and TND; TND takes cumulative ``actual_seq_qlen`` /
``actual_seq_kvlen`` (trailing zeros mark batches left out). Without ``atten_mask`` the whole
matrix is computed whatever ``sparse_mode`` says (documented). Returns
(attention_out, softmax_max, softmax_sum, softmax_out, seed, offset, numels) with max/sum
float32 of shape (B, N, Sq, 8) — (T, N, 8) for TND — each value repeated 8 times, softmax_out
an empty tensor and seed = offset = numels = 0 (meta kernel shapes).

The documented constraints of both ops (dtypes, layouts, heads, lengths, block sizes, mask
shapes) are rules in :mod:`npu_platform.spec.rules`, checked before a reference runs; the
references check what they need to compute (block ids, the mask's content) and refuse what
they do not implement. Where the FIA documentation contradicts itself, see that module. One
reading is the reference's own: pre/next_tokens are applied to single-token requests too
(the docs call them "invalid when Q_S is 1"), so a sliding window also limits decodes here.

Rows that can attend to nothing produce zeros (FIA and FA fill such rows with 0 when the
"invalid row" correction is on).
"""

from __future__ import annotations

import torch

from npu_platform.emulation.kernels import CheckedMasks, reference
from npu_platform.spec.contract import (
    check,
    require_choice,
    require_unset,
    unsupported,
)

INT_MAX = 2147483647
_MASK_SIZE = 2048

_checked_masks = CheckedMasks()


def check_compressed_mask(op: str, mask: torch.Tensor, sparse_mode: int) -> None:
    """The compressed mask's content: exactly ``torch.triu(ones(2048, 2048), diagonal=1)``.

    Its presence, shape and dtype are documented rules (:mod:`npu_platform.spec.rules`),
    checked before the reference runs; the kernel trusts the content ("需要用户保证").
    """

    def full_check() -> None:
        m = mask.reshape(_MASK_SIZE, _MASK_SIZE).to(device="cpu", dtype=torch.bool)
        want = torch.ones(_MASK_SIZE, _MASK_SIZE, dtype=torch.bool).triu(diagonal=1)
        check(
            bool(torch.equal(m, want)),
            op,
            "atten_mask",
            f"sparse_mode={sparse_mode} needs exactly torch.triu(torch.ones(2048, 2048), "
            "diagonal=1): True (1) above the diagonal means 'masked'",
        )

    _checked_masks.check(mask, full_check)


def allowed_matrix(
    sq: int, skv: int, kind: str, pre_tokens: int = INT_MAX, next_tokens: int = INT_MAX
) -> torch.Tensor | None:
    """(sq, skv) bool, True where query i may attend key j; None for no masking."""
    if kind == "none":
        return None
    i = torch.arange(sq).unsqueeze(1)
    j = torch.arange(skv).unsqueeze(0)
    if kind == "left_up_causal":
        return j <= i
    diag = i + (skv - sq)  # the key aligned with query i, bottom-right origin
    if kind == "right_down_causal":
        return j <= diag
    if kind == "band":
        return (j - diag <= next_tokens) & (diag - j <= pre_tokens)
    raise ValueError(kind)


def attend(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    scale: float,
    allowed: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Softmax attention of one request, in float32.

    q (Sq, N, D), k (Skv, Nkv, D), v (Skv, Nkv, Dv); query head h uses KV head
    ``h // (N // Nkv)``. ``allowed`` is broadcastable to (N, Sq, Skv). Returns
    out (Sq, N, Dv), row max (Sq, N) and row sum of exp(s - max) (Sq, N); fully masked rows
    give out 0, max -inf, sum 0.
    """
    n, nkv = q.shape[1], k.shape[1]
    qf, kf, vf = q.float(), k.float(), v.float()
    if nkv != n:
        kf = kf.repeat_interleave(n // nkv, dim=1)
        vf = vf.repeat_interleave(n // nkv, dim=1)
    s = torch.einsum("qnd,knd->nqk", qf, kf) * scale
    if allowed is not None:
        s = s.masked_fill(~allowed.to(s.device), float("-inf"))
    empty = s.shape[-1] == 0
    row_max = s.new_full(s.shape[:-1], float("-inf")) if empty else s.amax(dim=-1)
    safe_max = torch.where(torch.isfinite(row_max), row_max, torch.zeros_like(row_max))
    p = torch.exp(s - safe_max.unsqueeze(-1))
    row_sum = p.sum(dim=-1)
    p = p / torch.where(row_sum > 0, row_sum, torch.ones_like(row_sum)).unsqueeze(-1)
    out = torch.einsum("nqk,knd->qnd", p, vf)
    return out, row_max.transpose(0, 1), row_sum.transpose(0, 1)


# --------------------------------------------------------------------------- FIA

_FIA_UNSET = (
    "pse_shift",
    "dequant_scale1",
    "quant_scale1",
    "dequant_scale2",
    "quant_scale2",
    "quant_offset2",
    "antiquant_scale",
    "antiquant_offset",
    "key_antiquant_scale",
    "key_antiquant_offset",
    "value_antiquant_scale",
    "value_antiquant_offset",
    "query_padding_size",
    "kv_padding_size",
    "key_shared_prefix",
    "value_shared_prefix",
    "actual_shared_prefix_len",
    "query_rope",
    "key_rope",
    "key_rope_antiquant_scale",
)


def _fia_mask_kind(op: str, a: dict) -> str:
    mode = require_choice(op, a, "sparse_mode", (0, 3, 4))
    if mode == 0:
        if a["atten_mask"] is not None:
            unsupported(op, "atten_mask", a["atten_mask"], "None with sparse_mode=0")
        return "none"
    check_compressed_mask(op, a["atten_mask"], mode)
    if mode == 3:
        return "right_down_causal"
    check(
        a["pre_tokens"] + a["next_tokens"] >= 0,
        op,
        "pre_tokens",
        f"sparse_mode=4 needs pre_tokens + next_tokens >= 0, got {a['pre_tokens']} + "
        f"{a['next_tokens']}",
    )
    return "band"


def _paged_kv(op: str, a: dict, kv_heads: int, d: int):
    """Per-request (k, v) gathered from the paged caches.

    The table's dtype and shape, the block size, the cache layout and the KV lengths are
    documented rules, checked before the reference runs; the block ids are device data the
    kernel does not validate (torch_npu docs), so they are checked here.
    """
    key, value, table, block_size = a["key"], a["value"], a["block_table"], a["block_size"]
    if key.dim() == 3:  # (num_blocks, block_size, N_kv * D)
        k_blocks = key.view(key.shape[0], block_size, kv_heads, d)
        v_blocks = value.view(value.shape[0], block_size, kv_heads, d)
    else:  # (num_blocks, N_kv, block_size, D)
        k_blocks = key.transpose(1, 2)
        v_blocks = value.transpose(1, 2)
    num_blocks = key.shape[0]
    out = []
    for b, kv_len in enumerate(a["actual_seq_lengths_kv"]):
        n_blocks = -(-kv_len // block_size)
        ids = table[b, :n_blocks].to(device=key.device, dtype=torch.int64)
        if n_blocks:
            lo, hi = int(ids.min()), int(ids.max())
            check(
                lo >= 0 and hi < num_blocks,
                op,
                "block_table",
                f"row {b} uses block ids in [{lo}, {hi}] but the caches have {num_blocks} blocks",
            )
        k = k_blocks[ids].reshape(n_blocks * block_size, kv_heads, d)[:kv_len]
        v = v_blocks[ids].reshape(n_blocks * block_size, kv_heads, d)[:kv_len]
        out.append((k, v))
    return out


@reference("npu_fused_infer_attention_score")
def npu_fused_infer_attention_score(**a):
    op = "npu_fused_infer_attention_score"
    require_unset(op, a, _FIA_UNSET)
    require_choice(op, a, "input_layout", ("TND",))
    for name in ("antiquant_mode", "key_antiquant_mode", "value_antiquant_mode"):
        require_choice(op, a, name, (0,))
    query, key, value = a["query"], a["key"], a["value"]
    if query.dtype == torch.int8:
        unsupported(op, "query", query, "float16 or bfloat16 query (int8 is not emulated)")
    for name, t in (("key", key), ("value", value)):
        if t.dtype in (torch.int8, torch.int32):
            unsupported(op, name, t, "float16/bfloat16 KV (int8/int4 antiquant is not emulated)")
        check(t.dtype == query.dtype, op, name, f"dtype {t.dtype} must equal query's {query.dtype}")
    # query's shape, the heads, the lengths and the cache layout are documented rules,
    # checked before the reference runs (npu_platform.spec.rules)
    total, n, d = query.shape
    kv_heads = a["num_key_value_heads"] or a["num_heads"]
    q_ends = list(a["actual_seq_lengths"])
    kind = _fia_mask_kind(op, a)
    pre, nxt = a["pre_tokens"], a["next_tokens"]

    if a["block_table"] is not None:
        kv = _paged_kv(op, a, kv_heads, d)
        dv = d
    else:
        check(
            key.dim() == 3 and value.dim() == 3,
            op,
            "key",
            "must be (T_kv, N_kv, D) without block_table",
        )
        check(
            key.shape[1] == kv_heads and value.shape[1] == kv_heads and key.shape[2] == d,
            op,
            "key",
            f"shape {tuple(key.shape)} must be (T_kv, {kv_heads}, {d})",
        )
        kv_ends = list(a["actual_seq_lengths_kv"])
        starts = [0, *kv_ends[:-1]]
        kv = [(key[s:e], value[s:e]) for s, e in zip(starts, kv_ends, strict=True)]
        dv = value.shape[2]

    out = query.new_zeros(total, n, dv, dtype=torch.float32)
    lse = query.new_full((total, n), float("-inf"), dtype=torch.float32)
    start = 0
    for b, end in enumerate(q_ends):
        sq = end - start
        k, v = kv[b]
        skv = k.shape[0]
        if kind == "right_down_causal":
            check(
                sq <= skv,
                op,
                "actual_seq_lengths",
                f"request {b} has {sq} query tokens but only {skv} KV tokens; sparse_mode=3 "
                "needs query length <= KV length",
            )
        if sq:
            allowed = allowed_matrix(sq, skv, kind, pre, nxt)
            o, row_max, row_sum = attend(query[start:end], k, v, a["scale"], allowed)
            out[start:end] = o
            lse[start:end] = row_max + torch.log(row_sum)
        start = end
    attention_out = out.to(query.dtype)
    if a["softmax_lse_flag"]:
        softmax_lse = lse.unsqueeze(-1)
    else:
        softmax_lse = torch.zeros(1, dtype=torch.float32, device=query.device)
    return attention_out, softmax_lse


# --------------------------------------------------------------------------- FA


def _fa_split(op: str, a: dict):
    """Per-batch (q (Sq,N,D), k (Skv,Nkv,D), v (Skv,Nkv,Dv)) and a function packing outputs."""
    q, k, v, layout, n = a["query"], a["key"], a["value"], a["input_layout"], a["head_num"]
    # ranks, heads and head dims are documented rules, checked before the reference runs
    if layout in ("BSH", "SBH"):
        d = q.shape[2] // n
        nkv = k.shape[2] // d
        if layout == "SBH":
            q, k, v = q.transpose(0, 1), k.transpose(0, 1), v.transpose(0, 1)
        q = q.reshape(q.shape[0], q.shape[1], n, d)
        k = k.reshape(k.shape[0], k.shape[1], nkv, d)
        v = v.reshape(v.shape[0], v.shape[1], nkv, -1)
    elif layout == "BNSD":
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
    # now BSND-like (B, S, N, D), or TND
    head_dim = 2 if layout != "TND" else 1
    check(v.shape[head_dim] == k.shape[head_dim], op, "value", "must have as many heads as key")
    if layout == "TND":
        q_ends, kv_ends = list(a["actual_seq_qlen"]), list(a["actual_seq_kvlen"])
        # trailing zeros in both lists mark batches that take no part (documented)
        used = len(q_ends)
        while used > 1 and q_ends[used - 1] == 0 and kv_ends[used - 1] == 0:
            used -= 1
        if used < len(q_ends) and q_ends[used - 1] == 0 and kv_ends[used - 1] == 0:
            used = len(q_ends)  # all zeros: nothing is left out, every batch is empty
        q_ends, kv_ends = q_ends[:used], kv_ends[:used]
        qs, ks = [0, *q_ends[:-1]], [0, *kv_ends[:-1]]
        parts = [
            (q[a0:a1], k[b0:b1], v[b0:b1])
            for a0, a1, b0, b1 in zip(qs, q_ends, ks, kv_ends, strict=True)
        ]
        return parts, q_ends
    check(
        q.shape[0] == k.shape[0] == v.shape[0],
        op,
        "key",
        "batch sizes of query, key, value must match",
    )
    check(k.shape[1] == v.shape[1], op, "value", "sequence length must equal key's")
    return [(q[b], k[b], v[b]) for b in range(q.shape[0])], None


def _fa_mask(op: str, a: dict, batch: int, n: int) -> tuple[str, torch.Tensor | None]:
    mask, mode = a["atten_mask"], a["sparse_mode"]
    if mask is None:
        return "none", None  # documented: no mask means full computation whatever the mode
    mode = require_choice(op, a, "sparse_mode", (0, 1, 2, 3, 4))
    if mode in (2, 3, 4):
        check_compressed_mask(op, mask, mode)
        return {2: "left_up_causal", 3: "right_down_causal", 4: "band"}[mode], None
    if a["input_layout"] == "TND":
        unsupported(
            op, "atten_mask", mask, "None or the compressed mask with sparse_mode 2, 3, 4 for TND"
        )
    if mode == 0 and (a["pre_tockens"] != INT_MAX or a["next_tockens"] != INT_MAX):
        unsupported(
            op, "pre_tockens", a["pre_tockens"], "the defaults with sparse_mode=0 and a full mask"
        )
    return "full", mask


@reference("npu_fusion_attention")
def npu_fusion_attention(**a):
    op = "npu_fusion_attention"
    require_unset(op, a, ("pse", "padding_mask", "prefix", "sink", "dropout_mask"))
    if a["keep_prob"] != 1.0:
        unsupported(op, "keep_prob", a["keep_prob"], "1.0 (dropout is not emulated)")
    # layout, dtypes, heads and lengths are documented rules, checked before the reference
    layout, query, n = a["input_layout"], a["query"], a["head_num"]
    parts, q_ends = _fa_split(op, a)
    kind, full_mask = _fa_mask(op, a, len(parts), n)
    pre, nxt = a["pre_tockens"], a["next_tockens"]
    outs, maxes, sums = [], [], []
    for b, (q, k, v) in enumerate(parts):
        sq, skv = q.shape[0], k.shape[0]
        if kind == "full":
            m = full_mask
            assert m is not None
            check(
                m.shape[-2:] == (sq, skv) and m.dim() in (2, 4),
                op,
                "atten_mask",
                f"a full mask must be (Sq, Skv) or (B|1, N|1, Sq, Skv) = (.., {sq}, {skv}), "
                f"got {tuple(m.shape)}",
            )
            mb = m if m.dim() == 2 else m[b if m.shape[0] > 1 else 0]
            allowed = ~mb.to(device="cpu", dtype=torch.bool)
        else:
            allowed = allowed_matrix(sq, skv, kind, pre, nxt)
        o, row_max, row_sum = attend(q, k, v, a["scale"], allowed)
        outs.append(o)
        maxes.append(row_max)
        sums.append(row_sum)
    dtype, device = query.dtype, query.device
    if layout == "TND":
        total = query.shape[0]
        dv = a["value"].shape[-1]
        out = query.new_zeros(total, n, dv, dtype=torch.float32)
        smax = query.new_full((total, n), float("-inf"), dtype=torch.float32)
        ssum = query.new_zeros(total, n, dtype=torch.float32)
        start = 0
        assert q_ends is not None
        for end, o, mx, sm in zip(q_ends, outs, maxes, sums, strict=True):
            out[start:end], smax[start:end], ssum[start:end] = o, mx, sm
            start = end
        softmax_max = smax.unsqueeze(-1).expand(total, n, 8).contiguous()
        softmax_sum = ssum.unsqueeze(-1).expand(total, n, 8).contiguous()
    else:
        out = torch.stack(outs)  # (B, Sq, N, Dv)
        softmax_max = torch.stack(maxes).transpose(1, 2).unsqueeze(-1).expand(-1, -1, -1, 8)
        softmax_sum = torch.stack(sums).transpose(1, 2).unsqueeze(-1).expand(-1, -1, -1, 8)
        softmax_max, softmax_sum = softmax_max.contiguous(), softmax_sum.contiguous()
        if layout == "BNSD":
            out = out.transpose(1, 2)
        elif layout in ("BSH", "SBH"):
            out = out.reshape(out.shape[0], out.shape[1], -1)
            if layout == "SBH":
                out = out.transpose(0, 1)
        out = out.contiguous()
    return (
        out.to(device=device, dtype=dtype),
        softmax_max.to(device),
        softmax_sum.to(device),
        torch.empty(0, dtype=dtype, device=device),
        0,
        0,
        0,
    )
