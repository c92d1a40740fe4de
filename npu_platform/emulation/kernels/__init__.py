"""The emulated ``torch_npu`` namespace: schema-checked calls into CPU references.

``EMULATED.npu_rms_norm(x, w, epsilon=1e-6)`` does what ``torch_npu.npu_rms_norm`` would,
checked first:

1. the call is bound against torch_npu's own schema of ``npu_rms_norm`` (from the YAML that
   ships with torch_npu) by :func:`npu_platform.spec.contract.bind`; a misspelled keyword, a
   missing argument or a wrong kind raises :class:`~npu_platform.spec.contract.ContractError`;
2. the kernel's documented constraints (:mod:`npu_platform.spec.rules`, the same rules the
   op layer checks before calling a real NPU) are checked; a call outside them raises
   :class:`~npu_platform.spec.contract.RuleViolation` citing the documentation;
3. the reference registered for the op runs with the bound arguments as keywords; it checks
   what it needs to compute (values of device data such as slot and block ids) and refuses
   the features it does not implement with
   :class:`~npu_platform.spec.contract.UnsupportedByReference`.

When an op has several overloads (``npu_x`` and ``npu_x.out``), the default overload is tried
first and the others in YAML order, like torch's overload resolution; if none binds, the
default overload's error is raised.

An op with a schema but no reference raises :class:`NoReference`; a name the schema does not
have raises :class:`AttributeError`, as ``torch_npu`` itself would.
"""

from __future__ import annotations

import difflib
import threading
from collections.abc import Callable
from typing import Any

from npu_platform.errors import NPUPlatformError
from npu_platform.spec import contract, rules
from npu_platform.spec.schema import SchemaRegistry, registry

ReferenceFn = Callable[..., Any]

_references: dict[str, ReferenceFn] = {}
_loaded = False
_load_lock = threading.Lock()


class NoReference(NPUPlatformError, NotImplementedError):
    """The op exists in torch_npu's schema but the emulated NPU cannot run it."""


def reference(full_name: str) -> Callable[[ReferenceFn], ReferenceFn]:
    """Decorator registering the CPU reference of torch_npu op ``name`` or ``name.overload``.

    The function is called with every schema argument as a keyword (defaults filled in),
    so its parameter names must be the schema's.
    """

    def register(fn: ReferenceFn) -> ReferenceFn:
        if full_name in _references and _references[full_name] is not fn:
            raise ValueError(f"two references registered for torch_npu.{full_name}")
        _references[full_name] = fn
        return fn

    return register


def _ensure_references() -> None:
    global _loaded
    if _loaded:
        return
    with _load_lock:
        if not _loaded:
            from npu_platform.emulation.kernels import (  # noqa: F401
                attention,
                basic,
                fia_layouts,
                rope,
            )

            _loaded = True


def references() -> dict[str, ReferenceFn]:
    """Registered references by full op name (a copy)."""
    _ensure_references()
    return dict(_references)


class EmulatedOp:
    """One emulated torch_npu function, e.g. ``EMULATED.npu_swiglu``."""

    __slots__ = ("_namespace", "name")

    def __init__(self, namespace: EmulatedTorchNPU, name: str) -> None:
        self._namespace = namespace
        self.name = name

    def __repr__(self) -> str:
        return f"<emulated torch_npu.{self.name}>"

    def signatures(self) -> list[str]:
        """torch_npu's schema of each overload of this op."""
        reg = self._namespace.schemas
        return [reg.get(f).signature() for f in reg.overloads(self.name)]

    def bind(self, *args: Any, **kwargs: Any) -> tuple[str, dict[str, Any]]:
        """(full name of the overload that fits, bound arguments) without running anything."""
        reg = self._namespace.schemas
        first_error: contract.ContractError | None = None
        for full in reg.overloads(self.name):
            try:
                return full, contract.bind(reg.get(full), args, kwargs)
            except contract.ContractError as exc:
                if first_error is None:
                    first_error = exc
        assert first_error is not None
        raise first_error

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        full, bound = self.bind(*args, **kwargs)
        rules.check(full, bound, host=host_view)
        _ensure_references()
        fn = _references.get(full)
        if fn is None:
            have = sorted(n for n in _references if n.split(".", 1)[0] == self.name)
            extra = f" (references exist for: {', '.join(have)})" if have else ""
            raise NoReference(
                f"no reference implementation for torch_npu.{full} in emulation{extra}; "
                "the emulated NPU can only run the ops listed by "
                "npu_platform.emulation.kernels.references()"
            )
        return _on_host(fn, bound)


def host_view(tensor: Any) -> Any:
    """A CPU tensor over the memory of an emulated ``npu`` tensor (no copy), or None.

    Lets the documented rules read host-side integer tensors that a caller placed on the
    emulated device; on an NPU such values are not read (that would synchronise the device).
    """
    if tensor.device.type != "npu":
        return None
    from npu_platform.emulation import native

    return native.load().cpu_alias(tensor)


def _on_host(fn: ReferenceFn, bound: dict[str, Any]) -> Any:
    """Run a CPU reference on ``npu`` tensors without copying them.

    The references are plain torch code; on ``npu`` tensors every aten op would go through
    the device's CPU fallback, which copies its inputs (a whole KV cache per indexing op).
    ``npu`` memory is host memory, so the reference gets CPU views of the same memory
    (in-place writes land in the ``npu`` tensors) and its new outputs are copied back to the
    device of the first ``npu`` input.
    """
    import torch

    aliases: dict[int, torch.Tensor] = {}  # id(alias) -> the npu tensor it views
    device: list[torch.device] = []

    def to_host(value: Any) -> Any:
        if isinstance(value, torch.Tensor) and value.device.type == "npu":
            from npu_platform.emulation import native

            alias = native.load().cpu_alias(value)
            aliases[id(alias)] = value
            if not device:
                device.append(value.device)
            return alias
        if isinstance(value, (list, tuple)):
            return type(value)(to_host(v) for v in value)
        return value

    def to_device(value: Any) -> Any:
        if isinstance(value, torch.Tensor):
            original = aliases.get(id(value))
            if original is not None:
                return original
            return value.to(device[0]) if device else value
        if isinstance(value, tuple):
            return tuple(to_device(v) for v in value)
        if isinstance(value, list):
            return [to_device(v) for v in value]
        return value

    host_args = {name: to_host(value) for name, value in bound.items()}
    return to_device(fn(**host_args))


def mask_fingerprint(mask: Any) -> tuple:
    """Where a mask is and a sample of what it holds: the key under which a mask that passed
    a (costly) full check is remembered. The address alone is not enough: a freed mask's
    memory can hold a different mask later. The sample is the first row and column, the
    diagonal and its upper neighbour at 16 evenly spaced points, which tells a causal
    pattern from every other mask a caller is likely to pass."""
    import torch

    m = mask.reshape(-1, mask.shape[-1]) if mask.dim() != 2 else mask
    n = min(m.shape[0], m.shape[1])
    idx = torch.linspace(0, max(n - 2, 0), steps=min(16, n)).long()
    with torch.inference_mode(False):
        sample = torch.cat(
            [m[0, :16].flatten(), m[:16, 0].flatten(), m[idx, idx], m[idx, idx + (n > 1)]]
        )
        values = tuple(sample.detach().to("cpu", torch.float32).tolist())
    return (m.data_ptr(), str(m.device), m.dtype, tuple(m.stride()), tuple(m.shape), values)


class CheckedMasks:
    """Masks that passed a costly full check, remembered by :func:`mask_fingerprint` (the
    attention kernels see the same mask on every call of every layer)."""

    _LIMIT = 64

    def __init__(self) -> None:
        self._seen: set[tuple] = set()
        self._lock = threading.Lock()

    def check(self, mask: Any, full_check: Callable[[], None]) -> None:
        """Run ``full_check()`` (it raises for a bad mask) unless ``mask`` passed before."""
        key = mask_fingerprint(mask)
        if key in self._seen:
            return
        full_check()
        with self._lock:
            if len(self._seen) >= self._LIMIT:
                self._seen.clear()
            self._seen.add(key)


class EmulatedTorchNPU:
    """Stands in for the ``torch_npu`` module on the emulated NPU."""

    def __init__(self, schemas: SchemaRegistry | None = None) -> None:
        self._schemas = schemas
        self._ops: dict[str, EmulatedOp] = {}

    @property
    def schemas(self) -> SchemaRegistry:
        if self._schemas is None:
            self._schemas = registry()
        return self._schemas

    def __getattr__(self, name: str) -> EmulatedOp:
        if name.startswith("__") or name in ("_schemas", "_ops"):
            raise AttributeError(name)
        op = self._ops.get(name)
        if op is not None:
            return op
        if not self.schemas.has_op(name):
            close = difflib.get_close_matches(name, self.schemas.op_names(), n=3, cutoff=0.75)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise AttributeError(
                f"emulated torch_npu has no attribute '{name}': torch_npu's op schema "
                f"({self.schemas.source}) has no op of that name{hint}"
            )
        op = self._ops.setdefault(name, EmulatedOp(self, name))
        return op

    def __dir__(self) -> list[str]:
        return sorted(set(super().__dir__()) | set(self.schemas.op_names()))

    def __repr__(self) -> str:
        return "<emulated torch_npu namespace>"


EMULATED = EmulatedTorchNPU()
"""The process-wide emulated namespace."""
