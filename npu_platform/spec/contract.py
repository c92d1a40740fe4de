"""Checking a call against a torch_npu op schema, the way torch's argument parser would.

:func:`bind` maps ``(args, kwargs)`` onto a parsed :class:`~npu_platform.spec.schema.OpSchema`
like Python binds a call to a ``def``: positional arguments fill the positional parameters in
order, keyword-only parameters (those after ``*``) can only be passed by name, defaults fill
the rest. Every value is checked against its declared type. Anything wrong raises
:class:`ContractError` naming the op and the argument.

References use the helpers at the bottom (:func:`require_choice`, :func:`require_unset`,
:func:`unsupported`) to refuse layouts, modes or optional inputs they do not implement; those
raise :class:`UnsupportedByReference`, a :class:`ContractError` that lists what is accepted.
A bound call that breaks a kernel's documented constraint (:mod:`npu_platform.spec.rules`)
raises :class:`RuleViolation`, a :class:`ContractError` that cites the documentation.
"""

from __future__ import annotations

import difflib
import numbers
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from npu_platform.errors import NPUPlatformError
from npu_platform.spec.schema import Arg, ArgType, OpSchema, Symbol


class ContractError(NPUPlatformError, TypeError):
    """A call that does not fit the op's schema or the reference's documented constraints."""

    def __init__(self, op: str, message: str, argument: str | None = None) -> None:
        self.op = op
        self.argument = argument
        self._message = message
        super().__init__(f"torch_npu.{op}: {message}")

    def __reduce__(self):  # keep the error picklable (it may cross process boundaries)
        return (ContractError, (self.op, self._message, self.argument))


class UnsupportedByReference(ContractError):
    """A valid torch_npu call using a feature the emulated reference does not implement."""

    def __init__(
        self, op: str, argument: str, value: object, accepted: Iterable[object] | str
    ) -> None:
        self.value = value
        if isinstance(accepted, str):
            accepted_text = accepted
        else:
            accepted_text = ", ".join(_show(a) for a in accepted)
        self.accepted = accepted_text
        self._accepted_arg = accepted
        ContractError.__init__(
            self,
            op,
            f"{argument}={_show(value)} is not implemented by the emulated NPU's reference "
            f"(accepted: {accepted_text})",
            argument,
        )

    def __reduce__(self):
        accepted = self._accepted_arg
        if not isinstance(accepted, str):
            accepted = tuple(accepted)
        return (UnsupportedByReference, (self.op, self.argument, self.value, accepted))


class RuleViolation(ContractError):
    """A call the kernel's documentation rules out (the kernel would refuse it on an NPU)."""

    def __init__(
        self, op: str, argument: str, detail: str, rule: str, source: str, rule_id: str
    ) -> None:
        self.detail = detail
        self.rule = rule
        self.source = source
        self.rule_id = rule_id
        ContractError.__init__(
            self,
            op,
            f"argument '{argument}': {detail}. Documented rule ({rule_id}): {rule} [{source}]",
            argument,
        )

    def __reduce__(self):
        args = (self.op, self.argument, self.detail, self.rule, self.source, self.rule_id)
        return (RuleViolation, args)


def _show(value: object) -> str:
    try:
        import torch

        if isinstance(value, torch.Tensor):
            return f"Tensor(shape={tuple(value.shape)}, dtype={value.dtype})"
    except ImportError:  # pragma: no cover
        pass
    return repr(value)


def _kind(value: object) -> str:
    """How torch's parser names a Python value's type in its messages."""
    try:
        import torch

        if isinstance(value, torch.Tensor):
            return "Tensor"
    except ImportError:  # pragma: no cover
        pass
    return type(value).__name__


# --------------------------------------------------------------------------- value checks


def _is_int(value: object) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, numbers.Integral):
        return not _is_numpy_bool(value)
    try:
        import torch

        return isinstance(value, torch.SymInt)
    except ImportError:  # pragma: no cover
        return False


def _is_numpy_bool(value: object) -> bool:
    # numpy < 2 names the type ``bool_``, numpy >= 2 ``bool``.
    return type(value).__name__ in ("bool_", "bool") and type(value).__module__ == "numpy"


def _is_bool(value: object) -> bool:
    return isinstance(value, bool) or _is_numpy_bool(value)


def _is_float(value: object) -> bool:
    if _is_bool(value):
        return False
    if isinstance(value, numbers.Real):
        return True
    try:
        import torch

        return isinstance(value, (torch.SymFloat, torch.SymInt))
    except ImportError:  # pragma: no cover
        return False


def _is_tensor(value: object) -> bool:
    import torch

    return isinstance(value, torch.Tensor)


def _scalar_ok(value: object) -> bool:
    if _is_bool(value) or isinstance(value, numbers.Number):
        return True
    return _is_tensor(value) and value.dim() == 0  # type: ignore[union-attr]


def _check_elem(base: str, value: object) -> tuple[bool, object]:
    """(ok, normalised value) for one non-list value of schema type ``base``."""
    import torch

    if base == "Tensor":
        return isinstance(value, torch.Tensor), value
    if base in ("int", "SymInt"):
        return (True, int(value)) if _is_int(value) and not _is_tensor(value) else (False, None)
    if base == "float":
        if _is_float(value) and not _is_tensor(value):
            return True, float(value)  # type: ignore[arg-type]
        return False, None
    if base == "bool":
        return (True, bool(value)) if _is_bool(value) else (False, None)
    if base == "str":
        return isinstance(value, str), value
    if base == "Scalar":
        return _scalar_ok(value), value
    if base == "ScalarType":
        return isinstance(value, torch.dtype), value
    if base == "Layout":
        return isinstance(value, torch.layout), value
    if base == "MemoryFormat":
        return isinstance(value, torch.memory_format), value
    if base == "Device":
        if isinstance(value, torch.device):
            return True, value
        if isinstance(value, str) or _is_int(value):
            return True, value
        return False, None
    if base == "Generator":
        return isinstance(value, torch.Generator), value
    # Types we have no rule for (Dimname, Storage, Stream, ...): accept as given.
    return True, value


def _type_phrase(t: ArgType) -> str:
    if t.is_list:
        size = f" of length {t.list_size}" if t.list_size is not None else ""
        item = "Tensor or None" if t.elem_optional else t.base
        if t.base == "SymInt":
            item = "int"
        return f"a list (or tuple){size} of {item}"
    return {"SymInt": "int"}.get(t.base, t.base)


def _check_value(op: str, arg: Arg, value: object, position: int | None) -> object:
    t = arg.type
    where = f"argument '{arg.name}'" + (
        f" (position {position + 1})" if position is not None else ""
    )
    if value is None:
        if t.optional:
            return None
        raise ContractError(
            op, f"{where} must be {_type_phrase(t)}, not None (it is not optional)", arg.name
        )
    if not t.is_list:
        ok, norm = _check_elem(t.base, value)
        if not ok:
            raise ContractError(
                op, f"{where} must be {_type_phrase(t)}, not {_kind(value)}", arg.name
            )
        return norm
    # lists
    if (
        t.list_size is not None
        and t.base in ("int", "SymInt", "bool")
        and not isinstance(value, (list, tuple))
    ):
        ok, norm = _check_elem(t.base, value)
        if ok:  # torch broadcasts a single value to a fixed-size list: ``stride=1``
            return [norm] * t.list_size
    if _is_tensor(value) or isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise ContractError(op, f"{where} must be {_type_phrase(t)}, not {_kind(value)}", arg.name)
    items = list(value)
    if t.list_size is not None and len(items) != t.list_size:
        raise ContractError(
            op,
            f"{where} must be {_type_phrase(t)}, but got {len(items)} element(s)",
            arg.name,
        )
    out = []
    for i, item in enumerate(items):
        if item is None and t.elem_optional:
            out.append(None)
            continue
        ok, norm = _check_elem(t.base, item)
        if not ok:
            raise ContractError(
                op,
                f"{where} must be {_type_phrase(t)}, but element {i} is {_kind(item)}",
                arg.name,
            )
        out.append(norm)
    return out


_SYMBOLS = {
    "Mean": lambda: 1,  # at::Reduction::Mean
    "Sum": lambda: 2,
    "long": lambda: __import__("torch").long,
    "contiguous_format": lambda: __import__("torch").contiguous_format,
}


def _default_value(arg: Arg) -> object:
    value = arg.default
    if isinstance(value, Symbol):
        resolve = _SYMBOLS.get(str(value))
        return resolve() if resolve else str(value)
    if isinstance(value, list):
        value = list(value)
    fixed = arg.type.is_list and arg.type.list_size is not None
    if fixed and value is not None and not isinstance(value, list):
        return [value] * arg.type.list_size  # type: ignore[operator]
    return value


def bind(schema: OpSchema, args: Sequence[Any], kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """Bind a call to ``schema``; return ``{argument name: value}`` in schema order.

    Values are normalised (numpy ints to ``int``, tuples to lists, a single int given for
    ``int[2]`` to a two-element list); defaults are filled in.
    """
    op = schema.full_name
    positional = schema.positional
    if len(args) > len(positional):
        raise ContractError(
            op,
            f"takes {len(positional)} positional argument(s) but {len(args)} were given"
            + (
                f"; {', '.join(a.name for a in schema.kwarg_only[:4])}"
                f"{', ...' if len(schema.kwarg_only) > 4 else ''} are keyword-only"
                if schema.kwarg_only
                else ""
            ),
        )
    bound: dict[str, Any] = {}
    for i, value in enumerate(args):
        arg = positional[i]
        bound[arg.name] = _check_value(op, arg, value, i)
    by_name = {a.name: a for a in schema.args}
    for name, value in kwargs.items():
        arg = by_name.get(name)
        if arg is None:
            close = difflib.get_close_matches(name, list(by_name), n=1, cutoff=0.6)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise ContractError(op, f"got an unexpected keyword argument '{name}'{hint}", name)
        if name in bound:
            raise ContractError(op, f"got multiple values for argument '{name}'", name)
        bound[name] = _check_value(op, arg, value, None)
    missing = [a.name for a in schema.args if a.name not in bound and not a.has_default]
    if missing:
        kinds = [("keyword-only " if by_name[m].kwarg_only else "") + f"'{m}'" for m in missing]
        raise ContractError(
            op,
            f"missing {len(missing)} required argument(s): {', '.join(kinds)}",
            missing[0],
        )
    return {a.name: bound[a.name] if a.name in bound else _default_value(a) for a in schema.args}


# --------------------------------------------------------------------------- reference hooks


def unsupported(op: str, argument: str, value: object, accepted: Iterable[object] | str) -> None:
    """Raise :class:`UnsupportedByReference`."""
    raise UnsupportedByReference(op, argument, value, accepted)


def require_choice(op: str, bound: Mapping[str, Any], argument: str, accepted: Sequence) -> Any:
    """The value of ``argument``, which must be one of ``accepted`` (else unsupported)."""
    value = bound[argument]
    if value not in accepted:
        unsupported(op, argument, value, accepted)
    return value


def require_unset(op: str, bound: Mapping[str, Any], arguments: Iterable[str]) -> None:
    """Each of ``arguments`` must be None (an optional input the reference does not take)."""
    for name in arguments:
        if bound[name] is not None:
            unsupported(op, name, bound[name], "None")


def check(condition: bool, op: str, argument: str | None, message: str) -> None:
    """Raise :class:`ContractError` with ``message`` unless ``condition`` holds."""
    if not condition:
        prefix = f"argument '{argument}': " if argument else ""
        raise ContractError(op, prefix + message, argument)
