"""Each documented rule judges only what it owns.

``rules.check`` stops at the first rule that fires, so the later rules of an op never see
most malformed calls there. Run on their own, as a new caller or a reordering would run them,
every rule must still answer (kept, or a violation) on every call the rule cases build: no
rule may crash with IndexError/ZeroDivisionError on a shape another rule refuses, and the
rule a case is written for must fire on it.
"""

from __future__ import annotations

import pytest

from npu_platform.spec import rules
from tests.test_ops_rules import (
    CASES,
    F16,
    FA,
    FIA,
    I32,
    VALID,
    Case,
    _call,
    bind,
    host,
    meta,
    same,
)


def _outcomes(op: str, kwargs: dict) -> dict[str, rules.Outcome]:
    bound = bind(op, kwargs)
    call = rules._Call(bound, None)
    return {rule.id: rule.test(bound, call) for rule in rules.rules_for(op)}


@pytest.mark.parametrize("base", sorted(VALID))
def test_every_rule_keeps_a_documented_call_on_its_own(base: str) -> None:
    op, make = VALID[base]
    fired = {rule: out for rule, out in _outcomes(op, make()).items() if out is not None}
    assert fired == {}


@pytest.mark.parametrize("case", CASES, ids=str)
def test_every_rule_answers_on_every_malformed_call(case: Case) -> None:
    op, kwargs = _call(case)
    outcomes = _outcomes(op, kwargs)  # raises if any rule crashes
    fired = outcomes[case.rule]
    assert fired is not None, f"{case.rule} kept {kwargs}"
    for rule_id, outcome in outcomes.items():
        if outcome is None:
            continue
        detail = outcome[1] if isinstance(outcome, tuple) else outcome
        assert isinstance(detail, str) and detail, rule_id


def fa_bsh(**change) -> dict:
    """npu_fusion_attention in BSH: 4 query heads of 64 over 2 KV heads."""
    call = dict(
        query=meta(2, 8, 4 * 64),
        **same("key value", 2, 8, 2 * 64),
        head_num=4,
        input_layout="BSH",
    )
    return {**call, **change}


def _base(name: str) -> dict:
    return VALID[name][1]()


# (op, call, rule, what the rule says on its own). Each call is malformed in a way an
# earlier rule of the op may already refuse; the rule named must still judge it by itself.
ALONE = [
    (FIA, dict(_base("fia_decode"), num_heads=3), "fia.num_heads", "does not divide"),
    (
        FIA,
        dict(_base("fia_paged"), actual_seq_lengths_kv=[200, -1]),
        "fia.paged.actual_seq_lengths_kv",
        "negative length in [200, -1]",
    ),
    (
        FIA,
        dict(_base("fia_paged"), block_table=meta(2, 2, 1, dtype=I32)),
        "fia.block_table.shape",
        "block_table has shape (2, 2, 1)",
    ),
    (FA, fa_bsh(), "fa.heads", None),
    (FA, fa_bsh(head_num=3), "fa.heads", "head_num=3 does not split query (2, 8, 256)"),
    (FA, fa_bsh(**same("key value", 2, 8, 100)), "fa.heads", "does not split"),
    (FA, fa_bsh(value=meta(2, 8, 65)), "fa.heads", "does not split"),
    (FA, dict(_base("fa_varlen"), query=meta(2**20 + 1, 4, 64)), "fa.sizes", "T=1048577"),
    (
        rules.SCATTER,
        dict(_base("scatter"), key=meta(6, 2, 3, 64), value=meta(6, 2, 4, 64)),
        "scatter.compressed_scene",
        ("value", "key (6, 2, 3, 64), value (6, 2, 4, 64)"),
    ),
    (
        rules.SCATTER,
        dict(_base("scatter"), **same("key value", 6, 2, 3, 64)),
        "scatter.compressed_scene",
        ("compress_lens", "compress_lens missing with 4-D key"),
    ),
    (
        rules.SCATTER,
        dict(
            _base("scatter"),
            **same("key value", 6, 2, 3, 64),
            **same("compress_lens seq_lens", 6, 2, dtype=I32),
        ),
        "scatter.compressed_scene",
        ("slot_mapping", "slot_mapping (6,) for key (6, 2, 3, 64)"),
    ),
    (
        rules.SCATTER,
        dict(
            _base("scatter"),
            **same("key value", 6, 2, 3, 64),
            **same("compress_lens seq_lens", 6, 2, dtype=I32),
            slot_mapping=meta(6, 3, dtype=I32),
        ),
        "scatter.compressed_scene",
        ("key_cache", "key_cache (4, 128, 2, 64) with 4-D key"),
    ),
    (
        rules.SCATTER,
        dict(
            _base("scatter"),
            **same("key value", 6, 2, 3, 64),
            **same("compress_lens seq_lens", 6, 2, dtype=I32),
            **same("key_cache value_cache", 4, 128, 1, 64),
            slot_mapping=meta(6, 3, dtype=I32),
        ),
        "scatter.compressed_scene",
        None,
    ),
    (
        rules.SCATTER,
        dict(_base("scatter"), value_cache=meta(4, 128, 2, 32)),
        "scatter.nd_layout",
        ("value_cache", "value_cache (4, 128, 2, 32) for value (6, 2, 64)"),
    ),
    (
        rules.RESHAPE_AND_CACHE,
        dict(_base("reshape_and_cache"), key=meta(6, 256, dtype=F16)),
        "atb.reshape_and_cache.shapes",
        ("key", "key has shape (6, 256)"),
    ),
    (
        rules.RESHAPE_AND_CACHE,
        dict(_base("reshape_and_cache"), value=meta(5, 2, 128, dtype=F16)),
        "atb.reshape_and_cache.shapes",
        ("value", "value (5, 2, 128) for key (6, 2, 128)"),
    ),
    (
        rules.RESHAPE_AND_CACHE,
        dict(_base("reshape_and_cache"), value_cache=meta(5, 128, 2, 128, dtype=F16)),
        "atb.reshape_and_cache.shapes",
        ("value_cache", "value_cache (5, 128, 2, 128), key_cache (4, 128, 2, 128)"),
    ),
    (
        rules.PAGED,
        dict(_base("paged_attention"), query=meta(3, 4, 128, dtype=F16)),
        "atb.paged_attention.heads",
        ("query", "query (3, 4, 128) for num_heads=8"),
    ),
    (
        rules.PAGED,
        dict(_base("paged_attention"), key_cache=meta(4, 128, 4, 128, dtype=F16)),
        "atb.paged_attention.heads",
        ("key_cache", "key_cache (4, 128, 4, 128) for num_kv_heads=2"),
    ),
    (
        rules.PAGED,
        dict(_base("paged_attention"), query=meta(3, 1024, dtype=F16)),
        "atb.paged_attention.head_size",
        None,
    ),
    (
        rules.PAGED,
        dict(_base("paged_attention"), **same("key_cache value_cache", 4, 128, 2, 64, dtype=F16)),
        "atb.paged_attention.head_size",
        "key head size 64, query's 128",
    ),
    (
        rules.QLENS,
        dict(_base("qlens"), **same("key_cache value_cache", 4, 128, 2 * 128, dtype=F16)),
        "atb.qlens.layout",
        None,  # the (numBlocks, blockSize, kvHeads * headSize) form
    ),
    (
        rules.QLENS,
        dict(_base("qlens"), **same("key_cache value_cache", 4, 128, dtype=F16)),
        "atb.qlens.layout",
        "key_cache has shape (4, 128)",
    ),
    (
        rules.QLENS,
        dict(_base("qlens"), **same("key_cache value_cache", 4, 128, 255, dtype=F16)),
        "atb.qlens.layout",
        "key_cache (4, 128, 255) for num_kv_heads=2",
    ),
    (
        rules.QLENS,
        dict(_base("qlens"), query=meta(3, 8 * 64, dtype=F16)),
        "atb.qlens.layout",
        ("query", "query (3, 512) for 8 heads of 128"),
    ),
    # Lengths on the device are not read without a host view; lengths of different counts
    # are the batch rule's business.
    (
        rules.QLENS,
        dict(_base("qlens"), seq_len=meta(2, dtype=I32)),
        "atb.qlens.prefix_alignment",
        None,
    ),
    (rules.QLENS, dict(_base("qlens"), seq_len=host(2, 1, 1)), "atb.qlens.prefix_alignment", None),
]


@pytest.mark.parametrize(("op", "call", "rule", "expected"), ALONE, ids=lambda v: "")
def test_a_rule_on_its_own_judges_what_it_owns(op: str, call: dict, rule: str, expected) -> None:
    outcome = _outcomes(op, call)[rule]
    if expected is None:
        assert outcome is None
    elif isinstance(expected, tuple):
        assert isinstance(outcome, tuple) and outcome[0] == expected[0], outcome
        assert expected[1] in outcome[1]
    else:
        detail = outcome[1] if isinstance(outcome, tuple) else outcome
        assert detail is not None and expected in detail, outcome


def test_a_rule_id_cannot_be_registered_twice() -> None:
    before = len(rules.all_rules())
    register = rules._rule("fia.query.dtype", FIA, "query", "again", rules.docs(1))
    with pytest.raises(ValueError, match="rule fia.query.dtype registered twice"):
        register(lambda a, c: None)
    assert len(rules.all_rules()) == before
