"""The CPU references against plain PyTorch math, on fresh random inputs.

Tolerances (tests/_ops_helpers.TOL): float32 atol = rtol = 1e-5; float16 2e-3; bfloat16 2e-2,
always against float32 math on the same low-precision inputs.
"""

from __future__ import annotations

import random

import pytest
import torch

from npu_platform.emulation.kernels import EMULATED as NPU
from tests._ops_helpers import (
    assert_close,
    causal_mask_2048,
    gptj_rotary,
    make_paged_batch,
    naive_attention,
    neox_rotary,
)

FLOATS = [torch.float32, torch.bfloat16]


def _seed(request: pytest.FixtureRequest) -> int:
    """A per-test seed (different for every test and parameter set, stable across runs)."""
    return sum(map(ord, request.node.nodeid)) * 7919 % 100003


# --------------------------------------------------------------------------- norms


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("shape", [(7, 64), (2, 5, 48)])
def test_rms_norm(dtype, shape, request) -> None:
    torch.manual_seed(_seed(request))
    x = torch.randn(shape).to(dtype)
    w = (torch.rand(shape[-1]) + 0.5).to(dtype)
    y, rstd = NPU.npu_rms_norm(x, w, epsilon=1e-5)
    xf = x.float()
    expected_rstd = 1 / torch.sqrt(xf.pow(2).mean(-1, keepdim=True) + 1e-5)
    assert y.dtype == dtype and y.shape == x.shape
    assert rstd.dtype == torch.float32 and rstd.shape == (*shape[:-1], 1)
    assert_close(y, xf * expected_rstd * w.float(), dtype)
    torch.testing.assert_close(rstd, expected_rstd, atol=1e-5, rtol=1e-5)


def test_rms_norm_over_two_gamma_dimensions(request) -> None:
    torch.manual_seed(_seed(request))
    x, w = torch.randn(3, 4, 8), torch.randn(4, 8)
    y, rstd = NPU.npu_rms_norm(x, w)  # default epsilon 1e-6
    assert rstd.shape == (3, 1, 1)
    expected = x / torch.sqrt(x.pow(2).mean(dim=(1, 2), keepdim=True) + 1e-6) * w
    assert_close(y, expected, torch.float32)


@pytest.mark.parametrize("dtype", FLOATS)
def test_add_rms_norm(dtype, request) -> None:
    torch.manual_seed(_seed(request))
    x1, x2 = torch.randn(9, 32).to(dtype), torch.randn(9, 32).to(dtype)
    w = torch.randn(32).to(dtype)
    y, rstd, x = NPU.npu_add_rms_norm(x1, x2, w, 1e-6)
    s = x1.float() + x2.float()
    assert x.dtype == dtype and rstd.shape == (9, 1)
    assert_close(x, s, dtype)
    assert_close(y, s / torch.sqrt(s.pow(2).mean(-1, keepdim=True) + 1e-6) * w.float(), dtype)


# --------------------------------------------------------------------------- rotary


def _cos_sin(t: int, half: int) -> tuple[torch.Tensor, torch.Tensor]:
    angles = torch.rand(t, half) * 6.3
    return torch.cos(angles), torch.sin(angles)


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("mode", ["half", "interleave"])
def test_rotary_mul_bsnd(dtype, mode, request) -> None:
    torch.manual_seed(_seed(request))
    t, n, d = 6, 3, 16
    x = torch.randn(1, t, n, d).to(dtype)
    # the tables are rounded to dtype before use; the expected math uses the rounded values
    cos, sin = (c.to(dtype).float() for c in _cos_sin(t, d // 2))
    if mode == "half":
        r1, r2 = torch.cat((cos, cos), -1), torch.cat((sin, sin), -1)
        expected = neox_rotary(x[0], cos, sin)
    else:
        r1, r2 = cos.repeat_interleave(2, -1), sin.repeat_interleave(2, -1)
        expected = gptj_rotary(x[0], cos, sin)
    r1, r2 = r1.reshape(1, t, 1, d).to(dtype), r2.reshape(1, t, 1, d).to(dtype)
    out = NPU.npu_rotary_mul(x, r1, r2, rotary_mode=mode)
    assert out.shape == x.shape and out.dtype == dtype
    assert_close(out[0], expected, dtype)


@pytest.mark.parametrize("mode", ["half", "interleave"])
def test_rotary_mul_with_rotate_matrix_matches_the_mode(mode, request) -> None:
    torch.manual_seed(_seed(request))
    d = 8
    x = torch.randn(2, 3, 5, d)  # BNSD with r1 laid out 11SD
    r1, r2 = torch.randn(1, 1, 5, d), torch.randn(1, 1, 5, d)
    rotate = torch.zeros(d, d)
    if mode == "interleave":  # torch_npu docs, example 2
        for i in range(0, d, 2):
            rotate[i, i + 1] = 1
            rotate[i + 1, i] = -1
    else:  # example 3
        rotate[: d // 2, d // 2 :] = torch.eye(d // 2)
        rotate[d // 2 :, : d // 2] = -torch.eye(d // 2)
    by_matrix = NPU.npu_rotary_mul(x, r1, r2, mode, rotate)
    by_mode = NPU.npu_rotary_mul(x, r1, r2, mode)
    assert_close(by_matrix, by_mode, torch.float32)


@pytest.mark.parametrize("dtype", FLOATS)
def test_apply_rotary_pos_emb_tnd_in_place(dtype, request) -> None:
    torch.manual_seed(_seed(request))
    t, d = 5, 64
    q, k = torch.randn(t, 4, d).to(dtype), torch.randn(t, 2, d).to(dtype)
    cos, sin = (c.to(dtype).float() for c in _cos_sin(t, d // 2))
    c = torch.cat((cos, cos), -1).unsqueeze(1).to(dtype)
    s = torch.cat((sin, sin), -1).unsqueeze(1).to(dtype)
    eq, ek = neox_rotary(q, cos, sin), neox_rotary(k, cos, sin)
    q_out, k_out = NPU.npu_apply_rotary_pos_emb(q, k, c, s, layout="TND")
    assert q_out is q and k_out is k
    assert_close(q, eq, dtype)
    assert_close(k, ek, dtype)


# --------------------------------------------------------------------------- swiglu


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("dim", [-1, 0])
def test_swiglu_gate_is_the_first_half(dtype, dim, request) -> None:
    torch.manual_seed(_seed(request))
    x = torch.randn(6, 10).to(dtype)
    out = NPU.npu_swiglu(x, dim=dim)
    a, b = x.float().chunk(2, dim=dim)
    assert out.dtype == dtype and out.shape == a.shape
    assert_close(out, a * torch.sigmoid(a) * b, dtype)


# --------------------------------------------------------------------------- KV cache write


@pytest.mark.parametrize("dtype", FLOATS)
def test_scatter_pa_kv_cache_norm(dtype, request) -> None:
    seed = _seed(request)
    torch.manual_seed(seed)
    nb, bs, h, dk, dv, t = 5, 16, 2, 16, 8, 23
    k, v = torch.randn(t, h, dk).to(dtype), torch.randn(t, h, dv).to(dtype)
    kc, vc = torch.randn(nb, bs, h, dk).to(dtype), torch.randn(nb, bs, h, dv).to(dtype)
    before_k, before_v = kc.clone(), vc.clone()
    slots = torch.randperm(nb * bs)[:t].to(torch.int32)
    assert NPU.npu_scatter_pa_kv_cache(k, v, kc, vc, slots, cache_mode="Norm") is None
    written = set(slots.tolist())
    for slot in range(nb * bs):
        blk, off = divmod(slot, bs)
        if slot in written:
            i = slots.tolist().index(slot)
            assert torch.equal(kc[blk, off], k[i]) and torch.equal(vc[blk, off], v[i])
        else:
            assert torch.equal(kc[blk, off], before_k[blk, off])
            assert torch.equal(vc[blk, off], before_v[blk, off])


# --------------------------------------------------------------------------- FIA (paged, TND)


def _fia(batch, scale, *, cache_4d=False, **kw):
    nb, bs, nkv, d = batch.key_cache.shape
    if cache_4d:  # (num_blocks, N_kv, block_size, D)
        kc = batch.key_cache.transpose(1, 2).contiguous()
        vc = batch.value_cache.transpose(1, 2).contiguous()
    else:  # (num_blocks, block_size, N_kv * D)
        kc = batch.key_cache.view(nb, bs, nkv * d)
        vc = batch.value_cache.view(nb, bs, nkv * d)
    return NPU.npu_fused_infer_attention_score(
        batch.query,
        kc,
        vc,
        block_table=batch.block_table,
        block_size=bs,
        actual_seq_lengths=batch.query_start_loc[1:],
        actual_seq_lengths_kv=batch.kv_lens,
        num_heads=batch.query.shape[1],
        num_key_value_heads=nkv,
        scale=scale,
        input_layout="TND",
        **kw,
    )


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("cache_4d", [False, True])
def test_fia_paged_causal_mixed_batch_gqa(dtype, cache_4d, request) -> None:
    batch = make_paged_batch(_seed(request), dtype, num_heads=8, num_kv_heads=2)
    scale = 32**-0.5
    out, lse = _fia(
        batch,
        scale,
        cache_4d=cache_4d,
        sparse_mode=3,
        atten_mask=causal_mask_2048(torch.int8),
        softmax_lse_flag=True,
    )
    assert out.shape == batch.query.shape and out.dtype == dtype
    assert lse.shape == (batch.query.shape[0], 8, 1) and lse.dtype == torch.float32
    assert_close(out, batch.expected(scale, causal=True), dtype)
    # lse of the first request, recomputed directly
    k, _ = batch.gather(0)
    q_len = batch.q_lens[0]
    q = batch.query[:q_len].float()
    scores = torch.einsum("qnd,knd->nqk", q, k.repeat_interleave(4, dim=1)) * scale
    pos = torch.arange(q_len).unsqueeze(1) + k.shape[0] - q_len
    scores = scores.masked_fill(torch.arange(k.shape[0]).unsqueeze(0) > pos, float("-inf"))
    torch.testing.assert_close(
        lse[:q_len, :, 0], torch.logsumexp(scores, -1).T, atol=1e-4, rtol=1e-4
    )


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_fia_paged_non_causal_and_no_lse(dtype, request) -> None:
    batch = make_paged_batch(_seed(request), dtype, num_heads=4, num_kv_heads=4, block_size=256)
    out, lse = _fia(batch, 0.3)  # sparse_mode 0 without a mask: no masking
    assert lse.shape == (1,) and float(lse[0]) == 0.0
    assert_close(out, batch.expected(0.3, causal=False), dtype)


def test_fia_sliding_window_band(request) -> None:
    dtype = torch.bfloat16
    batch = make_paged_batch(_seed(request), dtype, num_heads=4, num_kv_heads=1)
    window = random.Random(_seed(request)).randint(3, 12)
    out, _ = _fia(
        batch,
        0.2,
        sparse_mode=4,
        atten_mask=causal_mask_2048(),
        pre_tokens=window - 1,
        next_tokens=0,
    )
    assert_close(out, batch.expected(0.2, causal=True, window=window), dtype)


def test_fia_tnd_without_paging(request) -> None:
    torch.manual_seed(_seed(request))
    dtype = torch.bfloat16
    q_lens, kv_lens = [3, 1, 5], [3, 9, 12]
    q = torch.randn(sum(q_lens), 4, 16).to(dtype)
    k = torch.randn(sum(kv_lens), 2, 16).to(dtype)
    v = torch.randn(sum(kv_lens), 2, 16).to(dtype)
    q_ends = torch.tensor(q_lens).cumsum(0).tolist()
    kv_ends = torch.tensor(kv_lens).cumsum(0).tolist()
    out, _ = NPU.npu_fused_infer_attention_score(
        q,
        k,
        v,
        actual_seq_lengths=q_ends,
        actual_seq_lengths_kv=kv_ends,
        num_heads=4,
        num_key_value_heads=2,
        scale=0.25,
        input_layout="TND",
        sparse_mode=3,
        atten_mask=causal_mask_2048(),
    )
    expected = []
    for qs, qe, ks, ke in zip([0, *q_ends[:-1]], q_ends, [0, *kv_ends[:-1]], kv_ends, strict=True):
        expected.append(naive_attention(q[qs:qe].float(), k[ks:ke], v[ks:ke], 0.25, causal=True))
    assert_close(out, torch.cat(expected), dtype)


def test_fia_padded_tail_tokens_are_zero(request) -> None:
    batch = make_paged_batch(_seed(request), torch.bfloat16, num_heads=2, num_kv_heads=2)
    padded = torch.cat((batch.query, torch.randn(3, 2, 32).to(torch.bfloat16)))
    batch.query = padded
    out, _ = _fia(batch, 0.5, sparse_mode=3, atten_mask=causal_mask_2048())
    assert out.shape[0] == padded.shape[0]
    assert torch.count_nonzero(out[-3:]) == 0


# --------------------------------------------------------------------------- FA


def _fa_expected(q, k, v, scale, *, causal=False, window=None, left_up=False):
    """BSND inputs -> BSND float32 output."""
    return torch.stack(
        [
            naive_attention(
                q[b].float(),
                k[b].float(),
                v[b].float(),
                scale,
                causal=causal,
                window=window,
                left_up=left_up,
            )
            for b in range(q.shape[0])
        ]
    )


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("causal", [False, True])
def test_fusion_attention_bsnd_gqa(dtype, causal, request) -> None:
    torch.manual_seed(_seed(request))
    b, sq, skv, n, nkv, d = 2, 5, 9, 6, 2, 16
    q = torch.randn(b, sq, n, d).to(dtype)
    k, v = torch.randn(b, skv, nkv, d).to(dtype), torch.randn(b, skv, nkv, d).to(dtype)
    kw = {"atten_mask": causal_mask_2048(), "sparse_mode": 3} if causal else {}
    out, smax, ssum, sout, seed, offset, numels = NPU.npu_fusion_attention(
        q, k, v, n, "BSND", scale=0.3, **kw
    )
    assert out.shape == q.shape and out.dtype == dtype
    assert smax.shape == (b, n, sq, 8) and ssum.shape == (b, n, sq, 8)
    assert sout.numel() == 0 and (seed, offset, numels) == (0, 0, 0)
    assert_close(out, _fa_expected(q, k, v, 0.3, causal=causal), dtype)
    # max/sum describe the softmax: out == sum_j exp(s_ij - max_i) / sum_i * v_j
    s = torch.einsum("bqnd,bknd->bnqk", q.float(), k.float().repeat_interleave(3, dim=2)) * 0.3
    if causal:
        pos = torch.arange(sq).unsqueeze(1) + skv - sq
        s = s.masked_fill(torch.arange(skv) > pos, float("-inf"))
    torch.testing.assert_close(smax[..., 0], s.amax(-1), atol=1e-4, rtol=1e-4)
    lse = smax[..., 0] + torch.log(ssum[..., 0])
    torch.testing.assert_close(lse, torch.logsumexp(s, -1), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("dtype", FLOATS)
def test_fusion_attention_tnd_varlen(dtype, request) -> None:
    torch.manual_seed(_seed(request))
    rng = random.Random(_seed(request))
    q_lens = [rng.randint(1, 7) for _ in range(3)]
    kv_lens = [ql + rng.randint(0, 6) for ql in q_lens]
    n, nkv, d = 4, 2, 8
    q = torch.randn(sum(q_lens), n, d).to(dtype)
    k, v = torch.randn(sum(kv_lens), nkv, d).to(dtype), torch.randn(sum(kv_lens), nkv, d).to(dtype)
    q_ends = torch.tensor(q_lens).cumsum(0).tolist()
    kv_ends = torch.tensor(kv_lens).cumsum(0).tolist()
    out, smax, *_ = NPU.npu_fusion_attention(
        q,
        k,
        v,
        n,
        "TND",
        scale=0.5,
        atten_mask=causal_mask_2048(torch.uint8),
        sparse_mode=3,
        actual_seq_qlen=q_ends + [0],  # a trailing batch that takes no part
        actual_seq_kvlen=kv_ends + [0],
    )
    assert out.shape == q.shape and smax.shape == (q.shape[0], n, 8)
    expected = [
        naive_attention(q[qs:qe].float(), k[ks:ke].float(), v[ks:ke].float(), 0.5, causal=True)
        for qs, qe, ks, ke in zip(
            [0, *q_ends[:-1]], q_ends, [0, *kv_ends[:-1]], kv_ends, strict=True
        )
    ]
    assert_close(out, torch.cat(expected), dtype)


def test_fusion_attention_layouts_agree(request) -> None:
    torch.manual_seed(_seed(request))
    b, s, n, d = 2, 4, 4, 8
    q, k, v = (torch.randn(b, s, n, d) for _ in range(3))
    ref = NPU.npu_fusion_attention(q, k, v, n, "BSND", scale=0.4)[0]
    bnsd = NPU.npu_fusion_attention(*(t.transpose(1, 2) for t in (q, k, v)), n, "BNSD", scale=0.4)
    assert_close(bnsd[0].transpose(1, 2), ref, torch.float32)
    bsh = NPU.npu_fusion_attention(
        *(t.reshape(b, s, n * d) for t in (q, k, v)), n, "BSH", scale=0.4
    )
    assert_close(bsh[0], ref.reshape(b, s, n * d), torch.float32)
    sbh = NPU.npu_fusion_attention(
        *(t.reshape(b, s, n * d).transpose(0, 1) for t in (q, k, v)), n, "SBH", scale=0.4
    )
    assert_close(sbh[0].transpose(0, 1), ref.reshape(b, s, n * d), torch.float32)


def test_fusion_attention_masks(request) -> None:
    torch.manual_seed(_seed(request))
    b, sq, skv, n, d = 1, 6, 10, 2, 8
    q, k, v = torch.randn(b, sq, n, d), torch.randn(b, skv, n, d), torch.randn(b, skv, n, d)
    mask = causal_mask_2048()
    left = NPU.npu_fusion_attention(q, k, v, n, "BSND", atten_mask=mask, sparse_mode=2)[0]
    assert_close(left, _fa_expected(q, k, v, 1.0, causal=True, left_up=True), torch.float32)
    band = NPU.npu_fusion_attention(
        q, k, v, n, "BSND", atten_mask=mask, sparse_mode=4, pre_tockens=2, next_tockens=0
    )[0]
    assert_close(band, _fa_expected(q, k, v, 1.0, causal=True, window=3), torch.float32)
    full = torch.rand(sq, skv) > 0.5
    full[:, 0] = False  # every row keeps at least one key
    out = NPU.npu_fusion_attention(q, k, v, n, "BSND", atten_mask=full, sparse_mode=0)[0]
    s = torch.einsum("qnd,knd->nqk", q[0], k[0]).masked_fill(full, float("-inf"))
    expected = torch.einsum("nqk,knd->qnd", torch.softmax(s, -1), v[0])
    assert_close(out[0], expected, torch.float32)
    # documented: without atten_mask every mode computes the whole matrix
    no_mask = NPU.npu_fusion_attention(q, k, v, n, "BSND", sparse_mode=3)[0]
    assert_close(no_mask, _fa_expected(q, k, v, 1.0, causal=False), torch.float32)
