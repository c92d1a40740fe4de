"""The public op API (npu_platform.ops) on the emulated NPU, its backend choice and counter.

The ops run on ``npu`` tensors through the emulated torch_npu and are compared with plain
torch (float32, on the CPU) computed from the same inputs.
"""

from __future__ import annotations

import dataclasses
import random
import sys
import threading
import types

import pytest
import torch

from npu_platform import detect as detect_mod
from npu_platform import ops
from npu_platform.emulation.kernels import EMULATED
from npu_platform.errors import EnvironmentProblem
from tests._ops_helpers import (
    PagedBatch,
    gptj_rotary,
    make_paged_batch,
    naive_attention,
    neox_rotary,
)
from tests._ops_helpers import assert_close as _assert_close_cpu

FLOATS = [torch.float32, torch.bfloat16]
NPU = "npu:0"  # a torch.device("npu") exists only once the emulated torch_npu is loaded


@pytest.fixture
def npu_emulated(emulated):
    """The emulated NPU with its torch_npu loaded (tests/conftest.py), op counts at zero."""
    ops.reset_op_counts()
    yield
    ops.reset_op_counts()


def npu(t: torch.Tensor) -> torch.Tensor:
    return t.to(NPU)


def npu_batch(batch: PagedBatch) -> PagedBatch:
    """The same batch with its tensors on the npu device."""
    return dataclasses.replace(
        batch,
        query=npu(batch.query),
        key_cache=npu(batch.key_cache),
        value_cache=npu(batch.value_cache),
        block_table=npu(batch.block_table),
    )


def assert_close(actual: torch.Tensor, expected: torch.Tensor, dtype: torch.dtype) -> None:
    """An op's result, on the npu device, against a CPU reference."""
    assert actual.device.type == "npu", f"the result is on {actual.device}, not on npu"
    _assert_close_cpu(actual.cpu(), expected, dtype)


def _seed(request: pytest.FixtureRequest) -> int:
    return sum(map(ord, request.node.nodeid)) * 104729 % 100003


# --------------------------------------------------------------------------- backend choice


def test_backend_follows_detection(npu_emulated) -> None:
    import torch_npu

    assert ops.backend() is torch_npu
    assert detect_mod._emulated_torch_npu_loaded(), torch_npu.__file__
    assert torch.npu is torch_npu.npu


def test_a_wrong_keyword_is_refused_before_torch_npu_is_called(
    npu_emulated, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch_npu

    calls: list[tuple] = []
    real = torch_npu.npu_rms_norm

    def recording(*args, **kwargs):
        calls.append((args, kwargs))
        return real(*args, **kwargs)

    monkeypatch.setattr(torch_npu, "npu_rms_norm", recording)
    x, w = npu(torch.randn(2, 8)), npu(torch.ones(8))
    with pytest.raises(ops.ContractError, match="unexpected keyword argument 'eps'.*'epsilon'"):
        ops._call("npu_rms_norm", x, w, eps=1e-6)
    assert calls == []
    assert ops.op_counts() == {}
    y = ops.rms_norm(x, w, 1e-6)  # the public op spells it right
    assert len(calls) == 1 and calls[0][1] == {"epsilon": 1e-6}
    assert str(y.device) == NPU
    assert ops.op_counts() == {"npu_rms_norm": 1}


def test_no_npu_raises_environment_problem(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        detect_mod, "_cached", detect_mod.Detection(detect_mod.Target.NONE, "no torch_npu here")
    )
    with pytest.raises(EnvironmentProblem, match="no torch_npu here"):
        ops.rms_norm(torch.ones(2, 2), torch.ones(2), 1e-6)


def test_real_npu_path_checks_the_contract_before_calling(monkeypatch: pytest.MonkeyPatch) -> None:
    """On REAL, a call torch_npu's schema or documented rules refuse never reaches
    ``torch_npu.<op>``."""
    calls: list[str] = []
    fake = types.ModuleType("torch_npu")
    fake.npu_rms_norm = lambda *a, **k: calls.append("npu_rms_norm")
    monkeypatch.setitem(sys.modules, "torch_npu", fake)
    monkeypatch.setattr(
        detect_mod, "_cached", detect_mod.Detection(detect_mod.Target.REAL, "test", 1)
    )
    ops.reset_op_counts()
    x, w = torch.ones(2, 8), torch.ones(8)
    with pytest.raises(ops.ContractError, match="npu_rms_norm.*'eps'"):
        ops._call("npu_rms_norm", x, w, eps=1e-6)
    with pytest.raises(ops.ContractError, match="npu_rms_norm"):
        ops._call("npu_rms_norm", x)  # gamma missing
    with pytest.raises(ops.RuleViolation, match=r"rms_norm\.self.*_op_plugin_docs\.py line 3447"):
        ops._call("npu_rms_norm", torch.ones(8), torch.ones(8))  # documented: 2 to 8 dims
    assert calls == []
    assert ops.op_counts() == {}
    ops._call("npu_rms_norm", x, w, epsilon=1e-6)
    assert calls == ["npu_rms_norm"]


def test_real_npu_path_calls_the_torch_npu_module(monkeypatch: pytest.MonkeyPatch) -> None:
    """On REAL the ops call ``torch_npu.<op>`` with the arguments the emulator checks."""
    calls: list[str] = []
    fake = types.ModuleType("torch_npu")

    def forward(name):
        def fn(*args, **kwargs):
            calls.append(name)
            return getattr(EMULATED, name)(*args, **kwargs)  # the CPU references

        return fn

    for name in ("npu_rms_norm", "npu_swiglu", "npu_rotary_mul"):
        setattr(fake, name, forward(name))
    monkeypatch.setitem(sys.modules, "torch_npu", fake)
    monkeypatch.setattr(
        detect_mod, "_cached", detect_mod.Detection(detect_mod.Target.REAL, "test", 1)
    )
    ops.reset_op_counts()
    assert ops.backend() is fake
    x = torch.randn(3, 8)
    ops.rms_norm(x, torch.ones(8), 1e-6)
    ops.silu_and_mul(x)
    cos, sin = torch.rand(3, 2), torch.rand(3, 2)
    ops.rotary_embedding(x.reshape(3, 2, 4), None, cos, sin, is_neox=True)
    assert calls == ["npu_rms_norm", "npu_swiglu", "npu_rotary_mul"]
    assert ops.op_counts() == {"npu_rms_norm": 1, "npu_swiglu": 1, "npu_rotary_mul": 1}


# --------------------------------------------------------------------------- norms, activation


@pytest.mark.parametrize("dtype", FLOATS)
def test_rms_norm_and_add_rms_norm(npu_emulated, dtype, request) -> None:
    torch.manual_seed(_seed(request))
    x, res = torch.randn(5, 64).to(dtype), torch.randn(5, 64).to(dtype)
    w = torch.randn(64).to(dtype)

    def vllm_rms(t):  # vLLM RMSNorm.forward_native, in float32
        t = t.float()
        return t * torch.rsqrt(t.pow(2).mean(-1, keepdim=True) + 1e-6) * w.float()

    assert_close(ops.rms_norm(npu(x), npu(w), 1e-6), vllm_rms(x), dtype)
    out, new_res = ops.add_rms_norm(npu(x), npu(res), npu(w), 1e-6)
    summed = x.float() + res.float()
    assert_close(new_res, summed, dtype)
    assert_close(out, vllm_rms(summed), dtype)
    assert ops.op_counts() == {"npu_rms_norm": 1, "npu_add_rms_norm": 1}


@pytest.mark.parametrize("dtype", FLOATS)
def test_silu_and_mul_matches_vllm(npu_emulated, dtype, request) -> None:
    torch.manual_seed(_seed(request))
    x = torch.randn(4, 3, 20).to(dtype)
    d = x.shape[-1] // 2
    expected = torch.nn.functional.silu(x[..., :d].float()) * x[..., d:].float()
    assert_close(ops.silu_and_mul(npu(x)), expected, dtype)


# --------------------------------------------------------------------------- rotary


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("is_neox", [True, False])
@pytest.mark.parametrize("rotary_dim", [32, 16])
def test_rotary_embedding(npu_emulated, dtype, is_neox, rotary_dim, request) -> None:
    torch.manual_seed(_seed(request))
    t, nq, nk, d = 7, 4, 2, 32
    q, k = torch.randn(t, nq, d).to(dtype), torch.randn(t, nk, d).to(dtype)
    angles = torch.rand(t, rotary_dim // 2) * 6.3
    cos, sin = torch.cos(angles).to(dtype).float(), torch.sin(angles).to(dtype).float()
    q_npu, k_npu, cos_npu, sin_npu = npu(q), npu(k), npu(cos), npu(sin)
    q_out, k_out = ops.rotary_embedding(q_npu, k_npu, cos_npu, sin_npu, is_neox=is_neox)
    rope = neox_rotary if is_neox else gptj_rotary
    for out, x in ((q_out, q), (k_out, k)):
        expected = torch.cat((rope(x[..., :rotary_dim], cos, sin), x[..., rotary_dim:].float()), -1)
        assert out.shape == x.shape and out.dtype == dtype
        assert_close(out, expected, dtype)
    assert torch.equal(q_npu.cpu(), q) and torch.equal(k_npu.cpu(), k)  # inputs untouched
    # the flattened (T, N * D) form used by vLLM's rotary layers
    q2, k2 = ops.rotary_embedding(
        q_npu.reshape(t, -1), k_npu.reshape(t, -1), cos_npu, sin_npu, is_neox=is_neox, head_size=d
    )
    assert q2.shape == (t, nq * d) and str(q2.device) == NPU
    assert torch.equal(q2.reshape(t, nq, d).cpu(), q_out.cpu())
    assert torch.equal(k2.reshape(t, nk, d).cpu(), k_out.cpu())
    assert ops.op_counts()["npu_rotary_mul"] == 4


def test_rotary_embedding_argument_errors(npu_emulated) -> None:
    q = npu(torch.randn(3, 2, 8))

    def ones(*shape):
        return torch.ones(*shape, device=NPU)

    with pytest.raises(ValueError, match="head_size"):
        ops.rotary_embedding(q.reshape(3, 16), None, ones(3, 4), ones(3, 4), is_neox=True)
    with pytest.raises(ValueError, match="rotary_dim 16 exceeds head_size 8"):
        ops.rotary_embedding(q, None, ones(3, 8), ones(3, 8), is_neox=True)
    with pytest.raises(ValueError, match=r"\(T, rotary_dim // 2\)"):
        ops.rotary_embedding(q, None, ones(4, 4), ones(4, 4), is_neox=True)
    assert ops.op_counts() == {}


# --------------------------------------------------------------------------- KV cache + attention


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("sliding", [False, True])
def test_write_kv_cache_then_paged_attention(npu_emulated, dtype, sliding, request) -> None:
    """A vLLM-like step: new tokens' K/V go into the cache, then attention reads it back."""
    seed = _seed(request)
    batch = make_paged_batch(seed, dtype, num_heads=8, num_kv_heads=2, head_size=32)
    bs = batch.block_size
    # this step's tokens are the last q_len positions of each request
    slots = []
    for b, (ql, kvl) in enumerate(zip(batch.q_lens, batch.kv_lens, strict=True)):
        for pos in range(kvl - ql, kvl):
            slots.append(int(batch.block_table[b, pos // bs]) * bs + pos % bs)
    t = len(slots)
    # key/value come out of a fused qkv projection: non-contiguous views
    qkv = npu(torch.randn(t, (8 + 2 + 2) * 32).to(dtype))
    _, key, value = qkv.split([8 * 32, 2 * 32, 2 * 32], dim=-1)
    on_npu = npu_batch(batch)
    ops.write_kv_cache(
        key.view(t, 2, 32),
        value.view(t, 2, 32),
        on_npu.key_cache,
        on_npu.value_cache,
        npu(torch.tensor(slots, dtype=torch.int64)),
    )
    # The reference reads the caches as the op left them.
    batch = dataclasses.replace(
        batch, key_cache=on_npu.key_cache.cpu(), value_cache=on_npu.value_cache.cpu()
    )
    new_keys = key.view(t, 2, 32)[: batch.q_lens[0]].cpu()
    assert torch.equal(batch.gather(0)[0][-batch.q_lens[0] :].to(dtype), new_keys)
    window = random.Random(seed).randint(2, 10) if sliding else None
    out = ops.paged_attention(
        on_npu.query,
        on_npu.key_cache,
        on_npu.value_cache,
        block_table=on_npu.block_table,
        query_start_loc=torch.tensor(batch.query_start_loc, dtype=torch.int32),
        seq_lens_kv=torch.tensor(batch.kv_lens, dtype=torch.int32),
        num_heads=8,
        num_kv_heads=2,
        scale=32**-0.5,
        sliding_window=window,
    )
    assert out.shape == batch.query.shape and out.dtype == dtype
    assert_close(out, batch.expected(32**-0.5, causal=True, window=window), dtype)
    assert ops.op_counts() == {"npu_scatter_pa_kv_cache": 1, "npu_fused_infer_attention_score": 1}


def test_paged_attention_modes(npu_emulated, request) -> None:
    dtype = torch.bfloat16
    batch = make_paged_batch(_seed(request), dtype, num_heads=4, num_kv_heads=4)
    on_npu = npu_batch(batch)
    common = dict(
        block_table=on_npu.block_table.long(),  # converted to int32 by the public op
        query_start_loc=batch.query_start_loc,
        seq_lens_kv=batch.kv_lens,
        num_heads=4,
        num_kv_heads=4,
        scale=0.2,
    )
    out = ops.paged_attention(
        on_npu.query, on_npu.key_cache, on_npu.value_cache, causal=False, **common
    )
    assert_close(out, batch.expected(0.2, causal=False), dtype)
    with pytest.raises(ValueError, match="causal=True"):
        ops.paged_attention(
            on_npu.query,
            on_npu.key_cache,
            on_npu.value_cache,
            causal=False,
            sliding_window=4,
            **common,
        )
    with pytest.raises(ValueError, match="start with 0"):
        ops.paged_attention(
            on_npu.query,
            on_npu.key_cache,
            on_npu.value_cache,
            **dict(common, query_start_loc=batch.query_start_loc[1:]),
        )
    with pytest.raises(ops.ContractError, match="float32"):
        ops.paged_attention(
            on_npu.query.float(), on_npu.key_cache.float(), on_npu.value_cache.float(), **common
        )


@pytest.mark.parametrize("dtype", FLOATS)
def test_fusion_attention_like_flash_attn(npu_emulated, dtype, request) -> None:
    torch.manual_seed(_seed(request))
    rng = random.Random(_seed(request))
    q_lens = [rng.randint(1, 6) for _ in range(3)]
    kv_lens = [ql + rng.randint(0, 5) for ql in q_lens]
    n, nkv, d = 4, 2, 16
    q = torch.randn(sum(q_lens), n, d).to(dtype)
    k, v = (torch.randn(sum(kv_lens), nkv, d).to(dtype) for _ in range(2))
    cu_q = [0, *torch.tensor(q_lens).cumsum(0).tolist()]
    cu_k = [0, *torch.tensor(kv_lens).cumsum(0).tolist()]
    q_npu, k_npu, v_npu = npu(q), npu(k), npu(v)
    for causal, window in ((True, None), (False, None), (True, (2, 0)), (False, (1, 1))):
        out = ops.fusion_attention(
            q_npu,
            k_npu,
            v_npu,
            num_heads=n,
            scale=0.3,
            layout="TND",
            cu_seqlens_q=torch.tensor(cu_q, dtype=torch.int32),
            cu_seqlens_kv=cu_k,
            causal=causal,
            window=window,
        )
        expected = []
        for b in range(3):
            qb = q[cu_q[b] : cu_q[b + 1]].float()
            kb, vb = k[cu_k[b] : cu_k[b + 1]].float(), v[cu_k[b] : cu_k[b + 1]].float()
            if window == (1, 1):  # non-causal band: |i_abs - j| <= 1
                sq, skv = qb.shape[0], kb.shape[0]
                pos = torch.arange(sq).unsqueeze(1) + skv - sq
                keep = (torch.arange(skv) - pos).abs() <= 1
                s = torch.einsum("qnd,knd->nqk", qb, kb.repeat_interleave(2, 1)) * 0.3
                p = torch.softmax(s.masked_fill(~keep, float("-inf")), -1)
                expected.append(torch.einsum("nqk,knd->qnd", p, vb.repeat_interleave(2, 1)))
            else:
                w = None if window is None else window[0] + 1
                expected.append(naive_attention(qb, kb, vb, 0.3, causal=causal, window=w))
        assert_close(out, torch.cat(expected), dtype)
    # BSND, the default layout
    qb, kb = q[None, :4], k[None, :6]
    out = ops.fusion_attention(npu(qb), npu(kb), npu(kb), num_heads=n, scale=0.3, causal=True)
    assert_close(
        out[0],
        naive_attention(qb[0].float(), kb[0].float(), kb[0].float(), 0.3, causal=True),
        dtype,
    )
    assert ops.op_counts() == {"npu_fusion_attention": 5}
    with pytest.raises(ValueError, match="cu_seqlens"):
        ops.fusion_attention(q_npu, k_npu, v_npu, num_heads=n, scale=0.3, layout="TND")


# --------------------------------------------------------------------------- counter


def test_op_counter_is_thread_safe(npu_emulated) -> None:
    x, w = npu(torch.randn(2, 8)), npu(torch.ones(8))

    def work():
        for _ in range(25):
            ops.rms_norm(x, w, 1e-6)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert ops.op_counts() == {"npu_rms_norm": 100}
    counts = ops.op_counts()
    counts["npu_rms_norm"] = 0  # a copy
    assert ops.op_counts()["npu_rms_norm"] == 100
    ops.reset_op_counts()
    assert ops.op_counts() == {}


def test_paged_attention_needs_contiguous_caches(npu_emulated) -> None:
    kv = torch.zeros(4, 2, 16, 2, 8, dtype=torch.bfloat16, device=NPU)  # K and V strided
    q = torch.zeros(1, 2, 8, dtype=torch.bfloat16, device=NPU)
    with pytest.raises(ValueError, match="contiguous"):
        ops.paged_attention(
            q,
            kv[:, 0],
            kv[:, 1],
            block_table=torch.zeros(1, 1, dtype=torch.int32, device=NPU),
            query_start_loc=[0, 1],
            seq_lens_kv=[1],
            num_heads=2,
            num_kv_heads=2,
            scale=1.0,
        )
