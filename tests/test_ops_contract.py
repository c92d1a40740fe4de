"""Binding calls against torch_npu's schemas, and the references' refusals.

Each rejection is checked by exception type and by the op and argument its message names.
The kernels' documented constraints are rules with a test each in tests/test_ops_rules.py;
the calls here pass them, so what refuses them is the schema or the reference.
"""

from __future__ import annotations

import inspect

import numpy as np
import pytest
import torch

from npu_platform.emulation import kernels as emulated
from npu_platform.errors import NPUPlatformError
from npu_platform.spec import contract, schema
from npu_platform.spec.contract import ContractError, UnsupportedByReference, bind
from tests._ops_helpers import causal_mask_2048

NPU = emulated.EMULATED
FIA = "npu_fused_infer_attention_score"


def _rejects(exc_type: type[Exception], *needles: str):
    """pytest.raises whose message must contain every needle."""

    class _Ctx:
        def __enter__(self):
            self._cm = pytest.raises(exc_type)
            self.info = self._cm.__enter__()
            return self.info

        def __exit__(self, *exc):
            handled = self._cm.__exit__(*exc)
            text = str(self.info.value)
            for needle in needles:
                assert needle in text, f"{needle!r} not in message: {text}"
            return handled

    return _Ctx()


def _fia_inputs(dtype=torch.bfloat16):
    q = torch.randn(3, 4, 16, dtype=dtype)
    cache = torch.randn(2, 128, 2 * 16, dtype=dtype)
    table = torch.tensor([[1], [0]], dtype=torch.int32)
    kwargs = dict(
        num_heads=4,
        num_key_value_heads=2,
        input_layout="TND",
        block_table=table,
        block_size=128,
        actual_seq_lengths=[2, 3],
        actual_seq_lengths_kv=[5, 1],
        scale=0.25,
    )
    return q, cache, kwargs


# --------------------------------------------------------------------------- binding


def test_error_types() -> None:
    assert issubclass(ContractError, NPUPlatformError) and issubclass(ContractError, TypeError)
    assert issubclass(UnsupportedByReference, ContractError)
    assert issubclass(emulated.NoReference, NPUPlatformError)


def test_bind_fills_defaults_in_schema_order() -> None:
    s = schema.get_schema("npu_rms_norm")
    x, w = torch.ones(2, 4), torch.ones(4)
    assert bind(s, (x, w), {}) == {"self": x, "gamma": w, "epsilon": 1e-06}
    bound = bind(s, (x,), {"gamma": w, "epsilon": np.float32(1e-5)})
    assert list(bound) == ["self", "gamma", "epsilon"]
    assert type(bound["epsilon"]) is float
    fia = bind(schema.get_schema(FIA), (x, x, x), {"actual_seq_lengths": (1, np.int64(2))})
    assert fia["actual_seq_lengths"] == [1, 2] and type(fia["actual_seq_lengths"][1]) is int
    assert fia["input_layout"] == "BSH" and fia["num_heads"] == 1 and fia["block_table"] is None


def test_fixed_size_int_list_broadcasts_a_single_int_and_checks_length() -> None:
    s = schema.get_schema("npu_anchor_response_flags")
    x = torch.ones(1)
    assert bind(s, (x, [4, 4], 2, 3), {})["stride"] == [2, 2]
    with _rejects(ContractError, "npu_anchor_response_flags", "'featmap_size'", "length 2"):
        bind(s, (x, [4, 4, 4], 2, 3), {})


def test_misspelled_keyword_is_named_with_a_suggestion() -> None:
    q = torch.ones(1, 1, 1)
    with _rejects(ContractError, FIA, "'input_layot'", "did you mean 'input_layout'"):
        NPU.npu_fused_infer_attention_score(q, q, q, input_layot="TND")


def test_missing_required_argument() -> None:
    with _rejects(ContractError, "npu_rms_norm", "'gamma'", "missing"):
        NPU.npu_rms_norm(torch.ones(2, 2))
    s = schema.get_schema("npu_fused_infer_attention_score.out")
    q = torch.ones(1)
    with _rejects(ContractError, "npu_fused_infer_attention_score.out", "'attention_out'"):
        bind(s, (q, q, q), {"softmax_lse": q})


def test_keyword_only_argument_passed_positionally() -> None:
    q = torch.ones(1, 1, 1)
    with _rejects(ContractError, FIA, "3 positional", "4 were given", "keyword-only"):
        NPU.npu_fused_infer_attention_score(q, q, q, None)


def test_too_many_positional_and_duplicate_arguments() -> None:
    x = torch.ones(2, 2)
    with _rejects(ContractError, "npu_swiglu", "2 positional"):
        NPU.npu_swiglu(x, -1, 0)
    with _rejects(ContractError, "npu_rms_norm", "multiple values", "'gamma'"):
        NPU.npu_rms_norm(x, x, gamma=x)


@pytest.mark.parametrize(
    ("op", "args", "kwargs", "argument", "phrase"),
    [
        ("npu_rms_norm", ("X", 3), {}, "gamma", "must be Tensor, not int"),
        ("npu_swiglu", ("X",), {"dim": 1.0}, "dim", "must be int, not float"),
        ("npu_swiglu", ("X",), {"dim": True}, "dim", "must be int, not bool"),
        ("npu_rms_norm", ("X", "X"), {"epsilon": "1e-6"}, "epsilon", "must be float, not str"),
        ("npu_rms_norm", ("X", "X"), {"epsilon": True}, "epsilon", "must be float, not bool"),
        ("npu_rms_norm", ("X", None), {}, "gamma", "not None"),
        (FIA, ("X", "X", "X"), {"softmax_lse_flag": 1}, "softmax_lse_flag", "must be bool"),
        (FIA, ("X", "X", "X"), {"input_layout": 3}, "input_layout", "must be str, not int"),
        (FIA, ("X", "X", "X"), {"num_heads": None}, "num_heads", "not None"),
        (FIA, ("X", "X", "X"), {"actual_seq_lengths": "T"}, "actual_seq_lengths", "not Tensor"),
        (FIA, ("X", "X", "X"), {"actual_seq_lengths": [1, 2.5]}, "actual_seq_lengths", "element 1"),
        (FIA, ("X", "X", "X"), {"actual_seq_lengths": 4}, "actual_seq_lengths", "not int"),
        (FIA, ("X", "X", "X"), {"block_table": [[0]]}, "block_table", "must be Tensor, not list"),
        ("npu_attention_update", (["X"], ["X", 1], 0), {}, "local_out", "element 1 is int"),
    ],
)
def test_wrong_kinds(op, args, kwargs, argument, phrase) -> None:
    x = torch.ones(2, 2)

    def sub(v):
        if v == "X":
            return x
        if v == "T":
            return torch.tensor([1, 2])
        if isinstance(v, list):
            return [sub(i) for i in v]
        return v

    args = tuple(sub(a) for a in args)
    kwargs = {k: sub(v) for k, v in kwargs.items()}
    with _rejects(ContractError, op, f"'{argument}'", phrase) as info:
        getattr(NPU, op)(*args, **kwargs)
    assert info.value.op == op and info.value.argument == argument


def test_unknown_op_and_op_without_reference() -> None:
    with _rejects(AttributeError, "npu_rms_nrom", "did you mean npu_rms_norm"):
        _ = NPU.npu_rms_nrom
    with _rejects(emulated.NoReference, "no reference implementation", "torch_npu.npu_gelu"):
        NPU.npu_gelu(torch.ones(2))
    with pytest.raises(AttributeError):
        _ = NPU.__wrapped__
    assert "npu_rms_norm" in dir(NPU)
    assert any("epsilon=1e-06" in s for s in NPU.npu_rms_norm.signatures())


def test_every_reference_matches_a_schema_and_its_argument_names() -> None:
    refs = emulated.references()
    assert {
        "npu_rms_norm",
        "npu_add_rms_norm",
        "npu_rotary_mul",
        "npu_swiglu",
        "npu_scatter_pa_kv_cache",
        FIA,
        "npu_fusion_attention",
    } <= set(refs)
    for full, fn in refs.items():
        s = schema.get_schema(full)
        params = inspect.signature(fn).parameters
        if any(p.kind is p.VAR_KEYWORD for p in params.values()):
            continue
        assert list(params) == s.arg_names(), full


def test_overload_resolution_tries_the_out_variant() -> None:
    q = torch.ones(1, 1, 16, dtype=torch.float16)  # BSH, one head of 16
    full, bound = NPU.npu_fused_infer_attention_score.bind(q, q, q, attention_out=q, softmax_lse=q)
    assert full == "npu_fused_infer_attention_score.out" and bound["attention_out"] is q
    att, lse = torch.full_like(q, float("nan")), torch.ones(1)
    out = NPU.npu_fused_infer_attention_score(q, q, q, attention_out=att, softmax_lse=lse)
    assert out[0] is att and torch.equal(att, q) and float(lse) == 0  # one key: its value


# --------------------------------------------------------------------------- reference refusals


def test_fia_unsupported_layout_names_the_accepted_values() -> None:
    _, _, kw = _fia_inputs()
    q = torch.randn(2, 4, 1, 16, dtype=torch.bfloat16)  # BNSD: one query token per request
    cache = torch.randn(2, 2, 128, 16, dtype=torch.bfloat16)  # (num_blocks, N_kv, block, D)
    kw.update(input_layout="BNSD", actual_seq_lengths=None)
    with _rejects(UnsupportedByReference, FIA, "input_layout='BNSD'", "accepted: 'TND'") as info:
        NPU.npu_fused_infer_attention_score(q, cache, cache, **kw)
    assert info.value.argument == "input_layout"


@pytest.mark.parametrize(
    ("argument", "change"),
    [
        ("antiquant_scale", {"antiquant_scale": "T"}),
        ("dequant_scale1", {"dequant_scale1": "T"}),
        ("query_rope", {"query_rope": "T", "key_rope": "T"}),
        ("pse_shift", {"pse_shift": "T"}),
        ("sparse_mode", {"sparse_mode": 2, "atten_mask": "M"}),
        ("antiquant_mode", {"antiquant_mode": 1}),
    ],
)
def test_fia_unimplemented_features_are_refused(argument: str, change: dict) -> None:
    q, cache, kw = _fia_inputs()
    values = {"T": torch.ones(1), "M": causal_mask_2048()}
    kw.update({k: values.get(v, v) if isinstance(v, str) else v for k, v in change.items()})
    with _rejects(UnsupportedByReference, FIA, argument):
        NPU.npu_fused_infer_attention_score(q, cache, cache, **kw)


def test_fia_reference_checks_the_block_ids() -> None:
    """The kernel does not validate block ids (torch_npu docs); the reference does."""
    q, cache, kw = _fia_inputs()
    with _rejects(ContractError, FIA, "'block_table'", "block ids"):
        table = torch.tensor([[7], [0]], dtype=torch.int32)
        NPU.npu_fused_infer_attention_score(q, cache, cache, **dict(kw, block_table=table))
    with _rejects(ContractError, FIA, "'key'", "dtype torch.float16 must equal query's"):
        NPU.npu_fused_infer_attention_score(q, cache.half(), cache.half(), **kw)


def test_fia_causal_modes_need_the_compressed_mask() -> None:
    q, cache, kw = _fia_inputs()
    kw["sparse_mode"] = 3
    with _rejects(ContractError, FIA, "'atten_mask'", "sparse_mode=3", "2048"):
        NPU.npu_fused_infer_attention_score(q, cache, cache, **kw)
    with _rejects(ContractError, FIA, "'atten_mask'", "shape (64, 64)"):
        NPU.npu_fused_infer_attention_score(
            q, cache, cache, atten_mask=torch.ones(64, 64, dtype=torch.bool), **kw
        )
    wrong = causal_mask_2048().logical_not()  # True on the diagonal and below: inverted
    with _rejects(ContractError, FIA, "'atten_mask'", "diagonal=1"):
        NPU.npu_fused_infer_attention_score(q, cache, cache, atten_mask=wrong, **kw)
    with _rejects(ContractError, FIA, "'atten_mask'", "dtype"):
        mask = causal_mask_2048(torch.float16)
        NPU.npu_fused_infer_attention_score(q, cache, cache, atten_mask=mask, **kw)
    for dtype in (torch.bool, torch.int8, torch.uint8):  # documented mask dtypes are accepted
        NPU.npu_fused_infer_attention_score(
            q, cache, cache, atten_mask=causal_mask_2048(dtype).unsqueeze(0), **kw
        )
    kw["sparse_mode"] = 0
    with _rejects(UnsupportedByReference, FIA, "atten_mask"):
        NPU.npu_fused_infer_attention_score(q, cache, cache, atten_mask=causal_mask_2048(), **kw)
    kw.update(sparse_mode=3, actual_seq_lengths_kv=[1, 1])
    with _rejects(ContractError, FIA, "'actual_seq_lengths'", "query length <= KV length"):
        NPU.npu_fused_infer_attention_score(q, cache, cache, atten_mask=causal_mask_2048(), **kw)


def test_scatter_pa_kv_cache_refusals() -> None:
    op = "npu_scatter_pa_kv_cache"
    k = torch.randn(3, 2, 8)
    kc, vc = torch.zeros(4, 4, 2, 8), torch.zeros(4, 4, 2, 8)
    slots = torch.tensor([0, 5, 9])
    with _rejects(UnsupportedByReference, op, "cache_mode='PA_NZ'", "'Norm', None"):
        NPU.npu_scatter_pa_kv_cache(k, k, kc, vc, slots)  # the default cache_mode
    with _rejects(UnsupportedByReference, op, "seq_lens"):
        NPU.npu_scatter_pa_kv_cache(k, k, kc, vc, slots, seq_lens=slots, cache_mode="Norm")
    with _rejects(ContractError, op, "'slot_mapping'", "[0, 15]", "-1"):
        NPU.npu_scatter_pa_kv_cache(k, k, kc, vc, torch.tensor([0, -1, 3]), cache_mode="Norm")
    with _rejects(ContractError, op, "'slot_mapping'", "distinct"):
        NPU.npu_scatter_pa_kv_cache(k, k, kc, vc, torch.tensor([0, 3, 3]), cache_mode="Norm")
    with _rejects(ContractError, op, "'value_cache'", "dtype"):
        NPU.npu_scatter_pa_kv_cache(k, k, kc, vc.half(), slots, cache_mode="Norm")
    with _rejects(UnsupportedByReference, op, "compress_lens"):  # scene three
        kc1 = torch.zeros(4, 4, 1, 8)
        NPU.npu_scatter_pa_kv_cache(
            k[None], k[None], kc1, kc1, torch.zeros(1, 2, dtype=torch.int64),
            compress_lens=torch.zeros(1, 2, dtype=torch.int64),
            seq_lens=torch.zeros(1, dtype=torch.int64), cache_mode="Norm",
        )  # fmt: skip


def test_other_reference_refusals() -> None:
    x = torch.randn(1, 3, 2, 8)
    r = torch.randn(1, 3, 1, 8)
    with _rejects(ContractError, "npu_rotary_mul", "'r1'", "dtype"):
        NPU.npu_rotary_mul(x, r.half(), r)
    with _rejects(ContractError, "npu_swiglu", "'self'", "even"):
        NPU.npu_swiglu(torch.randn(2, 5))
    with _rejects(ContractError, "npu_add_rms_norm", "'x2'", "dtype"):
        NPU.npu_add_rms_norm(torch.randn(2, 4), torch.randn(2, 4).half(), torch.randn(4), 1e-6)
    with _rejects(UnsupportedByReference, "npu_fusion_attention", "keep_prob"):
        NPU.npu_fusion_attention(x, x, x, 2, "BSND", keep_prob=0.9)
    prefix_mask = torch.zeros(3072, 2048, dtype=torch.bool)  # sparse_mode 6's documented shape
    with _rejects(UnsupportedByReference, "npu_fusion_attention", "sparse_mode=6"):
        NPU.npu_fusion_attention(x, x, x, 2, "BSND", atten_mask=prefix_mask, sparse_mode=6)
    with _rejects(UnsupportedByReference, "npu_apply_rotary_pos_emb", "rotary_mode='interleave'"):
        q = torch.randn(2, 3, 64)
        NPU.npu_apply_rotary_pos_emb(q, q, q[:, :1], q[:, :1], "TND", "interleave")


def test_reference_hooks() -> None:
    bound = {"mode": "x", "t": None, "u": 1}
    assert contract.require_choice("op", bound, "mode", ("x", "y")) == "x"
    with _rejects(UnsupportedByReference, "torch_npu.op:", "mode='x'", "accepted: 'y'"):
        contract.require_choice("op", bound, "mode", ("y",))
    contract.require_unset("op", bound, ("t",))
    with _rejects(UnsupportedByReference, "u=1", "accepted: None"):
        contract.require_unset("op", bound, ("t", "u"))
    with _rejects(ContractError, "torch_npu.op: argument 'a': broken"):
        contract.check(False, "op", "a", "broken")


def test_errors_survive_pickling() -> None:
    import pickle

    err = ContractError("npu_x", "argument 'a': bad", "a")
    back = pickle.loads(pickle.dumps(err))
    assert str(back) == str(err) and back.op == "npu_x" and back.argument == "a"
    uns = UnsupportedByReference("npu_x", "mode", "BNSD", ("TND",))
    back = pickle.loads(pickle.dumps(uns))
    assert type(back) is UnsupportedByReference and str(back) == str(uns)
    assert back.argument == "mode" and back.value == "BNSD"
