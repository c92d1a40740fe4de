"""The emulated ATB ops (npu_platform.emulation.kernels.atb) against plain torch math.

The references run on CPU tensors in this process (they need no emulated device); one test
runs them on ``npu`` tensors through ``torch_npu`` in a subprocess with
``NPU_PLATFORM_EMULATE=1``, so this process stays un-emulated.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from npu_platform.emulation.kernels import NoReference, atb
from npu_platform.spec.contract import ContractError, RuleViolation, UnsupportedByReference

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# --------------------------------------------------------------------------- plain math


def dense_attention(q, k, v, scale, causal_offset=None):
    """q (Sq, N, D), k/v (Skv, Nkv, D[v]) -> (Sq, N, Dv) float32, by explicit loops over heads.

    ``causal_offset``: query i may see keys j <= i + offset (None: everything).
    """
    sq, n, _ = q.shape
    skv, nkv, dv = v.shape
    group = n // nkv
    out = torch.zeros(sq, n, dv)
    for h in range(n):
        kh = k[:, h // group].float()
        vh = v[:, h // group].float()
        scores = (q[:, h].float() @ kh.T) * scale
        if causal_offset is not None:
            i = torch.arange(sq)[:, None]
            j = torch.arange(skv)[None, :]
            scores = scores.masked_fill(j > i + causal_offset, float("-inf"))
        out[:, h] = torch.softmax(scores, dim=-1) @ vh
    return out


def make_paged(num_blocks, block_size, nkv, d, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    k = torch.randn(num_blocks, block_size, nkv, d, generator=g).to(dtype)
    v = torch.randn(num_blocks, block_size, nkv, d, generator=g).to(dtype)
    return k, v


def gather_dense(cache, table_row, length):
    """Token t of a request lives in block table_row[t // bs], row t % bs."""
    bs = cache.shape[1]
    rows = [cache[int(table_row[t // bs]), t % bs] for t in range(length)]
    if not rows:
        return cache.new_empty(0, cache.shape[2], cache.shape[3])
    return torch.stack(rows)


def causal_mask(n, dtype):
    """The masks sglang builds (AscendAttnMaskBuilder.generate_attn_mask, 'norm')."""
    flag = ~torch.ones(n, n, dtype=torch.bool).tril()
    value = torch.finfo(torch.float32).min if dtype == torch.float16 else 1
    return torch.zeros(n, n).masked_fill_(flag, value).to(dtype)


def tol(dtype):
    return {"atol": 2e-2, "rtol": 2e-2} if dtype == torch.bfloat16 else {"atol": 3e-3, "rtol": 3e-3}


# --------------------------------------------------------------------------- the header


def test_header_signatures_bind_names_order_and_defaults():
    s = atb.schemas()
    assert s["_npu_paged_attention"].signature() == (
        "_npu_paged_attention(Tensor query, Tensor key_cache, Tensor value_cache, "
        "int num_kv_heads, int num_heads, float scale_value, Tensor block_table, "
        "Tensor context_lens, Tensor(a!) out, Tensor? workspace=None) -> ()"
    )
    assert s["_npu_reshape_and_cache"].arg_names() == [
        "key",
        "value",
        "key_cache",
        "value_cache",
        "slot_indices",
    ]
    assert s["_npu_flash_attention_qlens"].arg_names() == [
        "query",
        "key_cache",
        "value_cache",
        "block_table",
        "mask",
        "seq_len",
        "context_lens",
        "num_kv_heads",
        "num_heads",
        "scale_value",
        "out",
    ]
    assert s["_npu_flash_attention"].arg_names() == [
        "query",
        "key",
        "value",
        "mask",
        "seq_len",
        "scale_value",
        "num_heads",
        "num_kv_heads",
        "out",
    ]
    # every declaration of the header parses; _out variants become .out overloads
    with open(atb.header_path(), encoding="utf-8") as f:
        declared = f.read().count("TORCH_NPU_API")
    assert len(s) == declared
    assert "npu_ring_mla.out" in s
    # an optional parameter before a required one gets no default
    assert not s["npu_fused_add_topk_div"].arg("mapping_num").has_default


def test_parse_header_rejects_unknown_cpp_types():
    from npu_platform.spec.schema import SchemaError

    text = "TORCH_NPU_API void f(const at::Tensor&x, std::vector<int> y);"
    with pytest.raises(SchemaError, match="no schema type for C\\+\\+ type 'std::vector<int>'"):
        atb.parse_header(text)


def test_binding_errors_are_type_errors_naming_the_argument():
    op = atb.ATB_OPS["_npu_reshape_and_cache"]
    k = torch.zeros(2, 1, 16, dtype=torch.float16)
    cache = torch.zeros(1, 16, 1, 16, dtype=torch.float16)
    slots = torch.zeros(2, dtype=torch.int32)
    with pytest.raises(TypeError, match="unexpected keyword argument 'slot_mapping'"):
        op(k, k, cache, cache, slot_mapping=slots)
    with pytest.raises(ContractError, match="missing 1 required argument\\(s\\): 'slot_indices'"):
        op(k, k, cache, cache)
    pa = atb.ATB_OPS["_npu_paged_attention"]
    with pytest.raises(ContractError, match="argument 'num_heads' .*must be int, not str"):
        pa(k, cache, cache, 1, "8", 1.0, slots, slots, k)


def test_op_without_reference_binds_then_says_so():
    op = atb.all_ops()["_npu_reshape_and_cache_siso"]
    with pytest.raises(TypeError, match="missing"):
        op(torch.zeros(1))
    k = torch.zeros(1, 1, 16)
    with pytest.raises(NoReference, match="no reference implementation for the ATB op"):
        op(k, k, torch.zeros(1, dtype=torch.int32))


# --------------------------------------------------------------------------- reshape_and_cache


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_reshape_and_cache_writes_slots_and_skips_negative(dtype):
    num_blocks, bs, nkv, d, dv = 4, 16, 2, 8, 4
    kc = torch.zeros(num_blocks, bs, nkv, d, dtype=dtype)
    vc = torch.zeros(num_blocks, bs, nkv, dv, dtype=dtype)
    slots = torch.tensor([0, 17, -1, 63, 5], dtype=torch.int32)
    key = torch.randn(5, nkv, d).to(dtype)
    value = torch.randn(5, nkv, dv).to(dtype)
    atb.ATB_OPS["_npu_reshape_and_cache"](
        key=key, value=value, key_cache=kc, value_cache=vc, slot_indices=slots
    )
    want_k = torch.zeros_like(kc)
    want_v = torch.zeros_like(vc)
    for t, s in enumerate(slots.tolist()):
        if s < 0:
            continue
        want_k[s // bs, s % bs] = key[t]
        want_v[s // bs, s % bs] = value[t]
    assert torch.equal(kc, want_k)
    assert torch.equal(vc, want_v)


def test_reshape_and_cache_checks():
    """Slots are device data the reference checks; shapes and dtypes are documented rules
    (tests/test_ops_rules.py), checked before the reference runs."""
    op = atb.ATB_OPS["_npu_reshape_and_cache"]
    kc = torch.zeros(2, 16, 1, 8, dtype=torch.float16)
    key = torch.zeros(1, 1, 8, dtype=torch.float16)
    with pytest.raises(ContractError, match="slot 32 is outside the cache"):
        op(key, key, kc, kc, torch.tensor([32], dtype=torch.int32))
    with pytest.raises(RuleViolation, match="atb.reshape_and_cache.shapes"):
        op(key, key, kc.view(2, 16, 8), kc.view(2, 16, 8), torch.tensor([0], dtype=torch.int32))


# --------------------------------------------------------------------------- paged attention


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_paged_attention_matches_dense_math(dtype):
    n, nkv, d, bs, num_blocks = 4, 2, 16, 16, 12
    kc, vc = make_paged(num_blocks, bs, nkv, d, dtype)
    lens = [1, 17, 40, 0]
    table = torch.tensor(
        [[3, 0, 0], [5, 1, 0], [7, 2, 9], [0, 0, 0]], dtype=torch.int32
    )  # padded rows, as sglang builds them
    q = torch.randn(len(lens), n, d).to(dtype)
    out = torch.empty(len(lens), n, d, dtype=dtype)
    scale = 1 / math.sqrt(d)
    atb.ATB_OPS["_npu_paged_attention"](
        query=q,
        key_cache=kc,
        value_cache=vc,
        num_heads=n,
        num_kv_heads=nkv,
        scale_value=scale,
        block_table=table,
        context_lens=torch.tensor(lens, dtype=torch.int32),
        out=out,
    )
    for b, length in enumerate(lens):
        k = gather_dense(kc, table[b], length)
        v = gather_dense(vc, table[b], length)
        want = dense_attention(q[b : b + 1], k, v, scale) if length else torch.zeros(1, n, d)
        torch.testing.assert_close(out[b].float(), want[0], **tol(dtype))


def test_paged_attention_checks():
    op = atb.ATB_OPS["_npu_paged_attention"]
    kc, vc = make_paged(2, 16, 2, 16, torch.float16)
    q = torch.zeros(1, 4, 16, dtype=torch.float16)
    out = torch.empty_like(q)
    table = torch.tensor([[0]], dtype=torch.int32)
    with pytest.raises(ContractError, match="needs 2 blocks for 17 tokens"):
        op(q, kc, vc, 2, 4, 1.0, table, torch.tensor([17], dtype=torch.int32), out)
    with pytest.raises(RuleViolation, match="'num_kv_heads'.*atb.paged_attention.heads"):
        op(q, kc, vc, 3, 4, 1.0, table, torch.tensor([1], dtype=torch.int32), out)
    with pytest.raises(ContractError, match="block ids in \\[5, 5\\]"):
        op(q, kc, vc, 2, 4, 1.0, table + 5, torch.tensor([1], dtype=torch.int32), out)


# --------------------------------------------------------------------------- flash attention


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_flash_attention_qlens_prefix_and_causal(dtype):
    # blocks of 128 and cached prefixes of whole blocks, as ATB's prefix encoder requires
    n, nkv, d, bs, num_blocks = 4, 1, 16, 128, 8
    kc, vc = make_paged(num_blocks, bs, nkv, d, dtype, seed=1)
    q_lens = [5, 20, 1]
    ctx = [5, 148, 257]  # request 1 extends a 128-token prefix, request 2 a 256-token one
    table = torch.tensor([[4, 0, 0], [1, 6, 0], [2, 7, 3]], dtype=torch.int32)
    total = sum(q_lens)
    q = torch.randn(total, n * d).to(dtype)  # sglang passes (T, N*D)
    out = torch.full((total, n * d), float("nan"), dtype=dtype)
    scale = 0.3
    atb.ATB_OPS["_npu_flash_attention_qlens"](
        query=q,
        key_cache=kc,
        value_cache=vc,
        mask=causal_mask(128, dtype),
        block_table=table,
        seq_len=torch.tensor(q_lens, dtype=torch.int32),
        context_lens=torch.tensor(ctx, dtype=torch.int32),
        scale_value=scale,
        num_heads=n,
        num_kv_heads=nkv,
        out=out,
    )
    start = 0
    for b, (ql, kl) in enumerate(zip(q_lens, ctx, strict=True)):
        k = gather_dense(kc, table[b], kl)
        v = gather_dense(vc, table[b], kl)
        qb = q[start : start + ql].view(ql, n, d)
        want = dense_attention(qb, k, v, scale, causal_offset=kl - ql)
        got = out[start : start + ql].view(ql, n, d).float()
        torch.testing.assert_close(got, want, **tol(dtype))
        start += ql


def test_flash_attention_qlens_refuses_a_non_causal_mask():
    op = atb.ATB_OPS["_npu_flash_attention_qlens"]
    kc, vc = make_paged(2, 128, 1, 16, torch.float16)
    q = torch.zeros(2, 16, dtype=torch.float16)
    args = dict(
        query=q,
        key_cache=kc,
        value_cache=vc,
        block_table=torch.tensor([[0]], dtype=torch.int32),
        seq_len=torch.tensor([2], dtype=torch.int32),
        context_lens=torch.tensor([2], dtype=torch.int32),
        num_kv_heads=1,
        num_heads=1,
        scale_value=1.0,
        out=torch.empty_like(q),
    )
    with pytest.raises(UnsupportedByReference, match="mask=.*is not implemented"):
        op(mask=torch.zeros(128, 128, dtype=torch.float16), **args)
    with pytest.raises(ContractError, match="query lengths sum to 3 but query has 2"):
        three = torch.tensor([3], dtype=torch.int32)
        op(
            mask=causal_mask(128, torch.float16),
            **{**args, "seq_len": three, "context_lens": three},
        )


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_flash_attention_without_cache(dtype):
    n, nkv, d = 4, 2, 16
    lens = [3, 7]
    total = sum(lens)
    q = torch.randn(total, n, d).to(dtype)
    k = torch.randn(total, nkv, d).to(dtype)
    v = torch.randn(total, nkv, d).to(dtype)
    out = torch.empty(total, n, d, dtype=dtype)
    atb.ATB_OPS["_npu_flash_attention"](
        q, k, v, causal_mask(16, dtype), torch.tensor(lens, dtype=torch.int32), 0.25, n, nkv, out
    )
    start = 0
    for length in lens:
        sl = slice(start, start + length)
        want = dense_attention(q[sl], k[sl], v[sl], 0.25, causal_offset=0)
        torch.testing.assert_close(out[sl].float(), want, **tol(dtype))
        start += length


# --------------------------------------------------------------------------- emulated npu


EMULATED_SCRIPT = textwrap.dedent(
    """
    import math
    import torch
    import torch_npu  # noqa: F401  (the emulated package: the npu device)
    from npu_platform.emulation.kernels import atb

    ops = atb.ATB_OPS
    dtype = torch.bfloat16
    n, nkv, d, bs = 2, 1, 16, 16
    kc = torch.zeros(4, bs, nkv, d, dtype=dtype, device="npu")
    vc = torch.zeros(4, bs, nkv, d, dtype=dtype, device="npu")
    key = torch.randn(20, nkv, d).to(dtype)
    value = torch.randn(20, nkv, d).to(dtype)
    slots = torch.arange(16, 36, dtype=torch.int32)  # blocks 1 and 2
    ops["_npu_reshape_and_cache"](
        key=key.npu(), value=value.npu(), key_cache=kc, value_cache=vc,
        slot_indices=slots.npu(),
    )
    assert torch.equal(kc.cpu()[1:3].reshape(32, nkv, d)[:20], key)
    q = torch.randn(1, n, d).to(dtype)
    out = torch.empty(1, n, d, dtype=dtype, device="npu")
    ops["_npu_paged_attention"](
        query=q.npu(), key_cache=kc, value_cache=vc, num_kv_heads=nkv, num_heads=n,
        scale_value=1 / math.sqrt(d), block_table=torch.tensor([[1, 2]], dtype=torch.int32).npu(),
        context_lens=torch.tensor([20], dtype=torch.int32), out=out,
    )
    k = key.float().repeat_interleave(n // nkv, 1)
    v = value.float().repeat_interleave(n // nkv, 1)
    p = torch.softmax(torch.einsum("qnd,knd->nqk", q.float(), k) / math.sqrt(d), -1)
    want = torch.einsum("nqk,knd->qnd", p, v)
    torch.testing.assert_close(out.cpu().float(), want, atol=2e-2, rtol=2e-2)
    print("OK")
    """
)


def run_emulated(script: str, timeout: int = 600) -> subprocess.CompletedProcess:
    env = dict(os.environ, NPU_PLATFORM_EMULATE="1", PYTHONPATH=REPO)
    return subprocess.run(
        [sys.executable, "-c", script],
        check=False,
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_atb_ops_on_emulated_npu_tensors():
    proc = run_emulated(EMULATED_SCRIPT)
    assert proc.returncode == 0 and "OK" in proc.stdout, proc.stdout + proc.stderr


WIRING_SCRIPT = textwrap.dedent(
    """
    import torch_npu
    from npu_platform.emulation.kernels import atb

    for name in atb.ATB_OPS:
        op = getattr(torch_npu, name)
        assert callable(op), name
    try:
        torch_npu._npu_paged_attention(slot_mapping=None)
    except TypeError as exc:
        assert "unexpected keyword argument 'slot_mapping'" in str(exc), exc
    else:
        raise AssertionError("bad call did not raise")
    print("OK")
    """
)


def test_torch_npu_exposes_the_atb_ops():
    proc = run_emulated(WIRING_SCRIPT)
    assert proc.returncode == 0 and "OK" in proc.stdout, proc.stdout + proc.stderr


# --------------------------------------------------------------------------- sgl_kernel_npu


SKN_SCRIPT = textwrap.dedent(
    """
    import torch
    import torch_npu  # noqa: F401
    from sgl_kernel_npu.mem_cache.allocator import alloc_extend_kernel
    from sgl_kernel_npu.norm.split_qkv_rmsnorm_rope import split_qkv_rmsnorm_rope
    from sglang.srt.mem_cache.allocator.paged import alloc_extend_naive


    def rms(x, w, eps):
        return x * torch.rsqrt((x * x).mean(-1, keepdim=True) + eps) * w


    def rope(x, cos, sin, neox):
        # x (T, H, D); cos/sin (T, rot) with equal halves; plain per-element formulas
        rot = cos.shape[-1]
        out = x.clone()
        half = rot // 2
        for i in range(half):
            c, s = cos[:, i : i + 1], sin[:, i : i + 1]
            if neox:
                a, b = x[:, :, i], x[:, :, i + half]
                out[:, :, i] = a * c - b * s
                out[:, :, i + half] = b * c + a * s
            else:
                a, b = x[:, :, 2 * i], x[:, :, 2 * i + 1]
                out[:, :, 2 * i] = a * c - b * s
                out[:, :, 2 * i + 1] = b * c + a * s
        return out


    g = torch.Generator().manual_seed(0)
    T, D, NQ, NKV = 5, 16, 4, 2
    for neox in (True, False):
        for rot in (16, 8):
            for norm in (False, True):
                qkv = torch.randn(T, (NQ + 2 * NKV) * D, generator=g).to(torch.bfloat16)
                ang = torch.rand(T, rot // 2, generator=g) * 6
                cos = torch.cat([ang.cos(), ang.cos()], -1)
                sin = torch.cat([ang.sin(), ang.sin()], -1)
                wq = torch.rand(D, generator=g) + 0.5
                wk = torch.rand(D, generator=g) + 0.5
                kwargs = {}
                if norm:
                    kwargs = dict(
                        eps=1e-6, q_weight=wq.to(torch.bfloat16).npu(),
                        k_weight=wk.to(torch.bfloat16).npu(),
                    )
                q, k, v = split_qkv_rmsnorm_rope(
                    qkv.npu(), sin.view(T, 1, 1, rot).npu(), cos.view(T, 1, 1, rot).npu(),
                    NQ * D, NKV * D, D, is_neox_style=neox, **kwargs,
                )
                assert q.device.type == "npu" and q.dtype == torch.bfloat16
                x = qkv.float()
                xq = x[:, : NQ * D].view(T, NQ, D)
                xk = x[:, NQ * D : (NQ + NKV) * D].view(T, NKV, D)
                if norm:
                    xq = rms(xq, wq.to(torch.bfloat16).float(), 1e-6)
                    xk = rms(xk, wk.to(torch.bfloat16).float(), 1e-6)
                wq_ = rope(xq, cos, sin, neox).reshape(T, -1)
                wk_ = rope(xk, cos, sin, neox).reshape(T, -1)
                tol = dict(atol=3e-2, rtol=2e-2)
                torch.testing.assert_close(q.cpu().float(), wq_, **tol)
                torch.testing.assert_close(k.cpu().float(), wk_, **tol)
                assert torch.equal(v.cpu(), qkv[:, (NQ + NKV) * D :])
    try:
        split_qkv_rmsnorm_rope(qkv.npu(), sin, cos, NQ * D, NKV * D, 12)
    except AssertionError as exc:
        assert "power of two" in str(exc)
    else:
        raise AssertionError("head_dim 12 accepted")

    # alloc_extend_kernel against sglang's own torch implementation
    page = 4
    cases = [
        ([0, 3, 5, 8], [6, 4, 13, 8], [-1, 2, 8, 11]),
        ([2], [3], [5]),
        ([0, 0], [4, 9], [-1, -1]),
    ]
    for pre, seq, last in cases:
        pre_t = torch.tensor(pre, dtype=torch.int64)
        seq_t = torch.tensor(seq, dtype=torch.int64)
        last_t = torch.tensor(last, dtype=torch.int64)
        free = torch.tensor([7, 3, 9, 11, 20, 21, 30], dtype=torch.int64)
        n = int((seq_t - pre_t).sum())
        got = torch.full((n,), -5, dtype=torch.int64, device="npu")
        alloc_extend_kernel[(len(pre),)](
            pre_t.npu(), seq_t.npu(), last_t.npu(), free.npu(), got, 8, page, 16
        )
        want = torch.empty(n, dtype=torch.int64)
        alloc_extend_naive(pre_t, seq_t, last_t, free, want, page, "cpu")
        assert torch.equal(got.cpu(), want), (pre, seq, got.cpu(), want)
    try:
        alloc_extend_kernel(pre_t, seq_t, last_t, free, got, 8, page, 16)
    except TypeError as exc:
        assert "launch it as alloc_extend_kernel[grid]" in str(exc)
    else:
        raise AssertionError("direct call accepted")

    from sgl_kernel_npu.norm.l1_norm import l1_norm
    try:
        l1_norm(torch.ones(1))
    except NotImplementedError as exc:
        assert "sgl_kernel_npu.norm.l1_norm.l1_norm: the emulated NPU has no such kernel" in str(
            exc
        ), exc
    else:
        raise AssertionError("l1_norm ran")
    print("OK")
    """
)


def test_sgl_kernel_npu_references():
    proc = run_emulated(SKN_SCRIPT)
    assert proc.returncode == 0 and "OK" in proc.stdout, proc.stdout[-3000:] + proc.stderr[-3000:]


def _sglang_imports(package: str) -> list[tuple[str, tuple[str, ...], bool, str]]:
    """Every ``from package... import names`` statement of the installed sglang.

    (module, names, guarded, where); guarded: inside a ``try`` whose handler catches
    ImportError, so sglang falls back when the import fails.
    """
    import ast
    import importlib.util

    spec = importlib.util.find_spec("sglang")
    assert spec is not None and spec.submodule_search_locations
    root = list(spec.submodule_search_locations)[0]
    found = []
    for folder, _, files in os.walk(root):
        if os.sep + "test" in folder:
            continue
        for file in files:
            path = os.path.join(folder, file)
            if not file.endswith(".py"):
                continue
            with open(path, encoding="utf-8", errors="replace") as f:
                text = f.read()
            if package not in text:
                continue
            tree = ast.parse(text)
            parents = {
                child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)
            }
            for node in ast.walk(tree):
                if not isinstance(node, ast.ImportFrom) or not node.module:
                    continue
                if node.module != package and not node.module.startswith(package + "."):
                    continue
                up, guarded = node, False
                while up in parents:
                    up = parents[up]
                    if isinstance(up, ast.Try) and any(
                        h.type is not None and "ImportError" in ast.unparse(h.type)
                        for h in up.handlers
                    ):
                        guarded = True
                names = tuple(alias.name for alias in node.names)
                where = f"{os.path.relpath(path, root)}:{node.lineno}"
                found.append((node.module, names, guarded, where))
    return found


# Imported unconditionally by one sglang module and with a fallback by another: left out so
# the fallback runs (the unconditional importer, a model sglang's registry skips when its
# import fails, is not on the emulated NPU's path).
KNOWN_ABSENT = {"sgl_kernel_npu.norm.split_qkv_rmsnorm_rope_pos_cache_half_npu"}


def test_every_unguarded_sgl_kernel_npu_and_torchair_import_of_sglang_resolves():
    statements = _sglang_imports("sgl_kernel_npu")
    must_work = [s for s in statements if not s[2] and s[0] not in KNOWN_ABSENT]
    must_fail = [s for s in statements if s[2]]
    # sglang's torchair imports sit in a try that re-raises: all of them must work
    must_work += _sglang_imports("torchair")
    assert any(s[0] == "sgl_kernel_npu.norm.split_qkv_rmsnorm_rope" for s in must_work)
    assert any(s[0] == "sgl_kernel_npu.norm.fused_rope_qk_mqa" for s in must_fail)
    script = textwrap.dedent(
        """
        import importlib, json, sys
        import torch_npu  # noqa: F401
        must_work, must_fail = json.loads(sys.argv[1]), json.loads(sys.argv[2])
        for module, names, _, where in must_work:
            mod = importlib.import_module(module)
            for name in names:
                assert hasattr(mod, name), ("missing", module, name, where)
        for module, names, _, where in must_fail:
            try:
                mod = importlib.import_module(module)
            except ImportError:
                continue
            assert not all(hasattr(mod, n) for n in names), ("fallback skipped", where)
        import torch, torchair
        from torchair.configs.compiler_config import CompilerConfig
        import torchair.ge_concrete_graph.ge_converter.experimental.patch_for_hcom_allreduce
        config = CompilerConfig()
        config.mode = "reduce-overhead"
        config.debug.run_eagerly = True
        try:
            config.mode = "fast"
        except ValueError as exc:
            assert "max-autotune, reduce-overhead" in str(exc)
        else:
            raise AssertionError("bad mode accepted")
        backend = torchair.get_npu_backend(compiler_config=config)
        fn = torch.compile(lambda x: torch.sin(x) * 2 + 1, backend=backend)
        x = torch.randn(8).npu()
        torch.testing.assert_close(fn(x).cpu(), torch.sin(x.cpu()) * 2 + 1)
        print("OK")
        """
    )
    env = dict(os.environ, NPU_PLATFORM_EMULATE="1", PYTHONPATH=REPO)
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            script,
            json.dumps(must_work),
            json.dumps(must_fail),
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0 and "OK" in proc.stdout, proc.stdout[-3000:] + proc.stderr[-3000:]


def test_a_remembered_mask_is_checked_again_when_its_memory_changes():
    """The full mask check is remembered by address; memory that held a causal mask and now
    holds another (a freed mask's memory reused, or rewritten in inference mode, where no
    version counter tells) is checked again."""
    with torch.inference_mode():
        mask = causal_mask(128, torch.float16)
        atb._check_causal_mask("_npu_flash_attention_qlens", mask)  # remembered
        mask.zero_()  # same address, no version counter
        with pytest.raises(UnsupportedByReference, match="mask"):
            atb._check_causal_mask("_npu_flash_attention_qlens", mask)
