"""FIA in the batch layouts and overloads that sglang's NPU graphs call.

sglang's ascend backend decodes in an NPU graph with ``input_layout='BSH'`` (one query token
per request, paged KV) through the ``.out`` overload, asking
``_npu_fused_infer_attention_score_get_max_workspace`` for the workspace first
(``hardware_backend/npu/attention/ascend_backend.py``, ``forward_decode_graph``). The
``TND`` reference in :mod:`.attention` computes the attention; this module maps the batch
layouts onto it:

* ``BSH`` query (B, S, N*D) and ``BSND`` query (B, S, N, D): ``actual_seq_lengths`` is each
  request's own query length (default S; the documentation's "effective S per batch"), the
  positions past it are padding and come out as zeros. Without ``block_table`` key/value are
  (B, S_kv, N_kv*D) / (B, S_kv, N_kv, D) with per-request ``actual_seq_lengths_kv``
  (default S_kv); with it they are the paged caches, as for ``TND``.
* ``softmax_lse`` (with ``softmax_lse_flag``) is float32 (B, N, S, 1) for these layouts.
* ``.out`` writes into ``attention_out`` and ``softmax_lse`` and returns them; its
  ``workspace`` is not read (the host reference needs none).
* ``_npu_fused_infer_attention_score_get_max_workspace`` returns an empty uint8 workspace
  on the query's device: the host reference needs no scratch memory.
"""

from __future__ import annotations

from itertools import accumulate
from typing import Any

import torch

from npu_platform.emulation.kernels import attention, reference
from npu_platform.spec.contract import check, require_choice

OP = "npu_fused_infer_attention_score"
_OUT_ONLY = ("attention_out", "softmax_lse", "workspace")


def _lengths(a: dict, name: str, batch: int, full: int) -> list[int]:
    given = a[name]
    if given is None:
        return [full] * batch
    lens = [int(x) for x in given]
    check(len(lens) == batch, OP, name, f"has {len(lens)} entries for a batch of {batch}")
    for i, n in enumerate(lens):
        check(0 <= n <= full, OP, name, f"entry {i} is {n}, outside [0, {full}]")
    return lens


def _packed(t4: torch.Tensor, lens: list[int]) -> torch.Tensor:
    """(B, S, N, D) -> (sum(lens), N, D): each request's first ``lens[b]`` positions."""
    parts = [t4[b, :n] for b, n in enumerate(lens)]
    if not parts:
        return t4.reshape(0, *t4.shape[2:])
    return torch.cat(parts).contiguous()


def attention_any_layout(a: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
    """FIA's functional result for a bound call in TND, BSH or BSND."""
    layout = require_choice(OP, a, "input_layout", ("TND", "BSH", "BSND"))
    if layout == "TND":
        return attention.npu_fused_infer_attention_score(**a)
    q = a["query"]
    if layout == "BSH":
        batch, s, hidden = q.shape
        n = a["num_heads"]
        d = hidden // n
        q4 = q.view(batch, s, n, d)
    else:
        batch, s, n, d = q.shape
        q4 = q
    kv_heads = a["num_key_value_heads"] or n
    q_lens = _lengths(a, "actual_seq_lengths", batch, s)
    args = dict(a)
    args["input_layout"] = "TND"
    args["query"] = _packed(q4, q_lens)
    args["actual_seq_lengths"] = list(accumulate(q_lens))
    if a["block_table"] is None:
        key, value = a["key"], a["value"]
        skv = key.shape[1]
        k4 = key.reshape(batch, skv, kv_heads, -1)
        v4 = value.reshape(batch, skv, kv_heads, -1)
        kv_lens = _lengths(a, "actual_seq_lengths_kv", batch, skv)
        args["key"] = _packed(k4, kv_lens)
        args["value"] = _packed(v4, kv_lens)
        args["actual_seq_lengths_kv"] = list(accumulate(kv_lens))
    out_tnd, lse_tnd = attention.npu_fused_infer_attention_score(**args)
    dv = out_tnd.shape[-1]
    out = q.new_zeros(batch, s, n, dv)
    lse = None
    if a["softmax_lse_flag"]:
        lse = torch.zeros((batch, n, s, 1), dtype=torch.float32, device=q.device)
    start = 0
    for b, length in enumerate(q_lens):
        out[b, :length] = out_tnd[start : start + length]
        if lse is not None:
            lse[b, :, :length] = lse_tnd[start : start + length].transpose(0, 1)
        start += length
    if layout == "BSH":
        out = out.view(batch, s, n * dv)
    if lse is None:
        lse = lse_tnd  # the documented placeholder: float32 (1,) holding 0
    return out, lse


@reference("npu_fused_infer_attention_score.out")
def npu_fused_infer_attention_score_out(**a: Any) -> tuple[torch.Tensor, torch.Tensor]:
    attention_out, softmax_lse = a["attention_out"], a["softmax_lse"]
    functional = {k: v for k, v in a.items() if k not in _OUT_ONLY}
    out, lse = attention_any_layout(functional)
    check(
        tuple(attention_out.shape) == tuple(out.shape),
        OP,
        "attention_out",
        f"shape {tuple(attention_out.shape)} must be the result's {tuple(out.shape)}",
    )
    attention_out.copy_(out)
    if a["softmax_lse_flag"]:
        check(
            tuple(softmax_lse.shape) == tuple(lse.shape),
            OP,
            "softmax_lse",
            f"shape {tuple(softmax_lse.shape)} must be {tuple(lse.shape)} with softmax_lse_flag",
        )
        softmax_lse.copy_(lse)
    else:
        softmax_lse.zero_()
    return attention_out, softmax_lse


@reference("_npu_fused_infer_attention_score_get_max_workspace")
def npu_fused_infer_attention_score_get_max_workspace(**a: Any) -> torch.Tensor:
    require_choice(OP, a, "input_layout", ("TND", "BSH", "BSND"))
    return torch.empty(0, dtype=torch.uint8, device=a["query"].device)
