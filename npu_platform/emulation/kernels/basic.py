"""CPU references of the torch_npu normalisation, rotary, activation and KV-cache ops.

Each reference follows torch_npu's own documentation (``torch_npu/_op_plugin_docs.py``) and
output shapes (``op_plugin/meta/_meta_registrations.py``). Arithmetic is done in float32 and
cast back to the input dtype, as the NPU kernels do. The documented constraints (dtypes,
ranks, shapes) are rules (:mod:`npu_platform.spec.rules`) checked before a reference runs;
the references check what they need beyond those (values of device data, dtypes that must
agree for the arithmetic) and raise :class:`~npu_platform.spec.contract.ContractError`;
documented features we do not emulate raise
:class:`~npu_platform.spec.contract.UnsupportedByReference`.

KV-cache write: ``npu_scatter_pa_kv_cache``
-------------------------------------------
torch_npu's schema has one op that scatters per-token keys and values into paged caches by a
slot index: ``npu_scatter_pa_kv_cache``. Its documentation lists three input "scenes";
scene two is exactly vLLM's layout::

    key, value:             (num_tokens, num_kv_heads, head_size)
    key_cache, value_cache: (num_blocks, block_size, num_kv_heads, head_size)
    slot_mapping:           (num_tokens,)   slot = block_id * block_size + offset

and it needs ``cache_mode='Norm'`` (or None): the default ``'PA_NZ'`` expects caches cast to
the NZ (fractal) format, scene one, which is a hardware memory layout with no CPU meaning, so
the reference refuses it. Scene three (4-D keys with ``compress_lens`` / ``seq_lens`` /
``compress_seq_offsets``) is refused as well. The alternatives in the schema do not fit:
``scatter_update`` writes along one axis by batch index, and ``npu_kv_rmsnorm_rope_cache`` /
``npu_rope_quant_kvcache`` fuse normalisation, rotary and quantisation into the write.
"""

from __future__ import annotations

import torch

from npu_platform.emulation.kernels import reference
from npu_platform.spec.contract import ContractError, check, require_choice, require_unset

_FLOATS = (torch.float16, torch.bfloat16, torch.float32)


def _dtype_in(op: str, name: str, t: torch.Tensor, allowed: tuple[torch.dtype, ...]) -> None:
    if t.dtype not in allowed:
        raise ContractError(
            op,
            f"argument '{name}' has dtype {t.dtype}; torch_npu supports "
            f"{', '.join(str(d) for d in allowed)}",
            name,
        )


def _same_dtype(op: str, names: tuple[str, ...], *tensors: torch.Tensor) -> None:
    first = tensors[0]
    for name, t in zip(names[1:], tensors[1:], strict=True):
        if t.dtype != first.dtype:
            raise ContractError(
                op,
                f"argument '{name}' has dtype {t.dtype} but '{names[0]}' has {first.dtype}; "
                "they must be equal",
                name,
            )


# --------------------------------------------------------------------------- RMS norm


def _rms_norm(x: torch.Tensor, gamma: torch.Tensor, epsilon: float):
    """(y, rstd) over gamma's (trailing) dimensions; dtypes and shapes are rules."""
    dims = tuple(range(x.dim() - gamma.dim(), x.dim()))
    xf = x.float()
    rstd = torch.rsqrt(xf.pow(2).mean(dim=dims, keepdim=True) + epsilon)
    y = (xf * rstd * gamma.float()).to(x.dtype)
    return y, rstd


@reference("npu_rms_norm")
def npu_rms_norm(self, gamma, epsilon):
    """(y, rstd): ``y = x / sqrt(mean(x^2) + eps) * gamma`` over gamma's dimensions.

    rstd is float32 with x's leading dimensions and size 1 over gamma's (meta kernel).
    """
    return _rms_norm(self, gamma, epsilon)


@reference("npu_add_rms_norm")
def npu_add_rms_norm(x1, x2, gamma, epsilon):
    """(y, rstd, x) with ``x = x1 + x2`` (summed in float32, returned in x1's dtype) and
    ``y = rms_norm(x)`` computed from the float32 sum."""
    _same_dtype("npu_add_rms_norm", ("x1", "x2", "gamma"), x1, x2, gamma)
    x = x1.float() + x2.float()
    y, rstd = _rms_norm(x, gamma.float(), epsilon)
    return y.to(x1.dtype), rstd, x.to(x1.dtype)


# --------------------------------------------------------------------------- rotary


def _rotate(x: torch.Tensor, mode: str) -> torch.Tensor:
    if mode == "half":
        x1, x2 = torch.chunk(x, 2, dim=-1)
        return torch.cat((-x2, x1), dim=-1)
    x1 = x[..., ::2]
    x2 = x[..., 1::2]
    return torch.stack((-x2, x1), dim=-1).flatten(-2)


@reference("npu_rotary_mul")
def npu_rotary_mul(self, r1, r2, rotary_mode, rotate):
    """``r1 * x + r2 * rotate(x)``; rotate is rotate-half ('half', GPT-NeoX) or the pairwise
    ``(x0, x1) -> (-x1, x0)`` ('interleave', GPT-J), or ``x @ rotate`` when a matrix is given.

    x is 4-D (BNSD, BSND or SBND); r1/r2 are 4-D with the same last dimension and each other
    dimension equal to x's or 1. The caller supplies r1 = cos, r2 = sin already expanded to
    the full head dimension in the matching order (concatenated halves for 'half', each value
    repeated twice for 'interleave').
    """
    op = "npu_rotary_mul"
    x = self
    # ranks, D, the mode and r1/r2's broadcast shapes are documented rules
    _same_dtype(op, ("self", "r1", "r2"), x, r1, r2)
    d = x.shape[-1]
    xf = x.float()
    if rotate is not None:
        _same_dtype(op, ("self", "rotate"), x, rotate)
        check(
            rotate.shape == (d, d),
            op,
            "rotate",
            f"must be a ({d}, {d}) matrix, got {tuple(rotate.shape)}",
        )
        x_new = xf @ rotate.float()
    else:
        x_new = _rotate(xf, rotary_mode)
    return (r1.float() * xf + r2.float() * x_new).to(x.dtype)


@reference("npu_apply_rotary_pos_emb")
def npu_apply_rotary_pos_emb(query, key, cos, sin, layout, rotary_mode):
    """Rotate-half rotary on query and key in place (Atlas A2/A3 semantics); returns both.

    layout 'BSND': query (B, S, Nq, D), key (B, S, Nk, D), cos/sin (B, S, 1, D);
    layout 'TND': query (T, Nq, D), key (T, Nk, D), cos/sin (T, 1, D). D is 64 or 128.
    """
    op = "npu_apply_rotary_pos_emb"
    layout = require_choice(op, {"layout": layout}, "layout", ("BSND", "TND"))
    require_choice(op, {"rotary_mode": rotary_mode}, "rotary_mode", ("half",))
    _dtype_in(op, "query", query, _FLOATS)
    _same_dtype(op, ("query", "key", "cos", "sin"), query, key, cos, sin)
    rank = 4 if layout == "BSND" else 3
    lead = rank - 2
    for name, t in (("query", query), ("key", key), ("cos", cos), ("sin", sin)):
        check(t.dim() == rank, op, name, f"must be {rank}-D for layout {layout}")
        check(
            t.shape[:lead] == query.shape[:lead],
            op,
            name,
            f"leading dimensions {tuple(t.shape[:lead])} must equal query's",
        )
        check(
            t.shape[-1] in (64, 128),
            op,
            name,
            f"last dimension must be 64 or 128, got {t.shape[-1]}",
        )
    check(key.shape[-1] == query.shape[-1], op, "key", "head dimension must equal query's")
    for name, t in (("cos", cos), ("sin", sin)):
        check(t.shape[-2] == 1, op, name, "the head (N) dimension must be 1")
        check(t.shape[-1] == query.shape[-1], op, name, "last dimension must equal query's")
    c, s = cos.float(), sin.float()
    for t in (query, key):
        tf = t.float()
        t.copy_((c * tf + s * _rotate(tf, "half")).to(t.dtype))
    return query, key


# --------------------------------------------------------------------------- activation


@reference("npu_swiglu")
def npu_swiglu(self, dim):
    """``silu(A) * B`` where ``A, B = x.chunk(2, dim)`` (A is the first half)."""
    op = "npu_swiglu"
    x = self  # dtype and rank are documented rules
    check(-x.dim() <= dim < x.dim(), op, "dim", f"{dim} is out of range for a {x.dim()}-D input")
    check(x.shape[dim] % 2 == 0, op, "self", f"size {x.shape[dim]} along dim {dim} must be even")
    a, b = x.float().chunk(2, dim=dim)
    return (torch.nn.functional.silu(a) * b).to(x.dtype)


# --------------------------------------------------------------------------- KV cache


@reference("npu_scatter_pa_kv_cache")
def npu_scatter_pa_kv_cache(
    key, value, key_cache, value_cache, slot_mapping, compress_lens, compress_seq_offsets,
    seq_lens, cache_mode,
):  # fmt: skip
    """Write ``key[t]``/``value[t]`` to slot ``slot_mapping[t]`` of the ND caches (in place)."""
    op = "npu_scatter_pa_kv_cache"
    bound = {
        "cache_mode": cache_mode,
        "compress_lens": compress_lens,
        "compress_seq_offsets": compress_seq_offsets,
        "seq_lens": seq_lens,
    }
    require_choice(op, bound, "cache_mode", ("Norm", None))
    # the compressed-cache scene (4-D keys) needs compress_lens and seq_lens (a documented
    # rule), which are refused here: only scene two is emulated
    require_unset(op, bound, ("compress_lens", "compress_seq_offsets", "seq_lens"))
    # dtypes, contiguity and the ND layout of scene two are documented rules
    t, heads, dk = key.shape
    dv = value.shape[2]
    nb, bs = key_cache.shape[:2]
    slots = slot_mapping.to(device=key_cache.device, dtype=torch.int64)
    if t:
        lo, hi = int(slots.min()), int(slots.max())
        check(
            lo >= 0 and hi < nb * bs,
            op,
            "slot_mapping",
            f"values must lie in [0, {nb * bs - 1}] (num_blocks * block_size - 1), got "
            f"[{lo}, {hi}]; padded tokens (slot -1) must be left out",
        )
        check(
            torch.unique(slots).numel() == t,
            op,
            "slot_mapping",
            "values must be distinct (torch_npu does not define the result otherwise)",
        )
    key_cache.view(nb * bs, heads, dk).index_copy_(0, slots, key)
    value_cache.view(nb * bs, heads, dv).index_copy_(0, slots, value)
