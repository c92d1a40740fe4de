"""Parsing torch_npu's op schema YAML (npu_platform.spec.schema)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from npu_platform import torch_npu_data
from npu_platform.spec import schema
from npu_platform.spec.schema import ArgType, Symbol, parse_default, parse_schema, parse_type


@pytest.fixture(scope="module")
def reg() -> schema.SchemaRegistry:
    return schema.registry()


def test_loading_the_real_yaml_dedupes() -> None:
    # No time limit here: a wall-clock bound fails on a busy CI machine and proves nothing
    # about the code (speed belongs to bench/).
    path = torch_npu_data.find(torch_npu_data.OP_SCHEMA_YAML)
    fresh = schema.load_registry(path)
    fresh.get("npu_fused_infer_attention_score")
    # npu_rms_norm appears in more than one section of the YAML; one schema is kept
    with open(path, encoding="utf-8") as f:
        text = f.read()
    assert text.count("func: npu_fused_infer_attention_score(") >= 2
    assert fresh.overloads("npu_fused_infer_attention_score") == [
        "npu_fused_infer_attention_score",
        "npu_fused_infer_attention_score.out",
    ]
    assert len(fresh) > 1000


def test_every_schema_in_the_yaml_parses_and_round_trips(reg: schema.SchemaRegistry) -> None:
    for name in reg.op_names():
        for full in reg.overloads(name):
            parsed = reg.get(full)
            assert parsed.full_name == full
            assert parse_schema(parsed.signature()) == parsed


def test_fused_infer_attention_score_signature(reg: schema.SchemaRegistry) -> None:
    s = reg.get("npu_fused_infer_attention_score")
    assert [a.name for a in s.positional] == ["query", "key", "value"]
    assert all(a.type == ArgType("Tensor") and not a.has_default for a in s.positional)
    layout = s.arg("input_layout")
    assert layout.kwarg_only and layout.type.base == "str" and layout.default == "BSH"
    lengths = s.arg("actual_seq_lengths")
    assert lengths.kwarg_only and lengths.default is None
    assert lengths.type == ArgType("SymInt", optional=True, is_list=True)
    assert s.arg("block_table").type == ArgType("Tensor", optional=True)
    assert s.arg("num_heads").default == 1
    assert s.arg("scale").type.base == "float" and s.arg("scale").default == 1.0
    assert s.arg("pre_tokens").default == 2147483647
    assert s.arg("softmax_lse_flag").default is False
    assert [str(r.type) for r in s.returns] == ["Tensor", "Tensor"]
    out = reg.get("npu_fused_infer_attention_score.out")
    assert out.overload == "out"
    att = out.arg("attention_out")
    assert att.kwarg_only and not att.has_default
    assert att.type.mutable and att.type.alias == "a"


def test_rms_norm_and_scatter_signatures(reg: schema.SchemaRegistry) -> None:
    rms = reg.get("npu_rms_norm")
    assert [a.name for a in rms.args] == ["self", "gamma", "epsilon"]
    eps = rms.arg("epsilon")
    assert eps.type.base == "float" and eps.default == 1e-06 and not eps.kwarg_only
    assert len(rms.returns) == 2
    scatter = reg.get("npu_scatter_pa_kv_cache")
    assert scatter.arg("key_cache").type == ArgType("Tensor", alias="a", mutable=True)
    mode = scatter.arg("cache_mode")
    assert mode.kwarg_only and mode.type == ArgType("str", optional=True)
    assert mode.default == "PA_NZ"
    assert scatter.returns == ()
    rot = reg.get("npu_rotary_mul")
    assert rot.arg("rotary_mode").default == "half" and not rot.arg("rotary_mode").kwarg_only


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Tensor", ArgType("Tensor")),
        ("Tensor?", ArgType("Tensor", optional=True)),
        ("Tensor(a!)", ArgType("Tensor", alias="a", mutable=True)),
        ("Tensor(a)", ArgType("Tensor", alias="a")),
        ("Tensor[]", ArgType("Tensor", is_list=True)),
        ("Tensor(b!)[]", ArgType("Tensor", is_list=True, alias="b", mutable=True)),
        ("Tensor?[]", ArgType("Tensor", is_list=True, elem_optional=True)),
        ("Tensor[]?", ArgType("Tensor", is_list=True, optional=True)),
        ("int", ArgType("int")),
        ("int?", ArgType("int", optional=True)),
        ("int[]?", ArgType("int", is_list=True, optional=True)),
        ("int[2]", ArgType("int", is_list=True, list_size=2)),
        ("SymInt[]?", ArgType("SymInt", is_list=True, optional=True)),
        ("SymInt", ArgType("SymInt")),
        ("bool[2]?", ArgType("bool", is_list=True, list_size=2, optional=True)),
        ("ScalarType?", ArgType("ScalarType", optional=True)),
        ("Layout?", ArgType("Layout", optional=True)),
        ("Device?", ArgType("Device", optional=True)),
        ("Scalar", ArgType("Scalar")),
    ],
)
def test_parse_type(text: str, expected: ArgType) -> None:
    parsed = parse_type(text)
    assert parsed == expected
    assert str(parsed) == text


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1e-06", 1e-06),
        ("1e-6", 1e-06),
        ("1.", 1.0),
        ("0.3333333333333333", 0.3333333333333333),
        ("2147483647", 2147483647),
        ("-1", -1),
        ('"BSH"', "BSH"),
        ("'half'", "half"),
        ('""', ""),
        ("None", None),
        ("True", True),
        ("False", False),
        ("[]", []),
        ("[1,1,1,1]", [1, 1, 1, 1]),
    ],
)
def test_parse_default(text: str, expected: object) -> None:
    value = parse_default(text)
    assert value == expected and type(value) is type(expected)


def test_symbolic_defaults_stay_symbols() -> None:
    assert parse_default("Mean") == Symbol("Mean")
    assert isinstance(parse_default("long"), Symbol)


def test_bad_schemas_are_refused() -> None:
    with pytest.raises(schema.SchemaError, match="cannot parse"):
        parse_schema("not a schema")
    with pytest.raises(schema.SchemaError, match="duplicate argument"):
        parse_schema("f(Tensor x, int x) -> Tensor")
    with pytest.raises(schema.SchemaError, match="has no op"):
        schema.SchemaRegistry([]).get("npu_nothing")


def test_registry_dedupes_and_rejects_conflicting_duplicates() -> None:
    f = "npu_x(Tensor self, int dim=-1) -> Tensor"
    reg = schema.SchemaRegistry([f, f, "npu_x.out(Tensor self, *, Tensor(a!) out) -> Tensor(a!)"])
    assert len(reg) == 2 and reg.overloads("npu_x") == ["npu_x", "npu_x.out"]
    with pytest.raises(schema.SchemaError, match="listed twice"):
        schema.SchemaRegistry([f, "npu_x(Tensor self, int dim=0) -> Tensor"])


_TYPES = [
    "Tensor",
    "Tensor?",
    "int",
    "int?",
    "int[]?",
    "int[2]",
    "float",
    "bool",
    "str?",
    "SymInt[]",
]
_DEFAULTS = {
    "Tensor?": ["None"],
    "int": ["0", "-1", "2147483647"],
    "int?": ["None", "3"],
    "int[]?": ["None", "[]"],
    "int[2]": ["[1,1]"],
    "float": ["1e-06", "1.", "0.5"],
    "bool": ["True", "False"],
    "str?": ["None", "'half'", '"BSH"'],
}


@st.composite
def _schema_text(draw: st.DrawFn) -> str:
    n = draw(st.integers(0, 6))
    names = [f"a{i}" for i in range(n)]
    star = draw(st.integers(0, n))
    parts = []
    for i, name in enumerate(names):
        if i == star:
            parts.append("*")
        t = draw(st.sampled_from(_TYPES))
        piece = f"{t} {name}"
        if t in _DEFAULTS and draw(st.booleans()):
            piece += "=" + draw(st.sampled_from(_DEFAULTS[t]))
        parts.append(piece)
    overload = draw(st.sampled_from(["", ".out", ".Tensor"]))
    rets = draw(st.sampled_from(["Tensor", "()", "(Tensor, Tensor)", "(Tensor a, Tensor b)"]))
    return f"npu_op{overload}({', '.join(parts)}) -> {rets}"


@settings(max_examples=60, deadline=None)
@given(_schema_text())
def test_generated_schemas_round_trip(text: str) -> None:
    parsed = parse_schema(text)
    assert parse_schema(parsed.signature()) == parsed
    args_text = text.split("(", 1)[1].split(") -> ", maxsplit=1)[0]
    pieces = [p for p in args_text.split(", ") if p and p != "*"]
    assert parsed.arg_names() == [p.split("=")[0].split()[-1] for p in pieces]
    star = args_text.split(", ").index("*") if "*" in args_text.split(", ") else len(pieces)
    assert [a.kwarg_only for a in parsed.args] == [i >= star for i in range(len(pieces))]
