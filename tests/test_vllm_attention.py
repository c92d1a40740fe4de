"""The NPU_ATTN backend on its own: metadata builder, KV-cache layout and attention impl.

A mixed batch (decodes, a chunked-prefill continuation, a fresh prefill) with GQA and a
shuffled block table runs through the same builder and impl vLLM drives, on the emulated
NPU, and is compared with plain softmax attention computed in float64 from the same keys
and values: float16/bfloat16 through ``npu_fused_infer_attention_score`` (paged, TND),
float32 through ``npu_fusion_attention``.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

# The production shape: GQA, head size 128, the kernel's 128-token blocks.
NUM_HEADS, NUM_KV_HEADS, HEAD_SIZE, BLOCK_SIZE, NUM_BLOCKS = 4, 2, 128, 128, 12
# (query tokens this step, KV length after the step) per request; some span several blocks.
BATCH = [(1, 150), (12, 140), (20, 20), (1, 5), (3, 260)]


@pytest.fixture
def emulated_ops(monkeypatch):
    """The emulated NPU for the op layer, with vLLM's modules imported beforehand.

    Importing vLLM's attention modules resolves vLLM's platform for the whole test process;
    doing that before emulation is switched on keeps it what it would be anyway (these tests
    drive the backend directly and need only the op layer to be emulated).
    """
    import npu_platform.vllm.attention  # noqa: F401
    from npu_platform import device
    from npu_platform.detect import detect
    from tests.conftest import load_emulated_torch_npu

    monkeypatch.setenv("NPU_PLATFORM_EMULATE", "1")
    load_emulated_torch_npu()
    detect(refresh=True)
    device.reset_backend()
    yield
    monkeypatch.delenv("NPU_PLATFORM_EMULATE", raising=False)
    detect(refresh=True)
    device.reset_backend()


def _spec(dtype):
    from vllm.v1.kv_cache_interface import FullAttentionSpec

    return FullAttentionSpec(
        block_size=BLOCK_SIZE, num_kv_heads=NUM_KV_HEADS, head_size=HEAD_SIZE, dtype=dtype
    )


def _kv_cache(dtype):
    """A layer's cache as vLLM 0.32 hands it over: logical [B, 2, N, H*D], physical LHBNC."""
    planes = torch.zeros(
        2, NUM_BLOCKS, BLOCK_SIZE, NUM_KV_HEADS * HEAD_SIZE, dtype=dtype, device="npu"
    )
    return planes.transpose(0, 1)


def _batch(dtype, seed=0):
    from vllm.v1.attention.backend import CommonAttentionMetadata

    gen = torch.Generator().manual_seed(seed)
    blocks = torch.randperm(NUM_BLOCKS, generator=gen).tolist()
    max_blocks = max(math.ceil(kv / BLOCK_SIZE) for _, kv in BATCH)
    table = torch.zeros(len(BATCH), max_blocks, dtype=torch.int32)
    keys, values, slots_new, queries, qsl = [], [], [], [], [0]
    for r, (q_len, kv_len) in enumerate(BATCH):
        n = math.ceil(kv_len / BLOCK_SIZE)
        table[r, :n] = torch.tensor([blocks.pop() for _ in range(n)])
        slots = [
            int(table[r, p // BLOCK_SIZE]) * BLOCK_SIZE + p % BLOCK_SIZE for p in range(kv_len)
        ]
        keys.append(torch.randn(kv_len, NUM_KV_HEADS, HEAD_SIZE, generator=gen))
        values.append(torch.randn(kv_len, NUM_KV_HEADS, HEAD_SIZE, generator=gen))
        queries.append(torch.randn(q_len, NUM_HEADS, HEAD_SIZE, generator=gen))
        slots_new.append(torch.tensor(slots))
        qsl.append(qsl[-1] + q_len)
    query_start_loc = torch.tensor(qsl, dtype=torch.int32)
    seq_lens = torch.tensor([kv for _, kv in BATCH], dtype=torch.int32)
    new_slots = torch.cat([s[kv - q :] for s, (q, kv) in zip(slots_new, BATCH, strict=True)])
    # As vLLM hands them over: device tensors, plus the host copies it keeps.
    common = CommonAttentionMetadata(
        query_start_loc=query_start_loc.to("npu"),
        query_start_loc_cpu=query_start_loc.clone(),
        seq_lens=seq_lens.to("npu"),
        seq_lens_cpu_upper_bound=seq_lens.clone(),
        num_reqs=len(BATCH),
        num_actual_tokens=qsl[-1],
        max_query_len=max(q for q, _ in BATCH),
        max_seq_len=max(kv for _, kv in BATCH),
        block_table_tensor=table.to("npu"),
        slot_mapping=new_slots.to(torch.int64).to("npu"),
    )
    return SimpleNamespace(
        common=common,
        keys=[k.to(dtype) for k in keys],
        values=[v.to(dtype) for v in values],
        queries=[q.to(dtype) for q in queries],
        slots=slots_new,
    )


def _reference(batch, scale, window=None):
    outs = []
    group = NUM_HEADS // NUM_KV_HEADS
    for q, k, v, (q_len, kv_len) in zip(
        batch.queries, batch.keys, batch.values, BATCH, strict=True
    ):
        q64, k64, v64 = q.double(), k.double(), v.double()
        k64 = k64.repeat_interleave(group, dim=1)
        v64 = v64.repeat_interleave(group, dim=1)
        scores = torch.einsum("qhd,khd->hqk", q64, k64) * scale
        qpos = torch.arange(kv_len - q_len, kv_len).unsqueeze(1)
        kpos = torch.arange(kv_len).unsqueeze(0)
        allowed = kpos <= qpos
        if window is not None:
            allowed &= kpos > qpos - window
        scores = scores.masked_fill(~allowed, float("-inf"))
        outs.append(torch.einsum("hqk,khd->qhd", scores.softmax(-1), v64))
    return torch.cat(outs)


def _builder(dtype):
    from npu_platform.vllm.attention import NPUAttentionMetadataBuilder

    config = SimpleNamespace(speculative_config=None)
    return NPUAttentionMetadataBuilder(_spec(dtype), ["layer.0"], config, torch.device("npu"))


@pytest.mark.parametrize(
    ("dtype", "window", "tol"),
    [
        (torch.float32, None, 1e-5),
        (torch.float32, 8, 1e-5),
        (torch.bfloat16, None, 3e-2),
        (torch.float16, 8, 5e-3),
    ],
)
def test_mixed_batch_matches_softmax_attention(emulated_ops, monkeypatch, dtype, window, tol):
    from npu_platform import ops
    from npu_platform.vllm import attention

    batch = _batch(dtype)
    md = _builder(dtype).build(0, batch.common)
    assert md.num_actual_tokens == sum(q for q, _ in BATCH)
    assert md.block_table.dtype == torch.int32

    impl = attention.NPUAttentionImpl(
        NUM_HEADS, HEAD_SIZE, 1 / math.sqrt(HEAD_SIZE), NUM_KV_HEADS, sliding_window=window
    )
    kv_cache = _kv_cache(dtype)
    key_cache, value_cache = attention.split_kv_cache(kv_cache, NUM_KV_HEADS, HEAD_SIZE)
    assert key_cache.is_contiguous() and value_cache.is_contiguous()
    assert key_cache.shape == (NUM_BLOCKS, BLOCK_SIZE, NUM_KV_HEADS, HEAD_SIZE)
    # The context before this step: written straight into the caches.
    for k, v, slots, (q_len, kv_len) in zip(
        batch.keys, batch.values, batch.slots, BATCH, strict=True
    ):
        if kv_len > q_len:
            ops.write_kv_cache(
                k[: kv_len - q_len].to("npu"), v[: kv_len - q_len].to("npu"), key_cache,
                value_cache, slots[: kv_len - q_len].to("npu"),
            )  # fmt: skip
    # This step's keys and values: through the impl, as vLLM calls it.
    new_k = torch.cat([k[kv - q :] for k, (q, kv) in zip(batch.keys, BATCH, strict=True)])
    new_v = torch.cat([v[kv - q :] for v, (q, kv) in zip(batch.values, BATCH, strict=True)])
    new_k, new_v = new_k.to("npu"), new_v.to("npu")
    monkeypatch.setattr(attention, "_layer_metadata", lambda layer: md)
    ops.reset_op_counts()
    impl.do_kv_cache_update(None, new_k, new_v, kv_cache, batch.common.slot_mapping)
    query = torch.cat(batch.queries).to("npu")
    output = torch.empty_like(query)
    impl.forward(None, query, new_k, new_v, kv_cache, md, output)
    counts = ops.op_counts()
    attention_op = (
        "npu_fusion_attention" if dtype == torch.float32 else "npu_fused_infer_attention_score"
    )
    assert counts == {"npu_scatter_pa_kv_cache": 1, attention_op: 1}

    expected = _reference(batch, 1 / math.sqrt(HEAD_SIZE), window)
    assert output.device.type == "npu"
    torch.testing.assert_close(output.cpu().double(), expected, atol=tol, rtol=tol)


def test_layout_and_spec_declarations():
    from vllm.v1.kv_cache_interface import KVCacheLayout

    from npu_platform.vllm.attention import NPUAttentionBackend

    spec = NPUAttentionBackend.customize_spec(_spec(torch.bfloat16))
    assert spec.num_heads == 2  # key plane, value plane
    assert spec.state_content_size_bytes == NUM_KV_HEADS * HEAD_SIZE * 2
    assert spec.page_size_bytes == _spec(torch.bfloat16).page_size_bytes
    assert NPUAttentionBackend.supported_kv_cache_layouts() == (KVCacheLayout.LHBNC,)
    assert all(NPUAttentionBackend.supports_block_size(n) for n in (128, 256, 384, 512))
    assert not any(NPUAttentionBackend.supports_block_size(n) for n in (8, 16, 64, 640, 1024))
    assert NPUAttentionBackend.get_preferred_block_size(16) == 128
    assert all(NPUAttentionBackend.supports_head_size(d) for d in (64, 80, 128, 256))
    assert not any(NPUAttentionBackend.supports_head_size(d) for d in (0, 72, 320, 512))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"alibi_slopes": [1.0] * NUM_HEADS}, "ALiBi"),
        ({"logits_soft_cap": 30.0}, "soft cap"),
        ({"attn_type": "encoder_only"}, "decoder self-attention only"),
        ({"kv_cache_dtype": "fp8"}, "kv_cache_dtype"),
    ],
)
def test_unsupported_features_are_rejected_at_init(kwargs, message):
    from npu_platform.vllm.attention import NPUAttentionImpl

    with pytest.raises(NotImplementedError, match=message):
        NPUAttentionImpl(NUM_HEADS, HEAD_SIZE, 0.25, NUM_KV_HEADS, **kwargs)


def test_slot_mapping_kernel_replacement():
    from npu_platform.vllm.kernels import compute_slot_mapping

    table = torch.tensor([[3, 7, 0], [5, 0, 0]], dtype=torch.int32)
    qsl = torch.tensor([0, 3, 5], dtype=torch.int32)
    positions = torch.tensor([14, 15, 16, 0, 1])
    out = torch.full((8,), 99, dtype=torch.int64)
    compute_slot_mapping(5, 8, qsl, positions, table, 3, out, 16, 1, 0, 1, -1, 1024)
    assert out.tolist() == [3 * 16 + 14, 3 * 16 + 15, 7 * 16 + 0, 5 * 16, 5 * 16 + 1, -1, -1, -1]
