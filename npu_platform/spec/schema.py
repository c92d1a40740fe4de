"""torch_npu's op schemas, read from the YAML that torch_npu's code generator consumes.

The YAML (``csrc/aten/npu_native_functions_by_codegen.yaml``) is a mapping of sections
(``custom``, ``supported``, ``symint``, ...) to lists of entries; each entry carries a
torchgen-style ``func:`` string such as::

    npu_rms_norm(Tensor self, Tensor gamma, float epsilon=1e-06) -> (Tensor, Tensor)

The same op may be listed in several sections (identically); we keep one copy. Overloads
(``name.out``) are separate schemas. Entries whose ``func`` is a bare aten name without a
signature (``clone``) are skipped: they describe aten ops, not torch_npu's namespace.

Loading reads the YAML once (a few tens of milliseconds with libyaml) and keeps the raw
strings; a string is parsed into an :class:`OpSchema` the first time it is asked for.
This module does not import torch.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field

from npu_platform.errors import NPUPlatformError

_SECTIONS_SKIPPED = ("backend", "cpp_namespace")


class SchemaError(NPUPlatformError, ValueError):
    """A schema string we cannot parse, or an op the schema does not have."""


class Symbol(str):
    """A default spelled as a bare C++ identifier (``Mean``, ``long``, ``contiguous_format``).

    The binder resolves it to a Python value when the default is actually used.
    """

    __slots__ = ()

    def __repr__(self) -> str:
        return f"Symbol({str(self)!r})"


@dataclass(frozen=True)
class ArgType:
    """A parsed schema type such as ``Tensor(a!)``, ``int[2]``, ``SymInt[]?`` or ``Tensor?[]``."""

    base: str  # Tensor, int, SymInt, float, bool, str, Scalar, ScalarType, ...
    optional: bool = False  # the whole value may be None (``int[]?``, ``Tensor?``)
    is_list: bool = False
    list_size: int | None = None  # ``int[2]`` -> 2
    elem_optional: bool = False  # ``Tensor?[]``: list items may be None
    alias: str | None = None  # ``a`` in ``Tensor(a!)``
    mutable: bool = False  # ``!`` in ``Tensor(a!)``

    @property
    def is_tensor(self) -> bool:
        return self.base == "Tensor"

    def __str__(self) -> str:
        text = self.base
        if self.alias is not None:
            text += f"({self.alias}{'!' if self.mutable else ''})"
        if self.is_list:
            if self.elem_optional:
                text += "?"
            text += f"[{self.list_size}]" if self.list_size is not None else "[]"
        if self.optional:
            text += "?"
        return text


_NO_DEFAULT = object()


@dataclass(frozen=True)
class Arg:
    name: str
    type: ArgType
    default: object = _NO_DEFAULT
    kwarg_only: bool = False

    @property
    def has_default(self) -> bool:
        return self.default is not _NO_DEFAULT

    def __str__(self) -> str:
        text = f"{self.type} {self.name}"
        if self.has_default:
            text += f"={_format_default(self.default)}"
        return text


@dataclass(frozen=True)
class Return:
    type: ArgType
    name: str | None = None


@dataclass(frozen=True)
class OpSchema:
    name: str
    overload: str
    args: tuple[Arg, ...]
    returns: tuple[Return, ...]
    text: str = field(default="", compare=False)

    @property
    def full_name(self) -> str:
        return f"{self.name}.{self.overload}" if self.overload else self.name

    @property
    def positional(self) -> tuple[Arg, ...]:
        return tuple(a for a in self.args if not a.kwarg_only)

    @property
    def kwarg_only(self) -> tuple[Arg, ...]:
        return tuple(a for a in self.args if a.kwarg_only)

    def arg(self, name: str) -> Arg:
        for a in self.args:
            if a.name == name:
                return a
        raise KeyError(name)

    def arg_names(self) -> list[str]:
        return [a.name for a in self.args]

    def signature(self) -> str:
        parts: list[str] = []
        star = False
        for a in self.args:
            if a.kwarg_only and not star:
                parts.append("*")
                star = True
            parts.append(str(a))
        rets = ", ".join(str(r.type) + (f" {r.name}" if r.name else "") for r in self.returns)
        ret_text = rets if len(self.returns) == 1 else f"({rets})"
        return f"{self.full_name}({', '.join(parts)}) -> {ret_text}"


def _format_default(value: object) -> str:
    if isinstance(value, Symbol):
        return str(value)
    if isinstance(value, str):
        return repr(value)
    return repr(value)


# --------------------------------------------------------------------------- parsing

_FUNC_RE = re.compile(r"^\s*([A-Za-z_][\w]*)(?:\.([\w]+))?\s*\((.*)\)\s*->\s*(.+?)\s*$", re.S)
_TYPE_RE = re.compile(
    r"^(?P<base>[A-Za-z_]\w*)"
    r"(?:\((?P<alias>[a-z]\w*)(?P<mut>!)?\))?"
    r"(?P<elemopt>\?)?"
    r"(?:\[(?P<size>\d*)\])?"
    r"(?P<opt>\?)?$"
)
_INT_RE = re.compile(r"^-?\d+$")
_FLOAT_RE = re.compile(r"^-?(\d+\.\d*|\.\d+|\d+)([eE][-+]?\d+)?$")


def _split_top_level(text: str) -> list[str]:
    """Split on commas that are not inside brackets, parentheses or quotes."""
    parts: list[str] = []
    depth = 0
    quote: str | None = None
    start = 0
    for i, ch in enumerate(text):
        if quote:
            if ch == quote:
                quote = None
            continue
        if ch in "'\"":
            quote = ch
        elif ch in "([":
            depth += 1
        elif ch in ")]":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    tail = text[start:]
    if tail.strip() or parts:
        parts.append(tail)
    return [p.strip() for p in parts]


def parse_type(text: str) -> ArgType:
    m = _TYPE_RE.match(text.strip())
    if not m:
        raise SchemaError(f"cannot parse schema type {text!r}")
    is_list = m.group("size") is not None
    if m.group("elemopt") and not is_list:
        # ``Tensor?`` (no list): the question mark makes the value optional.
        return ArgType(
            base=m.group("base"),
            optional=True,
            alias=m.group("alias"),
            mutable=bool(m.group("mut")),
        )
    size = m.group("size")
    return ArgType(
        base=m.group("base"),
        optional=bool(m.group("opt")),
        is_list=is_list,
        list_size=int(size) if size else None,
        elem_optional=bool(m.group("elemopt")),
        alias=m.group("alias"),
        mutable=bool(m.group("mut")),
    )


def parse_default(text: str) -> object:
    text = text.strip()
    if text == "None":
        return None
    if text == "True":
        return True
    if text == "False":
        return False
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    if _INT_RE.match(text):
        return int(text)
    if _FLOAT_RE.match(text):
        return float(text)
    if text.startswith("[") and text.endswith("]"):
        inner = text[1:-1].strip()
        return [parse_default(p) for p in _split_top_level(inner)] if inner else []
    if re.match(r"^[A-Za-z_]\w*$", text):
        return Symbol(text)
    raise SchemaError(f"cannot parse schema default {text!r}")


def _parse_arg(text: str, kwarg_only: bool) -> Arg:
    decl, eq, default_text = text.partition("=")
    decl = decl.strip()
    type_text, _, name = decl.rpartition(" ")
    if not type_text or not name.isidentifier():
        raise SchemaError(f"cannot parse schema argument {text!r}")
    default = parse_default(default_text) if eq else _NO_DEFAULT
    return Arg(name=name, type=parse_type(type_text), default=default, kwarg_only=kwarg_only)


def _parse_returns(text: str) -> tuple[Return, ...]:
    text = text.strip()
    if text.startswith("(") and text.endswith(")"):
        inner = text[1:-1].strip()
        items = _split_top_level(inner) if inner else []
    else:
        items = [text]
    out = []
    for item in items:
        type_text, _, name = item.strip().partition(" ")
        out.append(Return(type=parse_type(type_text), name=name.strip() or None))
    return tuple(out)


def parse_schema(text: str) -> OpSchema:
    """Parse one torchgen-style ``func`` string."""
    m = _FUNC_RE.match(text)
    if not m:
        raise SchemaError(f"cannot parse op schema {text!r}")
    name, overload, args_text, returns_text = m.groups()
    args: list[Arg] = []
    kwarg_only = False
    seen: set[str] = set()
    for piece in _split_top_level(args_text):
        if piece == "*":
            kwarg_only = True
            continue
        arg = _parse_arg(piece, kwarg_only)
        if arg.name in seen:
            raise SchemaError(f"duplicate argument {arg.name!r} in op schema {text!r}")
        seen.add(arg.name)
        args.append(arg)
    return OpSchema(
        name=name,
        overload=overload or "",
        args=tuple(args),
        returns=_parse_returns(returns_text),
        text=text.strip(),
    )


# --------------------------------------------------------------------------- registry


class SchemaRegistry:
    """The op schemas of one YAML file: raw strings kept, parsed on first use."""

    def __init__(self, funcs: Iterable[str], source: str = "<memory>") -> None:
        self.source = source
        self._raw: dict[str, str] = {}  # full name -> func string
        self._by_name: dict[str, list[str]] = {}  # base name -> full names, YAML order
        self._parsed: dict[str, OpSchema] = {}
        self._lock = threading.Lock()
        for func in funcs:
            head = func.split("(", 1)[0].strip()
            if "(" not in func or not head:
                continue
            if head in self._raw:
                if " ".join(self._raw[head].split()) != " ".join(func.split()):
                    raise SchemaError(
                        f"{source}: op {head} is listed twice with different schemas:\n"
                        f"  {self._raw[head]}\n  {func}"
                    )
                continue
            self._raw[head] = func
            self._by_name.setdefault(head.split(".", 1)[0], []).append(head)

    def __contains__(self, full_name: str) -> bool:
        return full_name in self._raw

    def __len__(self) -> int:
        return len(self._raw)

    def op_names(self) -> list[str]:
        """Base names (no overload), in YAML order."""
        return list(self._by_name)

    def has_op(self, name: str) -> bool:
        return name in self._by_name

    def overloads(self, name: str) -> list[str]:
        """Full names of ``name``'s overloads, the default (unnamed) overload first."""
        fulls = self._by_name.get(name, [])
        return sorted(fulls, key=lambda f: 0 if f == name else 1)

    def raw(self, full_name: str) -> str:
        try:
            return self._raw[full_name]
        except KeyError:
            raise SchemaError(
                f"torch_npu op schema {self.source} has no op {full_name!r}"
            ) from None

    def get(self, full_name: str) -> OpSchema:
        """The parsed schema of ``name`` or ``name.overload``."""
        schema = self._parsed.get(full_name)
        if schema is None:
            schema = parse_schema(self.raw(full_name))
            with self._lock:
                self._parsed.setdefault(full_name, schema)
        return schema


def _funcs_from_yaml(path: str) -> list[str]:
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    with open(path, encoding="utf-8") as f:
        data = yaml.load(f, Loader=loader)
    if not isinstance(data, dict):
        raise SchemaError(f"{path}: expected a mapping of sections, got {type(data).__name__}")
    funcs: list[str] = []
    for section, entries in data.items():
        if section in _SECTIONS_SKIPPED or not isinstance(entries, list):
            continue
        for entry in entries:
            if isinstance(entry, dict) and isinstance(entry.get("func"), str):
                funcs.append(entry["func"])
    return funcs


def load_registry(path: str) -> SchemaRegistry:
    return SchemaRegistry(_funcs_from_yaml(path), source=path)


_default: SchemaRegistry | None = None
_default_lock = threading.Lock()


def registry() -> SchemaRegistry:
    """The registry of the torch_npu schema YAML found by :mod:`npu_platform.torch_npu_data`."""
    global _default
    if _default is None:
        with _default_lock:
            if _default is None:
                from npu_platform import torch_npu_data

                _default = load_registry(torch_npu_data.find(torch_npu_data.OP_SCHEMA_YAML))
    return _default


def get_schema(full_name: str) -> OpSchema:
    """Shortcut: ``registry().get(full_name)``."""
    return registry().get(full_name)
