"""npu_platform's flash_attn (and bert_padding) on the emulated NPU, against plain attention.

Runs in-process: the functions are imported from ``npu_platform.patches`` directly, so no
start-up patch is applied to this test process. Inputs are ``npu`` tensors, as a program
sees them on an Ascend NPU; the references are computed on the CPU.
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from npu_platform.patches import bert_padding as bp  # noqa: E402
from npu_platform.patches import flash_attn as fa  # noqa: E402

from npu_platform import ops  # noqa: E402

D = 16
NPU = "npu"


def naive(q, k, v, *, causal=False, scale=None, window=(-1, -1)):
    """(Sq, N, D), (Sk, Nkv, D) -> (Sq, N, Dv); bottom-right aligned causal/window, float32."""
    sq, sk = q.shape[0], k.shape[0]
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    rep = q.shape[1] // k.shape[1]
    k, v = k.float().repeat_interleave(rep, 1), v.float().repeat_interleave(rep, 1)
    scores = torch.einsum("qhd,khd->hqk", q.float(), k) * scale
    i = torch.arange(sq).unsqueeze(1) + (sk - sq)  # query position in key coordinates
    j = torch.arange(sk).unsqueeze(0)
    allowed = torch.ones(sq, sk, dtype=torch.bool)
    left, right = window
    if causal:
        right = 0
    if left >= 0:
        allowed &= j >= i - left
    if right >= 0:
        allowed &= j <= i + right
    scores = scores.masked_fill(~allowed, float("-inf"))
    probs = torch.nan_to_num(scores.softmax(-1), nan=0.0)
    return torch.einsum("hqk,khd->qhd", probs, v)


def packed(lengths, heads, dtype=torch.float32, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(sum(lengths), heads, D, generator=gen).to(NPU, dtype)


def cu(lengths):
    ends = [0]
    for n in lengths:
        ends.append(ends[-1] + n)
    return torch.tensor(ends, dtype=torch.int32, device=NPU)


def split(x, lengths):
    return torch.split(x.cpu(), list(lengths))


def on_npu(out):
    assert out.device.type == NPU, out.device
    return out.cpu()


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize(("heads", "kv_heads"), [(4, 4), (4, 2), (4, 1)])
def test_varlen_matches_naive_attention(emulated, causal, heads, kv_heads):
    lq, lk = (3, 7, 1), (5, 7, 4)  # queries at the end of longer KV (chunked prefill)
    q, k, v = packed(lq, heads, seed=1), packed(lk, kv_heads, seed=2), packed(lk, kv_heads, seed=3)
    ops.reset_op_counts()
    out = on_npu(fa.flash_attn_varlen_func(q, k, v, cu(lq), cu(lk), 7, 7, causal=causal))
    assert ops.op_counts() == {"npu_fusion_attention": 1}
    ref = torch.cat(
        [
            naive(a, b, c, causal=causal)
            for a, b, c in zip(split(q, lq), split(k, lk), split(v, lk), strict=True)
        ]
    )
    assert out.shape == q.shape
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


def test_varlen_half_precision_scale_and_window(emulated):
    lengths = (6, 9)
    q, k, v = (packed(lengths, h, torch.float16, seed=s) for h, s in ((4, 1), (2, 2), (2, 3)))
    cs = cu(lengths)
    kwargs = {"softmax_scale": 0.3, "causal": True, "window_size": (2, 0)}
    out = on_npu(fa.flash_attn_varlen_func(q, k, v, cs, cs, 9, 9, **kwargs))
    assert out.dtype == torch.float16
    ref = torch.cat(
        [
            naive(a, b, c, causal=True, scale=0.3, window=(2, 0))
            for a, b, c in zip(split(q, lengths), split(k, lengths), split(v, lengths), strict=True)
        ]
    )
    torch.testing.assert_close(out.float(), ref, atol=2e-3, rtol=2e-3)


@pytest.mark.parametrize("causal", [False, True])
def test_batched_func_and_packed_variants(emulated, causal):
    gen = torch.Generator().manual_seed(5)
    b, sq, sk = 2, 3, 5
    q = torch.randn(b, sq, 4, D, generator=gen)
    k = torch.randn(b, sk, 2, D, generator=gen)
    v = torch.randn(b, sk, 2, D, generator=gen)
    ref = torch.stack([naive(q[i], k[i], v[i], causal=causal) for i in range(b)])
    q, k, v = q.to(NPU), k.to(NPU), v.to(NPU)
    out = on_npu(fa.flash_attn_func(q, k, v, causal=causal))
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    kv = torch.stack((k, v), dim=2)
    torch.testing.assert_close(on_npu(fa.flash_attn_kvpacked_func(q, kv, causal=causal)), out)

    qkv = torch.randn(b, sk, 3, 2, D, generator=gen).to(NPU)
    same = on_npu(fa.flash_attn_func(*qkv.unbind(2), causal=causal))
    torch.testing.assert_close(on_npu(fa.flash_attn_qkvpacked_func(qkv, causal=causal)), same)
    lengths = (sk,) * b
    varlen_qkv, cs = qkv.reshape(b * sk, 3, 2, D), cu(lengths)
    torch.testing.assert_close(
        on_npu(fa.flash_attn_varlen_qkvpacked_func(varlen_qkv, cs, sk, causal=causal)),
        same.reshape(b * sk, 2, D),
    )
    torch.testing.assert_close(
        on_npu(
            fa.flash_attn_varlen_kvpacked_func(
                varlen_qkv[:, 0], varlen_qkv[:, 1:], cs, cs, sk, sk, causal=causal
            )
        ),
        same.reshape(b * sk, 2, D),
    )


@pytest.mark.parametrize(
    "kwargs",
    [
        {"dropout_p": 0.1},
        {"softcap": 30.0},
        {"alibi_slopes": "x"},
        {"return_attn_probs": True},
        {"block_table": "x"},
    ],
)
def test_unsupported_options_are_refused(emulated, kwargs):
    q = packed((2,), 2)
    with pytest.raises(NotImplementedError, match="does not support"):
        fa.flash_attn_varlen_func(q, q, q, cu((2,)), cu((2,)), 2, 2, **kwargs)


def test_wrong_rank_is_a_clear_error(emulated):
    q = packed((2,), 2)
    with pytest.raises(ValueError, match=r"q must be 4-D \(batch, seqlen, nheads, headdim\)"):
        fa.flash_attn_func(q, q, q)


def test_bert_padding_round_trip_and_autograd(emulated):
    gen = torch.Generator().manual_seed(9)
    lengths = (3, 1, 4)
    batch, seqlen = len(lengths), 4
    mask = torch.zeros(batch, seqlen, dtype=torch.long, device=NPU)
    for row, n in enumerate(lengths):
        mask[row, :n] = 1
    hidden = torch.randn(batch, seqlen, 2, 3, generator=gen).to(NPU).requires_grad_()
    packed_x, indices, cu_seqlens, max_len, used = bp.unpad_input(hidden, mask)
    for t in (packed_x, indices, cu_seqlens, used):
        assert t.device.type == NPU, t.device
    assert packed_x.shape == (sum(lengths), 2, 3)
    assert cu_seqlens.dtype == torch.int32 and cu_seqlens.tolist() == [0, 3, 4, 8]
    assert max_len == 4 and used.tolist() == list(lengths)
    back = bp.pad_input(packed_x, indices, batch, seqlen)
    torch.testing.assert_close(on_npu(back), (hidden * mask[..., None, None]).cpu())
    back.sum().backward()
    expected = mask[..., None, None].expand_as(hidden).float()
    torch.testing.assert_close(on_npu(hidden.grad), expected.cpu())


def test_unpad_with_unused_mask_and_first_axis_helpers(emulated):
    attention = torch.tensor([[1, 1, 0, 0], [1, 0, 0, 0]], device=NPU)
    unused = torch.tensor([[0, 0, 1, 0], [0, 1, 1, 0]], device=NPU)
    x = torch.arange(8.0, device=NPU).reshape(2, 4)
    packed_x, indices, cu_seqlens, max_len, used = bp.unpad_input(x, attention, unused)
    assert on_npu(packed_x).tolist() == [0.0, 1.0, 2.0, 4.0, 5.0, 6.0]
    assert cu_seqlens.tolist() == [0, 3, 6] and max_len == 3 and used.tolist() == [2, 1]
    table = torch.arange(12.0, device=NPU).reshape(6, 2)
    picked = bp.index_first_axis(table, torch.tensor([4, 0], device=NPU))
    assert on_npu(picked).tolist() == [[8.0, 9.0], [0.0, 1.0]]
    put = bp.index_put_first_axis(picked, torch.tensor([1, 2], device=NPU), 3)
    assert on_npu(put).tolist() == [[0.0, 0.0], [8.0, 9.0], [0.0, 1.0]]
