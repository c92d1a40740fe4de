"""CPU reference of ``torch_npu.npu_mrope`` (sglang's NPU rotary embedding, prefill and
eager decode: ``sglang/srt/layers/rotary_embedding/base.py``, ``forward_npu``).

From torch_npu 2.13.0's documentation (``_op_plugin_docs.py``, ``npu_mrope``):

* ``positions`` is 1-D (num_tokens) for rope, 2-D (3, num_tokens) for mrope; int32 or int64.
* ``query`` (num_tokens, num_q_heads * head_size) and ``key`` (num_tokens,
  num_k_heads * head_size) are 2-D, bfloat16, float16 or float32; ``cos_sin_cache`` is 2-D
  (max_seq_len, rotary_dim): for each position the rotary_dim / 2 cosines, then the
  rotary_dim / 2 sines ("default" cache mode).
* The first ``rotary_dim`` values of each head rotate; the rest pass through.
  ``rotary_mode='half'`` rotates halves (GPT-NeoX), ``'interleave'`` pairs (GPT-J).
* rotary_dim is a multiple of 32 for bfloat16/float16 inputs and of 16 for float32.
* mrope: ``mrope_section`` (t, h, w) sums to rotary_dim / 2; section i of the cosines and
  sines is taken at ``positions[i]``. ``[0, 0, 0]`` (the default) means rope mode.
* positions past the cache's max_seq_len are an error.

Computed in float32 and returned in the inputs' dtype. ``cache_mode='interleave'`` (sections
interleaved in the cache) is not implemented here and is refused.
"""

from __future__ import annotations

import torch

from npu_platform.emulation.kernels import reference
from npu_platform.spec.contract import check, require_choice

OP = "npu_mrope"
_DOCS = "torch_npu 2.13.0 _op_plugin_docs.py, npu_mrope"


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, mode: str) -> torch.Tensor:
    """x (T, H, rotary_dim) rotated by cos/sin (T, 1, rotary_dim / 2)."""
    if mode == "half":
        x1, x2 = torch.chunk(x, 2, dim=-1)
        return torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1)
    x1, x2 = x[..., ::2], x[..., 1::2]
    return torch.stack((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1).flatten(-2)


@reference("npu_mrope")
def npu_mrope(
    positions, query, key, cos_sin_cache, head_size, mrope_section, rotary_mode, cache_mode
):
    mode = require_choice(OP, {"rotary_mode": rotary_mode}, "rotary_mode", ("half", "interleave"))
    require_choice(OP, {"cache_mode": cache_mode}, "cache_mode", ("default",))
    for name, t in (("query", query), ("key", key), ("cos_sin_cache", cos_sin_cache)):
        check(t.dim() == 2, OP, name, f"must be 2-D ({_DOCS}), got shape {tuple(t.shape)}")
        check(
            t.dtype in (torch.bfloat16, torch.float16, torch.float32),
            OP,
            name,
            f"dtype {t.dtype}: bfloat16, float16 or float32 ({_DOCS})",
        )
    check(
        positions.dtype in (torch.int32, torch.int64),
        OP,
        "positions",
        f"dtype {positions.dtype}: int32 or int64 ({_DOCS})",
    )
    rotary_dim = cos_sin_cache.shape[1]
    multiple = 16 if query.dtype == torch.float32 else 32
    check(
        rotary_dim % multiple == 0,
        OP,
        "cos_sin_cache",
        f"rotary_dim {rotary_dim} must be a multiple of {multiple} for {query.dtype} ({_DOCS})",
    )
    check(
        0 < rotary_dim <= head_size
        and query.shape[1] % head_size == 0
        and key.shape[1] % head_size == 0,
        OP,
        "head_size",
        f"head_size {head_size} must divide query's {query.shape[1]} and key's {key.shape[1]} "
        f"and be at least rotary_dim {rotary_dim}",
    )
    sections = list(mrope_section) if mrope_section is not None else [0, 0, 0]
    mrope = any(sections)
    tokens = query.shape[0]
    if mrope:
        check(
            positions.dim() == 2 and positions.shape[0] == 3,
            OP,
            "positions",
            f"mrope takes positions (3, num_tokens), got {tuple(positions.shape)}",
        )
        check(
            len(sections) == 3 and sum(sections) == rotary_dim // 2,
            OP,
            "mrope_section",
            f"{sections} must have 3 entries summing to rotary_dim / 2 = {rotary_dim // 2}",
        )
    else:
        check(
            positions.dim() == 1,
            OP,
            "positions",
            f"rope takes positions (num_tokens,), got {tuple(positions.shape)}",
        )
    check(
        positions.shape[-1] == tokens and key.shape[0] == tokens,
        OP,
        "positions",
        f"{positions.shape[-1]} positions, {tokens} query rows and {key.shape[0]} key rows "
        "must be equal",
    )
    pos = positions.to(torch.int64)
    if pos.numel():
        lo, hi = int(pos.min()), int(pos.max())
        check(
            lo >= 0 and hi < cos_sin_cache.shape[0],
            OP,
            "positions",
            f"values in [{lo}, {hi}] outside the cache's {cos_sin_cache.shape[0]} positions",
        )
    cache = cos_sin_cache.float()
    half = rotary_dim // 2
    if mrope:
        cos_parts, sin_parts, start = [], [], 0
        for i, width in enumerate(sections):
            rows = cache[pos[i]]
            cos_parts.append(rows[:, start : start + width])
            sin_parts.append(rows[:, half + start : half + start + width])
            start += width
        cos, sin = torch.cat(cos_parts, dim=-1), torch.cat(sin_parts, dim=-1)
    else:
        rows = cache[pos]
        cos, sin = rows[:, :half], rows[:, half:]
    cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)

    def apply(x: torch.Tensor) -> torch.Tensor:
        heads = x.view(tokens, -1, head_size).float()
        rotated = _rotate(heads[..., :rotary_dim], cos, sin, mode)
        out = torch.cat((rotated, heads[..., rotary_dim:]), dim=-1)
        return out.to(x.dtype).reshape(x.shape)

    return apply(query), apply(key)
