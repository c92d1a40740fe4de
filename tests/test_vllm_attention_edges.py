"""NPU_ATTN off its main path: refusals (non-causal batches, unequal key/value head sizes,
head counts, options and output quantization it cannot run), the metadata builder's
speculative-decoding and int64-block-table inputs, and the KV-cache write's lookup of this
step's metadata in vLLM's forward context (absent, per layer, per micro-batch).
"""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import pytest
import torch

from tests.test_vllm_attention import (
    BATCH,
    HEAD_SIZE,
    NUM_HEADS,
    NUM_KV_HEADS,
    _batch,
    _builder,
    _kv_cache,
    _spec,
    emulated_ops,  # noqa: F401 - the fixture
)

LAYER = SimpleNamespace(layer_name="layer.0")


def _impl():
    from npu_platform.vllm.attention import NPUAttentionImpl

    return NPUAttentionImpl(NUM_HEADS, HEAD_SIZE, HEAD_SIZE**-0.5, NUM_KV_HEADS)


# --------------------------------------------------------------------------- declarations


def test_spec_customization_is_idempotent_and_needs_equal_head_sizes():
    from vllm.v1.kv_cache_interface import FullAttentionSpec

    from npu_platform.vllm.attention import NPUAttentionBackend

    assert NPUAttentionBackend.supports_sliding_window() is True
    once = NPUAttentionBackend.customize_spec(_spec(torch.float16))
    assert NPUAttentionBackend.customize_spec(once) is once
    uneven = FullAttentionSpec(
        block_size=128, num_kv_heads=2, head_size=128, head_size_v=64, dtype=torch.float16
    )
    with pytest.raises(ValueError) as info:
        NPUAttentionBackend.customize_spec(uneven)
    assert str(info.value) == "NPU_ATTN needs equal key and value head sizes, got 128 and 64."


# --------------------------------------------------------------------------- impl refusals


def test_impl_refuses_options_and_head_counts_it_cannot_run():
    from npu_platform.vllm.attention import NPUAttentionImpl

    with pytest.raises(NotImplementedError) as info:
        NPUAttentionImpl(NUM_HEADS, HEAD_SIZE, 0.1, NUM_KV_HEADS, sinks=None, use_mla=True)
    assert str(info.value) == (
        "NPU_ATTN cannot run this attention layer: options ['sinks', 'use_mla']."
    )
    with pytest.raises(ValueError) as info:
        NPUAttentionImpl(4, HEAD_SIZE, 0.1, 3)
    assert str(info.value) == "NPU_ATTN: 4 query heads are not a multiple of 3 KV heads."
    # Without num_kv_heads every query head has its own KV head.
    assert NPUAttentionImpl(4, HEAD_SIZE, 0.1).num_kv_heads == 4


def test_forward_refuses_output_quantization(emulated_ops):  # noqa: F811
    impl = _impl()
    query = torch.zeros(2, NUM_HEADS, HEAD_SIZE, dtype=torch.float16, device="npu")
    output = torch.zeros_like(query)
    scale = torch.ones(1, device="npu")
    with pytest.raises(NotImplementedError, match="does not fuse output quantization"):
        impl.forward(LAYER, query, query, query, _kv_cache(torch.float16), None, output, scale)
    with pytest.raises(NotImplementedError, match="does not fuse output quantization"):
        impl.forward(
            LAYER, query, query, query, _kv_cache(torch.float16), None, output, None, scale
        )


# --------------------------------------------------------------------------- the builder


def test_builder_refuses_non_causal_batches(emulated_ops):  # noqa: F811
    batch = _batch(torch.float16)
    common = dataclasses.replace(batch.common, causal=False)
    with pytest.raises(NotImplementedError) as info:
        _builder(torch.float16).build(0, common)
    assert str(info.value) == "NPU_ATTN supports causal decoder attention only."


def test_builder_with_speculation_reads_lengths_from_the_device(emulated_ops):  # noqa: F811
    """With speculative decoding vLLM's host copy of the lengths is only an upper bound: the
    builder takes the device's. An int64 block table is narrowed to the kernel's int32."""
    from npu_platform.vllm.attention import NPUAttentionMetadataBuilder

    batch = _batch(torch.float16)
    bound = batch.common.seq_lens_cpu_upper_bound + 7  # an upper bound, not the lengths
    table = batch.common.block_table_tensor
    common = dataclasses.replace(
        batch.common, seq_lens_cpu_upper_bound=bound, block_table_tensor=table.to(torch.int64)
    )
    config = SimpleNamespace(speculative_config=object())
    builder = NPUAttentionMetadataBuilder(
        _spec(torch.float16), ["layer.0"], config, torch.device("npu")
    )
    assert builder.exact_cpu_seq_lens is False
    md = builder.build(0, common)
    assert md.seq_lens_cpu.device.type == "cpu"
    assert md.seq_lens_cpu.tolist() == [kv for _, kv in BATCH]
    assert md.block_table.dtype == torch.int32
    assert torch.equal(md.block_table.cpu(), table.cpu())

    exact = _builder(torch.float16).build(0, common)
    assert exact.seq_lens_cpu.tolist() == bound.tolist(), "without speculation: the host copy"


# --------------------------------------------------------------------------- KV-cache write


def _step(dtype):
    """A batch's metadata and this step's new keys and values (one row per query token)."""
    batch = _batch(dtype)
    md = _builder(dtype).build(0, batch.common)
    n = md.num_actual_tokens
    gen = torch.Generator().manual_seed(1)
    key = torch.randn(n, NUM_KV_HEADS, HEAD_SIZE, generator=gen).to(dtype)
    value = torch.randn(n, NUM_KV_HEADS, HEAD_SIZE, generator=gen).to(dtype)
    return md, key, value


def _written(kv_cache, slots):
    """Keys and values stored at ``slots`` of a ``[B, 2, N, H*D]`` cache."""
    from npu_platform.vllm.attention import split_kv_cache

    key_cache, value_cache = split_kv_cache(kv_cache, NUM_KV_HEADS, HEAD_SIZE)
    flat = (-1, NUM_KV_HEADS, HEAD_SIZE)
    slots = slots.cpu()
    return key_cache.reshape(flat).cpu()[slots], value_cache.reshape(flat).cpu()[slots]


@pytest.mark.parametrize("micro_batches", [False, True])
def test_kv_cache_write_uses_the_layers_metadata(emulated_ops, micro_batches):  # noqa: F811
    """vLLM's forward context maps layer names to metadata; with micro-batches (DBO) it is a
    list of such maps and the first one is this layer's."""
    from vllm.forward_context import ForwardContext, override_forward_context

    dtype = torch.bfloat16
    md, key, value = _step(dtype)
    per_layer = {"layer.0": md, "layer.1": None}
    attn_metadata = [per_layer, {"layer.0": None}] if micro_batches else per_layer
    kv_cache = _kv_cache(dtype)
    context = ForwardContext(no_compile_layers={}, attn_metadata=attn_metadata, slot_mapping={})
    with override_forward_context(context):
        _impl().do_kv_cache_update(LAYER, key.to("npu"), value.to("npu"), kv_cache, md.slot_mapping)
    keys, values = _written(kv_cache, md.slot_mapping)
    assert torch.equal(keys, key)
    assert torch.equal(values, value)


def test_kv_cache_write_is_skipped_without_a_step(emulated_ops):  # noqa: F811
    """No forward context (a dummy run) or an empty cache (profiling): nothing is written."""
    from vllm.forward_context import ForwardContext, override_forward_context

    dtype = torch.bfloat16
    md, key, value = _step(dtype)
    kv_cache = _kv_cache(dtype)
    impl = _impl()
    impl.do_kv_cache_update(LAYER, key.to("npu"), value.to("npu"), kv_cache, md.slot_mapping)
    assert not kv_cache.cpu().any(), "no forward context: nothing to keep"

    other_layer = ForwardContext(
        no_compile_layers={}, attn_metadata={"layer.9": md}, slot_mapping={}
    )
    with override_forward_context(other_layer):
        impl.do_kv_cache_update(LAYER, key.to("npu"), value.to("npu"), kv_cache, md.slot_mapping)
    assert not kv_cache.cpu().any(), "no metadata for this layer: nothing to keep"

    empty = torch.empty(0, 2, 128, NUM_KV_HEADS * HEAD_SIZE, dtype=dtype, device="npu")
    context = ForwardContext(no_compile_layers={}, attn_metadata={"layer.0": md}, slot_mapping={})
    with override_forward_context(context):
        impl.do_kv_cache_update(LAYER, key.to("npu"), value.to("npu"), empty, md.slot_mapping)
        # The same call with the real cache writes: the skip above was the empty cache's.
        impl.do_kv_cache_update(LAYER, key.to("npu"), value.to("npu"), kv_cache, md.slot_mapping)
    assert torch.equal(_written(kv_cache, md.slot_mapping)[0], key)
