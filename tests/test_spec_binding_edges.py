"""The schema parser and binder on the less-used schema types and malformed input.

torch_npu's YAML uses only a few of the types torchgen knows; these schemas are written here
to exercise the rest (Scalar, ScalarType, Layout, MemoryFormat, Device, Generator, fixed-size
bool lists, symbolic defaults) the way a new torch_npu op would use them.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from npu_platform.spec.contract import ContractError, bind
from npu_platform.spec.schema import SchemaError, Symbol, load_registry, parse_schema

EVERY_TYPE = parse_schema(
    "every_type(Scalar s, ScalarType dtype, Layout layout, MemoryFormat fmt, Device dev, "
    "Generator? gen=None, Dimname dim='x') -> Tensor"
)


def _good() -> dict[str, object]:
    return dict(
        s=2.5,
        dtype=torch.float16,
        layout=torch.strided,
        fmt=torch.channels_last,
        dev="npu:0",
    )


def test_every_schema_type_accepts_what_torch_accepts() -> None:
    gen = torch.Generator()
    bound = bind(EVERY_TYPE, [], {**_good(), "gen": gen, "dim": "rows"})
    assert bound == {
        "s": 2.5,
        "dtype": torch.float16,
        "layout": torch.strided,
        "fmt": torch.channels_last,
        "dev": "npu:0",
        "gen": gen,
        "dim": "rows",  # a type without a rule is taken as given
    }
    # A Scalar may be a bool, an int or a zero-dim tensor; a Device an index or a device.
    for scalar in (True, 3, torch.tensor(1.5)):
        assert bind(EVERY_TYPE, [], {**_good(), "s": scalar})["s"] is scalar
    assert bind(EVERY_TYPE, [], {**_good(), "dev": 1})["dev"] == 1
    assert bind(EVERY_TYPE, [], {**_good(), "dev": torch.device("cpu")})["dev"] == torch.device(
        "cpu"
    )


@pytest.mark.parametrize(
    ("name", "value", "phrase"),
    [
        ("s", torch.ones(2), "argument 's' must be Scalar, not Tensor"),
        ("s", "2", "argument 's' must be Scalar, not str"),
        ("dtype", "float16", "argument 'dtype' must be ScalarType, not str"),
        ("layout", torch.float16, "argument 'layout' must be Layout, not dtype"),
        ("fmt", torch.strided, "argument 'fmt' must be MemoryFormat, not layout"),
        ("dev", 1.0, "argument 'dev' must be Device, not float"),
        ("gen", 7, "argument 'gen' must be Generator, not int"),
    ],
)
def test_wrong_types_are_refused_naming_the_argument(name: str, value, phrase: str) -> None:
    with pytest.raises(ContractError) as err:
        bind(EVERY_TYPE, [], {**_good(), name: value})
    assert str(err.value) == f"torch_npu.every_type: {phrase}"
    assert err.value.argument == name


def test_fixed_size_lists_broadcast_and_check_each_element() -> None:
    schema = parse_schema("lists(bool[3] mask=True, float?[] weights=None, int[2] pad=0) -> ()")
    # Defaults: a single value for a fixed-size list is spread over the list.
    assert bind(schema, [], {}) == {"mask": [True, True, True], "weights": None, "pad": [0, 0]}
    assert bind(schema, [np.bool_(False)], {})["mask"] == [False, False, False]
    # Optional elements may be None; the others are normalised to float.
    assert bind(schema, [], {"weights": (1, None, np.float32(0.5))})["weights"] == [
        1.0,
        None,
        0.5,
    ]
    with pytest.raises(ContractError, match=r"'weights' must be .*element 1 is str"):
        bind(schema, [], {"weights": [1.0, "2"]})
    with pytest.raises(ContractError, match=r"'mask' .* of length 3 of bool, but got 2 element"):
        bind(schema, [[True, False]], {})


def test_symbolic_defaults_resolve_when_used() -> None:
    schema = parse_schema(
        "sym(Tensor x, int reduction=Mean, ScalarType dtype=long, "
        "MemoryFormat fmt=contiguous_format, str mode=some_future_name) -> Tensor"
    )
    default = schema.arg("mode").default
    assert isinstance(default, Symbol) and repr(default) == "Symbol('some_future_name')"
    x = torch.zeros(1)
    bound = bind(schema, [x], {})
    assert bound["reduction"] == 1
    assert bound["dtype"] is torch.long
    assert bound["fmt"] is torch.contiguous_format
    # A symbol the binder has no value for is passed on as its name.
    assert bound["mode"] == "some_future_name" and type(bound["mode"]) is str
    # List defaults are copied, so a caller mutating the bound list cannot change the schema.
    listed = parse_schema("lst(int[] sizes=[1, 2]) -> ()")
    first = bind(listed, [], {})["sizes"]
    first.append(3)
    assert bind(listed, [], {})["sizes"] == [1, 2]


def test_schema_introspection() -> None:
    schema = parse_schema("intro(Tensor(a!) self, *, int n=1) -> Tensor(a!)")
    assert schema.arg("self").type.is_tensor and not schema.arg("n").type.is_tensor
    with pytest.raises(KeyError, match="missing"):
        schema.arg("missing")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("bad(Tensor x, int<3> y) -> Tensor", "cannot parse schema type 'int<3>'"),
        ("bad(Tensor x, int y=1+2) -> Tensor", "cannot parse schema default '1+2'"),
        ("bad(Tensor x, int 2y) -> Tensor", "cannot parse schema argument 'int 2y'"),
        ("bad(Tensor) -> Tensor", "cannot parse schema argument 'Tensor'"),
    ],
)
def test_malformed_schemas_are_refused_saying_which_part(text: str, message: str) -> None:
    with pytest.raises(SchemaError) as err:
        parse_schema(text)
    assert message in str(err.value)


def test_a_yaml_that_is_not_a_mapping_is_refused(tmp_path) -> None:
    path = tmp_path / "ops.yaml"
    path.write_text("- func: npu_x(Tensor self) -> Tensor\n", encoding="utf-8")
    with pytest.raises(SchemaError) as err:
        load_registry(str(path))
    assert str(err.value) == f"{path}: expected a mapping of sections, got list"
