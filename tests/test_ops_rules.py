"""The kernels' documented constraints (npu_platform.spec.rules), one case per rule.

Every case starts from a call the documentation allows (it passes all rules of its op) and
changes one thing the documentation rules out; the rule must fire as
:class:`~npu_platform.spec.contract.RuleViolation` naming the op and the argument, stating
the rule and citing its source. Most calls are built from ``meta`` tensors: rules read
shapes, dtypes and strides only, so no memory is spent on large caches. The last tests show
the same rules on the paths a call takes: the op layer (:func:`npu_platform.ops.check_call`,
before calling a real NPU), the emulated ``torch_npu`` and its ATB ops (what frameworks such
as sglang call directly), and the citations against the unpacked ``_op_plugin_docs.py``.
"""

from __future__ import annotations

import pickle
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
import torch

from npu_platform import ops, torch_npu_data
from npu_platform.emulation.kernels import EMULATED, atb
from npu_platform.spec import contract, rules, schema
from npu_platform.spec.contract import ContractError, RuleViolation

BF16, F16, F32 = torch.bfloat16, torch.float16, torch.float32
I32, I64 = torch.int32, torch.int64
FIA, FA = rules.FIA, rules.FA


def meta(*shape: int, dtype: torch.dtype = BF16) -> torch.Tensor:
    return torch.empty(shape, dtype=dtype, device="meta")


def host(*values: int, dtype: torch.dtype = I32) -> torch.Tensor:
    return torch.tensor(values, dtype=dtype)


def same(names: str, *shape: int, dtype: torch.dtype = BF16) -> dict[str, torch.Tensor]:
    """A meta tensor of ``shape`` for each of the space-separated argument ``names``."""
    return {name: meta(*shape, dtype=dtype) for name in names.split()}


def atb_attention(
    query: tuple[int, ...], cache: tuple[int, ...], dtype: torch.dtype = F16
) -> dict[str, torch.Tensor]:
    """An ATB attention call's query and out of shape ``query`` and caches of shape ``cache``."""
    return {
        **same("query out", *query, dtype=dtype),
        **same("key_cache value_cache", *cache, dtype=dtype),
    }


MASK = meta(2048, 2048, dtype=torch.bool)


# --------------------------------------------------------------------------- valid calls


def fia_paged() -> dict[str, Any]:
    """TND, paged, causal: a 4-token prefill chunk over 200 tokens and a decode."""
    return dict(
        query=meta(5, 8, 64),
        **same("key value", 3, 128, 2 * 64),
        actual_seq_lengths=[4, 5],
        actual_seq_lengths_kv=[200, 1],
        block_table=meta(2, 2, dtype=I32),
        block_size=128,
        num_heads=8,
        num_key_value_heads=2,
        scale=0.125,
        input_layout="TND",
        sparse_mode=3,
        atten_mask=MASK,
    )


def fia_decode() -> dict[str, Any]:
    """BSH decode (S = 1, IncreFlashAttention), paged, as sglang's decode graphs call it:
    block size 16 is documented here (a TND call takes PromptFlashAttention whatever its
    query lengths)."""
    return dict(
        fia_paged(),
        query=meta(2, 1, 8 * 64),
        **same("key value", 3, 16, 2 * 64),
        input_layout="BSH",
        actual_seq_lengths=None,
        actual_seq_lengths_kv=[20, 5],
        block_size=16,
        sparse_mode=0,
        atten_mask=None,
    )


def fia_dense() -> dict[str, Any]:
    """TND without paging: KV lengths are cumulative like the query's."""
    return dict(
        query=meta(3, 4, 16),
        **same("key value", 6, 2, 16),
        actual_seq_lengths=[2, 3],
        actual_seq_lengths_kv=[4, 6],
        num_heads=4,
        num_key_value_heads=2,
        input_layout="TND",
    )


def fa_varlen() -> dict[str, Any]:
    return dict(
        query=meta(6, 4, 64),
        **same("key value", 10, 2, 64),
        head_num=4,
        input_layout="TND",
        actual_seq_qlen=[2, 6],
        actual_seq_kvlen=[4, 10],
        atten_mask=MASK,
        sparse_mode=3,
        scale=0.125,
    )


def fa_bsnd() -> dict[str, Any]:
    return dict(
        query=meta(2, 8, 4, 64),
        **same("key value", 2, 8, 2, 64),
        head_num=4,
        input_layout="BSND",
        atten_mask=MASK,
        sparse_mode=3,
    )


def scatter() -> dict[str, Any]:
    return dict(
        **same("key value", 6, 2, 64),
        **same("key_cache value_cache", 4, 128, 2, 64),
        slot_mapping=meta(6, dtype=I32),
        cache_mode="Norm",
    )


def rms_norm() -> dict[str, Any]:
    return {"self": meta(4, 64), "gamma": meta(64), "epsilon": 1e-6}


def add_rms_norm() -> dict[str, Any]:
    return {**same("x1 x2", 4, 64), "gamma": meta(64), "epsilon": 1e-6}


def rotary(head_dim: int = 64) -> dict[str, Any]:
    """ops.rotary_embedding's GPT-NeoX call: BSND with B = 1, cos/sin laid out 1S1D."""
    return {"self": meta(1, 6, 4, head_dim), **same("r1 r2", 1, 6, 1, head_dim)}


def rotary_interleave() -> dict[str, Any]:
    """ops.rotary_embedding's GPT-J call: SBND with B = 1, cos/sin laid out S11D."""
    return {
        "self": meta(6, 1, 4, 64),
        **same("r1 r2", 6, 1, 1, 64),
        "rotary_mode": "interleave",
    }


def swiglu() -> dict[str, Any]:
    return {"self": meta(4, 128), "dim": -1}


def reshape_and_cache() -> dict[str, Any]:
    return dict(
        **same("key value", 6, 2, 128, dtype=F16),
        **same("key_cache value_cache", 4, 128, 2, 128, dtype=F16),
        slot_indices=meta(6, dtype=I32),
    )


def paged_attention() -> dict[str, Any]:
    return dict(
        **atb_attention((3, 8, 128), (4, 128, 2, 128)),
        num_kv_heads=2,
        num_heads=8,
        scale_value=0.1,
        block_table=meta(3, 2, dtype=I32),
        context_lens=host(130, 5, 1),
    )


def qlens() -> dict[str, Any]:
    """sglang's extend: two requests of 2 and 1 new tokens after a cached 128-token prefix."""
    return dict(
        **atb_attention((3, 8 * 128), (4, 128, 2, 128)),
        block_table=meta(2, 2, dtype=I32),
        mask=meta(128, 128, dtype=F16),
        seq_len=host(2, 1),
        context_lens=host(130, 129),
        num_kv_heads=2,
        num_heads=8,
        scale_value=0.1,
    )


VALID: dict[str, tuple[str, Callable[[], dict[str, Any]]]] = {
    "fia_paged": (FIA, fia_paged),
    "fia_decode": (FIA, fia_decode),
    "fia_dense": (FIA, fia_dense),
    "fa_varlen": (FA, fa_varlen),
    "fa_bsnd": (FA, fa_bsnd),
    "scatter": (rules.SCATTER, scatter),
    "rms_norm": (rules.RMS, rms_norm),
    "add_rms_norm": (rules.ADD_RMS, add_rms_norm),
    "rotary": (rules.ROPE, rotary),
    "rotary_interleave": (rules.ROPE, rotary_interleave),
    "swiglu": (rules.SWIGLU, swiglu),
    "reshape_and_cache": (rules.RESHAPE_AND_CACHE, reshape_and_cache),
    "paged_attention": (rules.PAGED, paged_attention),
    "qlens": (rules.QLENS, qlens),
}


def bind(op: str, kwargs: dict[str, Any]) -> dict[str, Any]:
    """Bind like the caller would: torch_npu's YAML schema, or the ATB header for ``_npu_*``."""
    s = atb.schemas()[op] if op.startswith("_npu_") else schema.get_schema(op)
    return contract.bind(s, (), kwargs)


# --------------------------------------------------------------------------- cases


@dataclass(frozen=True)
class Case:
    rule: str
    base: str
    change: dict[str, Any]
    argument: str

    def __str__(self) -> str:
        return f"{self.rule}:{self.argument}"


def cases(rule: str, base: str, argument: str, *changes: dict[str, Any]) -> list[Case]:
    """One case of ``rule`` on ``base`` blaming ``argument`` for each of ``changes``."""
    return [Case(rule, base, change, argument) for change in changes]


def nc(*shape: int, dtype: torch.dtype = BF16) -> torch.Tensor:
    """A non-contiguous tensor of ``shape`` (its last two dimensions swapped in memory)."""
    return meta(*shape[:-2], shape[-1], shape[-2], dtype=dtype).transpose(-1, -2)


def fia_heads(n: int, d: int) -> dict[str, Any]:
    """fia_paged's call changed to ``n`` query and ``n`` KV heads of size ``d``."""
    kv = same("key value", 3, 128, n * d)
    return {"query": meta(5, n, d), **kv, "num_heads": n, "num_key_value_heads": n}


CASES = [
    # ---- npu_fused_infer_attention_score
    Case("fia.query.dtype", "fia_paged", {"query": meta(5, 8, 64, dtype=F32)}, "query"),
    Case("fia.kv.dtype", "fia_paged", same("key value", 3, 128, 128, dtype=F32), "key"),
    Case("fia.contiguous", "fia_paged", {"query": nc(5, 8, 64)}, "query"),
    Case("fia.kv.same_shape", "fia_paged", {"value": meta(4, 128, 128)}, "value"),
    Case("fia.input_layout", "fia_paged", {"input_layout": "NTD"}, "input_layout"),
    Case("fia.query.rank", "fia_paged", {"input_layout": "BSND"}, "query"),
    Case("fia.num_heads", "fia_paged", {"num_heads": 4}, "num_heads"),
    *cases(
        "fia.num_key_value_heads",
        "fia_paged",
        "num_key_value_heads",
        {"num_key_value_heads": 3},
        {"query": meta(5, 128, 64), "num_heads": 128, "num_key_value_heads": 1},  # ratio > 64
    ),
    *cases(
        "fia.heads_and_head_dim",
        "fia_paged",
        "query",
        {"query": meta(5, 8, 528), **same("key value", 3, 128, 1056)},
        fia_heads(264, 16),
    ),
    Case(
        "fia.batch",
        "fia_paged",
        {
            "query": meta(65537, 1, 16),
            "actual_seq_lengths": list(range(1, 65538)),
            "num_heads": 1,
            "num_key_value_heads": 1,
        },
        "query",
    ),
    Case(
        "fia.head_dim.alignment",
        "fia_paged",
        {"query": meta(5, 8, 24), **same("key value", 3, 128, 48)},
        "query",
    ),
    Case("fia.atten_mask.dtype", "fia_paged", {"atten_mask": meta(2048, 2048)}, "atten_mask"),
    *cases("fia.sparse_mode", "fia_paged", "sparse_mode", {"sparse_mode": 5}, {"sparse_mode": 9}),
    *cases(
        "fia.atten_mask.compressed",
        "fia_paged",
        "atten_mask",
        {"atten_mask": meta(64, 64, dtype=torch.bool)},
        {"atten_mask": None},
    ),
    Case("fia.inner_precise", "fia_paged", {"inner_precise": 4}, "inner_precise"),
    Case("fia.inner_precise", "fia_decode", {"inner_precise": 2}, "inner_precise"),
    Case("fia.antiquant_mode", "fia_paged", {"antiquant_mode": 2}, "antiquant_mode"),
    *cases(
        "fia.tnd.actual_seq_lengths",
        "fia_paged",
        "actual_seq_lengths",
        {"actual_seq_lengths": [4, 3]},
        {"actual_seq_lengths": None},
        {"actual_seq_lengths": [4, 6]},
    ),
    *cases(
        "fia.tnd.actual_seq_lengths_kv",
        "fia_dense",
        "actual_seq_lengths_kv",
        {"actual_seq_lengths_kv": [6, 4]},
        {"actual_seq_lengths_kv": None},
    ),
    *cases(
        "fia.paged.actual_seq_lengths_kv",
        "fia_paged",
        "actual_seq_lengths_kv",
        {"actual_seq_lengths_kv": None},
        {"actual_seq_lengths_kv": [200, 1, 1]},
    ),
    Case(
        "fia.block_table.dtype", "fia_paged", {"block_table": meta(2, 2, dtype=I64)}, "block_table"
    ),
    *cases(
        "fia.block_table.shape",
        "fia_paged",
        "block_table",
        {"block_table": meta(2, 1, dtype=I32)},
        {"block_table": meta(3, 2, dtype=I32)},
    ),
    *cases(
        "fia.paged.block_size.prompt",
        "fia_paged",
        "block_size",
        # the configuration the vLLM tests ran: block size 16 with prefill in the batch
        {**same("key value", 3, 16, 128), "block_size": 16, "actual_seq_lengths_kv": [10, 1]},
        # TND takes PromptFlashAttention for decode-only batches too
        {
            "query": meta(2, 8, 64),
            "actual_seq_lengths": [1, 2],
            **same("key value", 3, 16, 128),
            "block_size": 16,
            "actual_seq_lengths_kv": [20, 5],
        },
    ),
    Case(
        "fia.paged.block_size.decode",
        "fia_decode",
        {**same("key value", 6, 8, 128), "block_size": 8, "actual_seq_lengths_kv": [10, 5]},
        "block_size",
    ),
    *cases(
        "fia.paged.cache_layout",
        "fia_paged",
        "key",
        same("key value", 3, 128, 192),
        {  # 4-D caches only with BNSD and TND queries
            "query": meta(2, 1, 8, 64),
            **same("key value", 3, 2, 128, 64),
            "input_layout": "BSND",
            "actual_seq_lengths": None,
            "sparse_mode": 0,
            "atten_mask": None,
        },
    ),
    Case("fia.paged.hidden_size", "fia_paged", fia_heads(256, 512), "key"),
    Case("fia.paged.num_blocks", "fia_paged", same("key value", 2, 128, 128), "key"),
    Case("fia.paged.kv_dtype", "fia_paged", same("key value", 3, 128, 128, dtype=I32), "key"),
    Case(
        "fia.paged.query_dtype",
        "fia_paged",
        {
            "query": meta(5, 8, 64, dtype=torch.int8),
            **same("key value", 3, 128, 128, dtype=torch.int8),
        },
        "query",
    ),
    Case("fia.rope_pair", "fia_paged", {"key_rope": meta(3, 128, 64)}, "key_rope"),
    Case(
        "fia.paged.no_left_padding",
        "fia_paged",
        {"kv_padding_size": meta(1, dtype=I64)},
        "kv_padding_size",
    ),
    *cases(
        "fia.shared_prefix",
        "fia_paged",
        "value_shared_prefix",
        {"key_shared_prefix": meta(1, 4, 128)},
        same("key_shared_prefix value_shared_prefix", 1, 4, 128),
    ),
    # ---- npu_fusion_attention
    Case("fa.dtype", "fa_varlen", {"query": meta(6, 4, 64, dtype=I32)}, "query"),
    Case("fa.dtype", "fa_varlen", {"key": meta(10, 2, 64, dtype=F16)}, "key"),
    Case("fa.input_layout", "fa_varlen", {"input_layout": "NTD"}, "input_layout"),
    Case("fa.input_layout", "fa_varlen", {"input_layout": "BSND"}, "query"),
    Case("fa.varlen_lengths", "fa_varlen", {"actual_seq_qlen": None}, "actual_seq_qlen"),
    *cases(
        "fa.varlen_lengths",
        "fa_varlen",
        "actual_seq_kvlen",
        {"actual_seq_kvlen": [10, 4]},
        {"actual_seq_kvlen": [4, 10, 10]},
    ),
    *cases("fa.heads", "fa_varlen", "head_num", {"head_num": 3}, same("key value", 10, 3, 64)),
    Case("fa.head_dim", "fa_varlen", {"key": meta(10, 2, 32)}, "key"),
    Case("fa.head_dim", "fa_varlen", {"value": meta(10, 2, 128)}, "value"),
    Case(
        "fa.head_dim",
        "fa_varlen",
        {"query": meta(6, 4, 800), **same("key value", 10, 2, 800)},
        "key",
    ),
    Case(
        "fa.sizes",
        "fa_varlen",
        {
            "query": meta(1025, 4, 64),
            **same("key value", 1025, 2, 64),
            "actual_seq_qlen": list(range(1, 1026)),
            "actual_seq_kvlen": list(range(1, 1026)),
        },
        "actual_seq_qlen",
    ),
    Case(
        "fa.sizes",
        "fa_bsnd",
        {"query": meta(2, 0, 4, 64), **same("key value", 2, 0, 2, 64)},
        "query",
    ),
    # FIA takes an int8 mask, FA does not
    Case(
        "fa.atten_mask.dtype",
        "fa_varlen",
        {"atten_mask": meta(2048, 2048, dtype=torch.int8)},
        "atten_mask",
    ),
    Case("fa.sparse_mode", "fa_varlen", {"sparse_mode": 9}, "sparse_mode"),
    Case("fa.sparse_mode", "fa_bsnd", {"sparse_mode": 7}, "sparse_mode"),
    Case("fa.sparse_mode", "fa_varlen", {"sparse_mode": 5}, "sparse_mode"),
    Case(
        "fa.atten_mask.compressed",
        "fa_varlen",
        {"atten_mask": meta(1, 1, 2048, 2048, dtype=torch.bool)},
        "atten_mask",
    ),
    Case(
        "fa.atten_mask.compressed",
        "fa_bsnd",
        {"atten_mask": meta(512, 512, dtype=torch.bool)},
        "atten_mask",
    ),
    Case("fa.keep_prob", "fa_varlen", {"keep_prob": 0.0}, "keep_prob"),
    Case("fa.padding_mask", "fa_varlen", {"padding_mask": meta(1)}, "padding_mask"),
    Case("fa.softmax_layout", "fa_bsnd", {"softmax_layout": "TND"}, "softmax_layout"),
    Case(
        "fa.band",
        "fa_varlen",
        {"sparse_mode": 4, "pre_tockens": -5, "next_tockens": 2},
        "pre_tockens",
    ),
    # ---- npu_scatter_pa_kv_cache
    Case("scatter.key.dtype", "scatter", {"key": meta(6, 2, 64, dtype=torch.bool)}, "key"),
    Case("scatter.same_dtype", "scatter", {"value": meta(6, 2, 64, dtype=F16)}, "value"),
    Case("scatter.rank", "scatter", same("key value", 6, 128), "key"),
    Case("scatter.rank", "scatter", {"key_cache": meta(4, 128, 128)}, "key_cache"),
    Case(
        "scatter.index_dtype",
        "scatter",
        {"slot_mapping": meta(6, dtype=torch.int16)},
        "slot_mapping",
    ),
    Case("scatter.index_dtype", "scatter", {"seq_lens": meta(6, dtype=I64)}, "seq_lens"),
    Case("scatter.cache_mode", "scatter", {"cache_mode": "NZ"}, "cache_mode"),
    Case("scatter.contiguous", "scatter", {"key": nc(6, 2, 64)}, "key"),
    Case("scatter.tokens", "scatter", {"value": meta(5, 2, 64)}, "value"),
    Case("scatter.compressed_scene", "scatter", same("key value", 1, 6, 2, 64), "compress_lens"),
    Case("scatter.nd_layout", "scatter", same("key_cache value_cache", 4, 2, 128, 64), "key_cache"),
    Case("scatter.nd_layout", "scatter", {"slot_mapping": meta(6, 1, dtype=I32)}, "slot_mapping"),
    # ---- norms, rotary, activation
    *cases(
        "rms_norm.self",
        "rms_norm",
        "self",
        {"self": meta(64)},
        {"self": meta(4, 64, dtype=torch.float64)},
    ),
    Case("rms_norm.gamma.dtype", "rms_norm", {"gamma": meta(64, dtype=F32)}, "gamma"),
    Case("rms_norm.gamma.shape", "rms_norm", {"gamma": meta(32)}, "gamma"),
    Case("add_rms_norm.inputs", "add_rms_norm", {"x2": meta(4, 32)}, "x2"),
    Case("add_rms_norm.inputs", "add_rms_norm", same("x1 x2", 0, 64), "x1"),
    Case("add_rms_norm.inputs", "add_rms_norm", {"x1": nc(4, 64)}, "x1"),
    Case("add_rms_norm.gamma.shape", "add_rms_norm", {"gamma": meta(32)}, "gamma"),
    Case("rotary_mul.inputs", "rotary", {"r1": meta(6, 1, 64)}, "r1"),
    Case("rotary_mul.mode", "rotary", {"rotary_mode": "quarter"}, "rotary_mode"),
    *cases("rotary_mul.head_dim", "rotary", "self", rotary(63), rotary(896)),
    # 'interleave' takes only the 1S1D/11SD/S11D broadcasts
    Case(
        "rotary_mul.broadcast",
        "rotary",
        {"rotary_mode": "interleave", **same("r1 r2", 1, 6, 4, 64)},
        "r1",
    ),
    Case("rotary_mul.broadcast", "rotary", {"r2": meta(1, 1, 1, 64)}, "r2"),
    Case("rotary_mul.batch_heads", "rotary", {"self": meta(1, 6, 1000, 64)}, "self"),
    Case(
        "rotary_mul.batch_heads",
        "rotary",
        {"self": meta(1, 6, 1000, 64), "rotary_mode": "interleave"},
        "self",
    ),
    *cases(
        "swiglu.self",
        "swiglu",
        "self",
        {"self": meta(*[1] * 9, 128)},
        {"self": meta(4, 128, dtype=I32)},
    ),
    # ---- ATB ops (sglang's NPU path)
    Case(
        "atb.reshape_and_cache.dtype",
        "reshape_and_cache",
        {"key": meta(6, 2, 128, dtype=F32)},
        "key",
    ),
    Case(
        "atb.reshape_and_cache.dtype",
        "reshape_and_cache",
        {"value": meta(6, 2, 128, dtype=BF16)},
        "value",
    ),
    Case(
        "atb.reshape_and_cache.shapes",
        "reshape_and_cache",
        {"slot_indices": meta(6, dtype=I64)},
        "slot_indices",
    ),
    Case(
        "atb.reshape_and_cache.shapes",
        "reshape_and_cache",
        {"key_cache": meta(4, 128, 256, dtype=F16)},
        "key_cache",
    ),
    Case(
        "atb.paged_attention.dtype",
        "paged_attention",
        atb_attention((3, 8, 128), (4, 128, 2, 128), F32),
        "query",
    ),
    Case("atb.paged_attention.dtype", "paged_attention", {"out": meta(3, 8, 128)}, "out"),
    Case("atb.paged_attention.heads", "paged_attention", {"num_kv_heads": 3}, "num_kv_heads"),
    Case(
        "atb.paged_attention.block_size",
        "paged_attention",
        same("key_cache value_cache", 4, 24, 2, 128, dtype=F16),
        "key_cache",
    ),
    Case(
        "atb.paged_attention.head_size",
        "paged_attention",
        atb_attention((3, 8, 320), (4, 256, 2, 320)),
        "key_cache",
    ),
    Case(
        "atb.paged_attention.metadata",
        "paged_attention",
        {"context_lens": host(130, 5, 1, dtype=I64)},
        "context_lens",
    ),
    Case(
        "atb.paged_attention.metadata",
        "paged_attention",
        {"block_table": meta(3, 2, dtype=I64)},
        "block_table",
    ),
    Case(
        "atb.paged_attention.metadata", "paged_attention", {"out": meta(3, 8, 64, dtype=F16)}, "out"
    ),
    Case("atb.qlens.dtype", "qlens", atb_attention((3, 1024), (4, 128, 2, 128), F32), "query"),
    Case("atb.qlens.heads", "qlens", {"num_kv_heads": 3}, "num_kv_heads"),
    Case("atb.qlens.layout", "qlens", {"query": meta(1, 3, 8, 128, dtype=F16)}, "query"),
    Case(
        "atb.qlens.layout",
        "qlens",
        {"value_cache": meta(4, 128, 2, 64, dtype=F16)},
        "value_cache",
    ),
    Case(
        "atb.qlens.block_size",
        "qlens",
        same("key_cache value_cache", 4, 64, 2, 128, dtype=F16),
        "key_cache",
    ),
    *cases(
        "atb.qlens.head_size",
        "qlens",
        "key_cache",
        *(atb_attention((3, 8 * d), (4, 128, 2, d)) for d in (256, 40)),
    ),
    Case("atb.qlens.metadata", "qlens", {"seq_len": host(2, 1, dtype=I64)}, "seq_len"),
    Case("atb.qlens.metadata", "qlens", {"block_table": meta(2, 2, dtype=I64)}, "block_table"),
    # a prefix that is not a whole number of 128-token blocks
    Case(
        "atb.qlens.prefix_alignment",
        "qlens",
        {"context_lens": host(66, 129)},
        "context_lens",
    ),
]


def _call(case: Case) -> tuple[str, dict[str, Any]]:
    op, make = VALID[case.base]
    return op, dict(make(), **case.change)


# --------------------------------------------------------------------------- tests


def test_every_rule_has_a_case_and_every_case_a_rule() -> None:
    ids = {r.id for r in rules.all_rules()}
    assert len(ids) == len(rules.all_rules())
    assert {c.rule for c in CASES} == ids


@pytest.mark.parametrize("base", sorted(VALID))
def test_documented_calls_pass_every_rule(base: str) -> None:
    op, make = VALID[base]
    assert rules.rules_for(op)
    rules.check(op, bind(op, make()))


@pytest.mark.parametrize("case", CASES, ids=str)
def test_rule_fires(case: Case) -> None:
    op, kwargs = _call(case)
    with pytest.raises(RuleViolation) as info:
        rules.check(op, bind(op, kwargs))
    err = info.value
    rule = next(r for r in rules.all_rules() if r.id == case.rule)
    assert (err.rule_id, err.op, err.argument) == (case.rule, op, case.argument)
    text = str(err)
    assert text.startswith(f"torch_npu.{op}: argument '{case.argument}': ")
    assert rule.text in text and f"[{rule.source}]" in text
    assert isinstance(err, ContractError) and isinstance(err, TypeError)


def _doc_sections() -> dict[str, tuple[int, int]]:
    """op name -> (first, last) line of its docstring in _op_plugin_docs.py."""
    path = torch_npu_data.find(torch_npu_data.OP_PLUGIN_DOCS)
    with open(path, encoding="utf-8") as f:
        lines = f.read().splitlines()
    starts = [i + 1 for i, line in enumerate(lines) if line.startswith("_add_torch_npu_docstr(")]
    sections = {}
    for start, end in zip(starts, [*starts[1:], len(lines) + 1], strict=True):
        m = re.match(r'\s*"([\w.]+)"', lines[start])  # the op name, on the next line
        if m:
            sections[m.group(1)] = (start, end - 1)
    return sections


def test_citations_point_into_the_ops_own_documentation() -> None:
    sections = _doc_sections()
    for rule in rules.all_rules():
        m = re.search(r"_op_plugin_docs\.py lines? ([\d, ]+)", rule.source)
        if m:
            first, last = sections[rule.op]
            cited = [int(n) for n in m.group(1).split(",")]
            assert all(first < n <= last for n in cited), rule.id
        else:  # a CANN document
            assert rule.source.startswith("CANN ") and "https://www.hiascend.com/" in rule.source
    # the ops without an entry in _op_plugin_docs.py cite CANN
    assert "npu_add_rms_norm" not in sections and "_npu_paged_attention" not in sections


def test_rule_violation_survives_pickling() -> None:
    op, kwargs = _call(CASES[0])
    with pytest.raises(RuleViolation) as info:
        rules.check(op, bind(op, kwargs))
    back = pickle.loads(pickle.dumps(info.value))
    assert type(back) is RuleViolation and str(back) == str(info.value)
    assert (back.rule_id, back.source) == (info.value.rule_id, info.value.source)


def _case(rule_id: str) -> Case:
    return next(c for c in CASES if c.rule == rule_id)


def test_the_op_layer_checks_the_rules_before_calling_torch_npu() -> None:
    """check_call is what ops._call runs before ``torch_npu.<op>`` on a real NPU."""
    assert ops.check_call(FIA, **fia_paged()) == FIA
    _, kwargs = _call(_case("fia.paged.block_size.prompt"))
    with pytest.raises(RuleViolation, match=r"_op_plugin_docs\.py lines 8056, 8219"):
        ops.check_call(FIA, **kwargs)
    # the .out overload has the op's rules
    out = {"attention_out": meta(5, 8, 64), "softmax_lse": meta(1, dtype=F32)}
    with pytest.raises(RuleViolation, match="fia.paged.block_size.prompt"):
        ops.check_call(FIA, **kwargs, workspace=None, **out)


def test_the_emulated_torch_npu_checks_the_same_rules() -> None:
    """Frameworks calling torch_npu directly (sglang) meet the rules in emulation too."""
    _, kwargs = _call(_case("fa.atten_mask.dtype"))
    with pytest.raises(RuleViolation, match="fa.atten_mask.dtype"):
        EMULATED.npu_fusion_attention(**kwargs)
    _, kwargs = _call(_case("atb.qlens.prefix_alignment"))
    with pytest.raises(RuleViolation, match="atb.qlens.prefix_alignment") as info:
        atb.ATB_OPS[rules.QLENS](**kwargs)
    assert rules.ATB_PREFIX_ENCODER in str(info.value)


def test_emulated_atb_reads_host_lengths_on_the_device(emulated) -> None:
    """Lengths placed on the (emulated) device are read through a host view, without copy."""
    import torch_npu

    kwargs = dict(qlens(), seq_len=host(2, 1).to("npu"), context_lens=host(66, 129).to("npu"))
    with pytest.raises(RuleViolation, match="request 0 has a prefix of 64 tokens"):
        torch_npu._npu_flash_attention_qlens(**kwargs)


def test_paged_attention_in_block_size_16_is_refused_by_the_op_layer(emulated) -> None:
    """ops.paged_attention with a prefill in the batch and 16-token blocks (what vLLM's
    block size 16 produced) fails as FIA would on an NPU; 128-token blocks run."""
    from tests._ops_helpers import make_paged_batch

    for block_size, fails in ((16, True), (128, False)):
        batch = make_paged_batch(3, BF16, num_heads=4, num_kv_heads=2, head_size=64,
                                 block_size=block_size)  # fmt: skip
        args = dict(
            block_table=batch.block_table.to("npu"),
            query_start_loc=batch.query_start_loc,
            seq_lens_kv=batch.kv_lens,
            num_heads=4,
            num_kv_heads=2,
            scale=0.125,
        )
        q, kc, vc = (t.to("npu") for t in (batch.query, batch.key_cache, batch.value_cache))
        if fails:
            with pytest.raises(RuleViolation, match="block_size=16 in the PromptFlashAttention"):
                ops.paged_attention(q, kc, vc, **args)
        else:
            assert ops.paged_attention(q, kc, vc, **args).shape == q.shape
