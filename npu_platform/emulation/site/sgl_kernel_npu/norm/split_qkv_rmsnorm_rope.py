"""``sgl_kernel_npu.norm.split_qkv_rmsnorm_rope`` on the emulated NPU (CPU reference).

``split_qkv_rmsnorm_rope(input, sin, cos, q_hidden_size, kv_hidden_size, head_dim, eps=None,
q_weight=None, k_weight=None, q_bias=None, k_bias=None, is_neox_style=True)`` splits a fused
``qkv`` projection ``(T, q_hidden + 2 * kv_hidden)`` into ``q``, ``k``, ``v`` and returns
them as new contiguous ``(T, q_hidden)``, ``(T, kv_hidden)``, ``(T, kv_hidden)`` tensors of
``input``'s dtype, with:

* when ``eps`` is given, an RMSNorm over each head of ``q`` and ``k`` (``x / sqrt(mean(x^2)
  + eps) * weight (+ bias)``) - Qwen3's q/k norm; without ``eps`` no norm;
* rotary embedding on the first ``rope_dim = sin.shape[-1]`` values of each ``q``/``k`` head
  (the rest pass through). ``sin``/``cos`` hold one row of ``rope_dim`` values per token
  (sglang passes ``(T, 1, 1, rope_dim)``, both halves equal). NeoX style rotates the two
  halves, ``x * cos + cat(-x2, x1) * sin``; GPT-J style (``is_neox_style=False``) rotates
  interleaved pairs ``(x[2i], x[2i+1])`` by the angle of entry ``i`` of the first half;
* ``v`` copied.

Computed in float32 and rounded once to the output dtype (the Triton kernel rounds the
normalised value to bfloat16 before rope in some versions, so the last bit can differ).
Like the kernel, it requires ``head_dim`` to be a power of two and ``q_hidden_size`` a
multiple of ``kv_hidden_size`` (``AssertionError`` otherwise).
"""

from __future__ import annotations

import torch

from sgl_kernel_npu._emulation import Unemulated, host, npu_kernel

__all__ = ["split_qkv_rmsnorm_rope", "split_qkvgate_gemma_rmsnorm_rope"]


def _rms(x: torch.Tensor, eps: float, weight, bias) -> torch.Tensor:
    x = x * torch.rsqrt(x.pow(2).mean(dim=-1, keepdim=True) + eps)
    if weight is not None:
        x = x * host(weight).float()
    if bias is not None:
        x = x + host(bias).float()
    return x


def _rope(x: torch.Tensor, sin: torch.Tensor, cos: torch.Tensor, neox: bool) -> torch.Tensor:
    """x (T, H, D) float32; sin/cos (T, 1, rope_dim) float32."""
    rot = sin.shape[-1]
    xr, rest = x[..., :rot], x[..., rot:]
    if neox:
        x1, x2 = xr[..., : rot // 2], xr[..., rot // 2 :]
        rotated = xr * cos + torch.cat([-x2, x1], dim=-1) * sin
    else:
        c, s = cos[..., : rot // 2], sin[..., : rot // 2]
        x1, x2 = xr[..., 0::2], xr[..., 1::2]
        rotated = torch.stack([x1 * c - x2 * s, x2 * c + x1 * s], dim=-1).flatten(-2)
    return torch.cat([rotated, rest], dim=-1)


@npu_kernel
def split_qkv_rmsnorm_rope(
    input,
    sin,
    cos,
    q_hidden_size,
    kv_hidden_size,
    head_dim,
    eps=None,
    q_weight=None,
    k_weight=None,
    q_bias=None,
    k_bias=None,
    is_neox_style=True,
):
    assert head_dim > 0 and head_dim & (head_dim - 1) == 0, (
        f"head_dim must be a power of two, got {head_dim}"
    )
    assert kv_hidden_size > 0 and q_hidden_size % kv_hidden_size == 0, (
        f"q_hidden_size {q_hidden_size} must be a multiple of kv_hidden_size {kv_hidden_size}"
    )
    total = q_hidden_size + 2 * kv_hidden_size
    if input.dim() != 2 or input.shape[1] != total:
        raise ValueError(
            f"input must be (num_tokens, q_hidden_size + 2 * kv_hidden_size = {total}), got "
            f"{tuple(input.shape)}"
        )
    tokens = input.shape[0]
    rope_dim = sin.shape[-1]
    if rope_dim > head_dim or rope_dim % 2 or cos.shape[-1] != rope_dim:
        raise ValueError(
            f"sin/cos must end in an even rope_dim <= head_dim {head_dim}, got "
            f"{tuple(sin.shape)} and {tuple(cos.shape)}"
        )
    if sin.numel() != tokens * rope_dim or cos.numel() != tokens * rope_dim:
        raise ValueError(
            f"sin/cos must hold one row of {rope_dim} values per token ({tokens}), got "
            f"{tuple(sin.shape)} and {tuple(cos.shape)}"
        )
    x = host(input)
    s = host(sin).reshape(tokens, 1, rope_dim).float()
    c = host(cos).reshape(tokens, 1, rope_dim).float()
    q_out = torch.empty(tokens, q_hidden_size, dtype=input.dtype, device=input.device)
    k_out = torch.empty(tokens, kv_hidden_size, dtype=input.dtype, device=input.device)
    v_out = torch.empty(tokens, kv_hidden_size, dtype=input.dtype, device=input.device)
    parts = x.split([q_hidden_size, kv_hidden_size, kv_hidden_size], dim=-1)
    for part, out, weight, bias in (
        (parts[0], q_out, q_weight, q_bias),
        (parts[1], k_out, k_weight, k_bias),
    ):
        heads = part.float().reshape(tokens, -1, head_dim)
        if eps is not None:
            heads = _rms(heads, eps, weight, bias)
        host(out).copy_(_rope(heads, s, c, bool(is_neox_style)).reshape(tokens, -1))
    host(v_out).copy_(parts[2])
    return q_out, k_out, v_out


split_qkvgate_gemma_rmsnorm_rope = Unemulated(__name__, "split_qkvgate_gemma_rmsnorm_rope")
