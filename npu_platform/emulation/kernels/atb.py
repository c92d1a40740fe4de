"""CPU references of the ATB (Ascend Transformer Boost) ops sglang's NPU path calls.

torch_npu exposes ATB ops as top-level functions (``torch_npu._npu_paged_attention``, ...).
They are not in torch_npu's op-schema YAML; their C++ signatures are in the wheel's
``include/third_party/op-plugin/op_plugin/include/AtbOpsInterface.h``. :func:`schemas`
parses that header into :class:`~npu_platform.spec.schema.OpSchema` objects (C++ types
mapped to torchgen's: ``const at::Tensor&`` is ``Tensor``, ``at::Tensor&`` is ``Tensor(a!)``,
``c10::optional<at::Tensor>`` is ``Tensor?``, ``int64_t`` is ``int``, ``double`` is ``float``,
``c10::SymIntArrayRef`` is ``SymInt[]``, ``c10::optional<c10::string_view>`` is ``str?``), and
every call is bound against it with :func:`npu_platform.spec.contract.bind` before the
reference runs, so a wrong name, order or kind raises
:class:`~npu_platform.spec.contract.ContractError` (a ``TypeError``) naming the argument.

The header carries no defaults. A trailing optional parameter (``c10::optional``,
``c10::OptionalArrayRef`` with only optional ones after it) is taken to default to ``None``:
sglang calls ``_npu_paged_attention`` without ``workspace`` on real NPUs, which only works if
it does. Optional parameters followed by required ones must be passed (``None`` allowed).

:data:`ATB_OPS` maps each op with a reference to its callable; :func:`all_ops` adds every
other op of the header, which binds and then raises
:class:`~npu_platform.emulation.kernels.NoReference`.

Before a reference runs, the call is checked against the ATB operators' documented
constraints (dtypes, layouts, heads, head and block sizes; :mod:`npu_platform.spec.rules`),
the same rules :func:`npu_platform.ops.check_call` applies. Facts the references implement
(torch_npu/ATB documentation and tests, sglang 0.5.23's use):

* KV caches are ND, ``(num_blocks, block_size, num_kv_heads, head_dim)`` (``head_dim`` of
  the value cache may differ); the NZ layout is not emulated. Slot ``s`` is block
  ``s // block_size``, row ``s % block_size``. ``_npu_reshape_and_cache`` skips negative
  slots (padding) and needs int32 slots.
* ``block_table`` is int32 ``(batch, max_blocks)``; request ``b`` reads its first
  ``ceil(context_lens[b] / block_size)`` entries.
* ``_npu_paged_attention`` (decode): one query token per request, attending to all
  ``context_lens[b]`` cached tokens.
* ``_npu_flash_attention_qlens`` (prefill/extend over the paged cache): ``seq_len`` holds
  each request's query length, ``context_lens`` its total KV length (prefix included); query
  ``i`` of a request sits at position ``context_len - q_len + i`` and attends to keys at
  positions ``<= i + context_len - q_len`` (causal, bottom-right aligned).
* ``_npu_flash_attention`` (prefill without a cache): key/value hold the same tokens as the
  query; ``seq_len`` splits them into requests; causal per request.
* The ``mask`` of both flash-attention ops is the causal pattern (sglang passes a 128x128
  one for any length: ATB treats it as compressed). The reference checks it is one: non-zero
  exactly above the diagonal (``-inf``/``finfo.min`` for float16, 1 for bfloat16, as
  sglang builds them); any other mask is refused (not emulated).
* Query/key/value dtypes are float16 or bfloat16 (ATB has no float32 attention); caches
  hold the same dtype as key/value.
* Heads: query head ``h`` uses KV head ``h // (num_heads // num_kv_heads)``.

Outputs are written in place into ``out`` / the caches; the ops return ``None`` (C++
``void``). Tensors on the emulated ``npu`` device are read and written through CPU aliases
of their memory (no copies).
"""

from __future__ import annotations

import functools
import os
import re
import threading
from collections.abc import Callable
from typing import Any

import torch

from npu_platform.emulation.kernels import CheckedMasks, NoReference, host_view
from npu_platform.emulation.kernels.attention import allowed_matrix, attend
from npu_platform.spec import contract, rules
from npu_platform.spec.contract import ContractError, check, unsupported
from npu_platform.spec.schema import OpSchema, SchemaError, parse_schema

__all__ = ["ATB_OPS", "HEADER", "AtbOp", "all_ops", "header_path", "parse_header", "schemas"]

HEADER = os.path.join(
    "include", "third_party", "op-plugin", "op_plugin", "include", "AtbOpsInterface.h"
)
"""The header's path inside the torch_npu package (found by :mod:`npu_platform.torch_npu_data`)."""

_ATTN_DTYPES = (torch.float16, torch.bfloat16)

# --------------------------------------------------------------------------- header parsing

_DECL_RE = re.compile(r"TORCH_NPU_API\s+(?P<ret>.+?)\s+(?P<name>\w+)\s*\((?P<args>.*?)\)\s*;", re.S)

_SCALARS = {
    "int64_t": "int",
    "double": "float",
    "bool": "bool",
    "c10::SymIntArrayRef": "SymInt[]",
    "at::IntArrayRef": "int[]",
    "c10::OptionalArrayRef<c10::SymInt>": "SymInt[]?",
    "c10::OptionalArrayRef<int64_t>": "int[]?",
    "c10::optional<c10::string_view>": "str?",
    "c10::string_view": "str",
    "c10::optional<int64_t>": "int?",
    "c10::optional<double>": "float?",
    "c10::optional<bool>": "bool?",
}


def _cpp_param(text: str, aliases: list[str]) -> str:
    """One C++ parameter declaration as a torchgen argument (with ``=None`` if optional)."""
    decl = " ".join(text.replace("&", " & ").split())
    m = re.match(r"^(?P<type>.*?)\s*(?P<ref>&)?\s*(?P<name>\w+)$", decl)
    if not m:
        raise SchemaError(f"cannot read C++ parameter {text!r}")
    ctype, is_ref, name = m.group("type").strip(), bool(m.group("ref")), m.group("name")
    const = ctype.startswith("const ")
    if const:
        ctype = ctype[len("const ") :].strip()
    if ctype == "at::Tensor":
        if is_ref and not const:
            alias = chr(ord("a") + len(aliases))
            aliases.append(alias)
            return f"Tensor({alias}!) {name}"
        return f"Tensor {name}"
    if ctype == "c10::optional<at::Tensor>":
        return f"Tensor? {name}=None"
    schema_type = _SCALARS.get(ctype)
    if schema_type is None:
        raise SchemaError(f"no schema type for C++ type {ctype!r} (parameter {name!r})")
    return f"{schema_type} {name}" + ("=None" if schema_type.endswith("?") else "")


def _cpp_return(ret: str) -> str:
    ret = " ".join(ret.split())
    if ret == "void":
        return "()"
    m = re.match(r"^std::tuple<(.*)>$", ret)
    items = [s.strip() for s in m.group(1).split(",")] if m else [ret]
    out = ["Tensor" for _ in items]
    return out[0] if len(out) == 1 and not m else f"({', '.join(out)})"


def parse_header(text: str) -> dict[str, OpSchema]:
    """The op schemas declared in ``AtbOpsInterface.h`` text, by full name.

    ``X_out`` declared next to ``X`` becomes the overload ``X.out`` (torch's convention for
    out= variants); everything else is a default overload.
    """
    decls: list[tuple[str, str, list[str]]] = []
    for m in _DECL_RE.finditer(text):
        params = [p for p in (s.strip() for s in m.group("args").split(",")) if p]
        decls.append((m.group("name"), m.group("ret"), params))
    names = {d[0] for d in decls}
    out: dict[str, OpSchema] = {}
    for name, ret, params in decls:
        aliases: list[str] = []
        args = [_cpp_param(p, aliases) for p in params]
        # Only trailing optional parameters default to None (a default cannot come before a
        # required parameter in a Python-style signature).
        for i in range(len(args) - 1, -1, -1):
            if not args[i].endswith("=None"):
                args[:i] = [a.removesuffix("=None") for a in args[:i]]
                break
        full = name
        if name.endswith("_out") and name[: -len("_out")] in names:
            full = f"{name[: -len('_out')]}.out"
        schema = parse_schema(f"{full}({', '.join(args)}) -> {_cpp_return(ret)}")
        out[schema.full_name] = schema
    if not out:
        raise SchemaError("no TORCH_NPU_API declarations found in the ATB header")
    return out


def header_path() -> str:
    """Absolute path of ``AtbOpsInterface.h`` (:class:`EnvironmentProblem` if absent)."""
    from npu_platform import torch_npu_data

    return torch_npu_data.find(HEADER)


_schemas: dict[str, OpSchema] | None = None
_schemas_lock = threading.Lock()


def schemas() -> dict[str, OpSchema]:
    """The parsed header, read once per process."""
    global _schemas
    with _schemas_lock:
        if _schemas is None:
            with open(header_path(), encoding="utf-8") as f:
                _schemas = parse_header(f.read())
        return _schemas


# --------------------------------------------------------------------------- device access


@functools.cache
def _cpu_alias() -> Callable[[torch.Tensor], torch.Tensor] | None:
    try:
        from npu_platform.emulation import native

        return native.load().cpu_alias
    except Exception:  # no native device in this process: only CPU tensors reach us
        return None


def _host(t: torch.Tensor) -> torch.Tensor:
    """A CPU tensor over the same memory as ``t`` (``t`` itself on CPU)."""
    if t.device.type == "cpu":
        return t
    if t.device.type == "npu":
        alias = _cpu_alias()
        if alias is not None:
            return alias(t)
    raise ContractError(
        "atb",
        f"tensors must be on the emulated npu device (or the CPU), got one on {t.device}",
    )


def _ints(t: torch.Tensor) -> list[int]:
    return [int(x) for x in _host(t).tolist()]


# --------------------------------------------------------------------------- shared checks


def _check_dtype(op: str, name: str, t: torch.Tensor, allowed=_ATTN_DTYPES) -> None:
    check(
        t.dtype in allowed,
        op,
        name,
        f"dtype {t.dtype} is not supported by ATB {op} "
        f"(accepted: {', '.join(str(d) for d in allowed)})",
    )


def _check_heads(op: str, num_heads: int, num_kv_heads: int) -> None:
    check(num_heads > 0, op, "num_heads", f"must be positive, got {num_heads}")
    check(
        num_kv_heads > 0 and num_heads % num_kv_heads == 0,
        op,
        "num_kv_heads",
        f"{num_kv_heads} must be positive and divide num_heads={num_heads}",
    )


def _lengths(op: str, name: str, t: torch.Tensor, batch: int | None = None) -> list[int]:
    check(t.dim() == 1, op, name, f"must be 1-D (one length per request), got {tuple(t.shape)}")
    check(
        t.dtype in (torch.int32, torch.int64),
        op,
        name,
        f"dtype must be int32, got {t.dtype}",
    )
    values = _ints(t)
    if batch is not None:
        check(
            len(values) == batch,
            op,
            name,
            f"has {len(values)} entries but the batch has {batch} requests",
        )
    for i, v in enumerate(values):
        check(v >= 0, op, name, f"element {i} = {v} is negative")
    return values


def _gather(op: str, cache: torch.Tensor, row: torch.Tensor, length: int, b: int) -> torch.Tensor:
    """The first ``length`` cached tokens of request ``b``: (length, heads, dim)."""
    block_size = cache.shape[1]
    n_blocks = -(-length // block_size)
    check(
        n_blocks <= row.shape[0],
        op,
        "block_table",
        f"request {b} needs {n_blocks} blocks for {length} tokens (block_size {block_size}) "
        f"but its row holds {row.shape[0]}",
    )
    if n_blocks == 0:
        return cache.new_empty((0, cache.shape[2], cache.shape[3]))
    ids = row[:n_blocks].to(torch.int64)
    lo, hi = int(ids.min()), int(ids.max())
    check(
        lo >= 0 and hi < cache.shape[0],
        op,
        "block_table",
        f"request {b} uses block ids in [{lo}, {hi}] but the cache has {cache.shape[0]} blocks",
    )
    return cache[ids].reshape(n_blocks * block_size, cache.shape[2], cache.shape[3])[:length]


_checked_masks = CheckedMasks()


def _check_causal_mask(op: str, mask: torch.Tensor) -> None:
    """``mask`` must be the causal pattern: non-zero exactly above the diagonal."""
    check(
        mask.dim() in (2, 3) and (mask.dim() == 2 or mask.shape[0] == 1),
        op,
        "mask",
        f"must be a square 2-D mask (or 1 x S x S), got shape {tuple(mask.shape)}",
    )
    m = mask[0] if mask.dim() == 3 else mask
    check(m.shape[0] == m.shape[1], op, "mask", f"must be square, got {tuple(mask.shape)}")

    def full_check() -> None:
        host = _host(m)
        upper = torch.ones(host.shape, dtype=torch.bool).triu(diagonal=1)
        if not bool(torch.equal(host != 0, upper)):
            unsupported(
                op,
                "mask",
                mask,
                "the causal mask: non-zero (-inf or the dtype's minimum for float16, 1 for "
                "bfloat16) exactly above the diagonal, zero elsewhere",
            )

    _checked_masks.check(m, full_check)


# --------------------------------------------------------------------------- references


def _npu_reshape_and_cache(
    key: torch.Tensor,
    value: torch.Tensor,
    key_cache: torch.Tensor,
    value_cache: torch.Tensor,
    slot_indices: torch.Tensor,
) -> None:
    op = "_npu_reshape_and_cache"  # shapes and dtypes are documented rules
    num_blocks, block_size = key_cache.shape[:2]
    slots = _host(slot_indices).to(torch.int64)
    keep = slots >= 0
    if not bool(keep.any()):
        return
    slots = slots[keep]
    top = int(slots.max())
    check(
        top < num_blocks * block_size,
        op,
        "slot_indices",
        f"slot {top} is outside the cache ({num_blocks} blocks x {block_size} slots)",
    )
    kc, vc = _host(key_cache), _host(value_cache)
    blocks, rows = slots // block_size, slots % block_size
    kc[blocks, rows] = _host(key)[keep]
    vc[blocks, rows] = _host(value)[keep]


def _npu_paged_attention(
    query: torch.Tensor,
    key_cache: torch.Tensor,
    value_cache: torch.Tensor,
    num_kv_heads: int,
    num_heads: int,
    scale_value: float,
    block_table: torch.Tensor,
    context_lens: torch.Tensor,
    out: torch.Tensor,
    workspace: torch.Tensor | None = None,
) -> None:
    op = "_npu_paged_attention"  # dtypes, heads, head and block sizes are documented rules
    del workspace  # a scratch buffer for the kernel; results do not depend on it
    check(
        tuple(value_cache.shape[:2]) == tuple(key_cache.shape[:2]),
        op,
        "value_cache",
        "must have the key cache's (num_blocks, block_size)",
    )
    lens = _lengths(op, "context_lens", context_lens, query.shape[0])
    q, kc, vc, table, o = (_host(t) for t in (query, key_cache, value_cache, block_table, out))
    for b, length in enumerate(lens):
        k = _gather(op, kc, table[b], length, b)
        v = _gather(op, vc, table[b], length, b)
        res, _, _ = attend(q[b : b + 1], k, v, scale_value, None)
        o[b] = res[0].to(o.dtype)


def _npu_flash_attention_qlens(
    query: torch.Tensor,
    key_cache: torch.Tensor,
    value_cache: torch.Tensor,
    block_table: torch.Tensor,
    mask: torch.Tensor,
    seq_len: torch.Tensor,
    context_lens: torch.Tensor,
    num_kv_heads: int,
    num_heads: int,
    scale_value: float,
    out: torch.Tensor,
) -> None:
    op = "_npu_flash_attention_qlens"  # dtypes, layouts, heads, sizes are documented rules
    if key_cache.dim() == 3:  # (num_blocks, block_size, num_kv_heads * head_dim)
        shape = (*key_cache.shape[:2], num_kv_heads, -1)
        key_cache, value_cache = key_cache.view(shape), value_cache.view(shape)
    d, dv = key_cache.shape[3], value_cache.shape[3]
    total = query.shape[0]
    check(
        out.dim() in (2, 3) and out.shape[0] == total and out.numel() == total * num_heads * dv,
        op,
        "out",
        f"must hold ({total}, {num_heads} * {dv}) values, got {tuple(out.shape)}",
    )
    q_lens = _lengths(op, "seq_len", seq_len)
    kv_lens = _lengths(op, "context_lens", context_lens, len(q_lens))
    check(
        sum(q_lens) == total,
        op,
        "seq_len",
        f"query lengths sum to {sum(q_lens)} but query has {total} tokens",
    )
    _check_causal_mask(op, mask)
    q = _host(query).reshape(total, num_heads, d)
    o = _host(out)
    o3 = o.view(total, num_heads, dv)
    kc, vc, table = _host(key_cache), _host(value_cache), _host(block_table)
    start = 0
    for b, (ql, kl) in enumerate(zip(q_lens, kv_lens, strict=True)):
        check(
            ql <= kl,
            op,
            "context_lens",
            f"request {b} has {ql} query tokens but a context of only {kl} (context_lens holds "
            "the total KV length, prefix included)",
        )
        if ql:
            k = _gather(op, kc, table[b], kl, b)
            v = _gather(op, vc, table[b], kl, b)
            allowed = allowed_matrix(ql, kl, "right_down_causal")
            res, _, _ = attend(q[start : start + ql], k, v, scale_value, allowed)
            o3[start : start + ql] = res.to(o.dtype)
        start += ql


def _npu_flash_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    mask: torch.Tensor,
    seq_len: torch.Tensor,
    scale_value: float,
    num_heads: int,
    num_kv_heads: int,
    out: torch.Tensor,
) -> None:
    op = "_npu_flash_attention"
    _check_heads(op, num_heads, num_kv_heads)
    check(
        query.dim() == 3 and query.shape[1] == num_heads,
        op,
        "query",
        f"must be (num_tokens, num_heads={num_heads}, head_dim), got {tuple(query.shape)}",
    )
    for name, t in (("key", key), ("value", value)):
        check(
            t.dim() == 3 and t.shape[0] == query.shape[0] and t.shape[1] == num_kv_heads,
            op,
            name,
            f"must be ({query.shape[0]}, num_kv_heads={num_kv_heads}, head_dim), got "
            f"{tuple(t.shape)}",
        )
    check(key.shape[2] == query.shape[2], op, "key", "head_dim must equal query's")
    _check_dtype(op, "query", query)
    for name, t in (("key", key), ("value", value), ("out", out)):
        check(t.dtype == query.dtype, op, name, f"dtype {t.dtype} must equal query's {query.dtype}")
    total, dv = query.shape[0], value.shape[2]
    check(
        out.numel() == total * num_heads * dv and out.shape[0] == total,
        op,
        "out",
        f"must be ({total}, {num_heads}, {dv}), got {tuple(out.shape)}",
    )
    lens = _lengths(op, "seq_len", seq_len)
    check(
        sum(lens) == total,
        op,
        "seq_len",
        f"sequence lengths sum to {sum(lens)} but query has {total} tokens",
    )
    _check_causal_mask(op, mask)
    q, k, v = _host(query), _host(key), _host(value)
    o = _host(out)
    o3 = o.view(total, num_heads, dv)
    start = 0
    for n in lens:
        if n:
            sl = slice(start, start + n)
            res, _, _ = attend(
                q[sl], k[sl], v[sl], scale_value, allowed_matrix(n, n, "left_up_causal")
            )
            o3[sl] = res.to(o.dtype)
        start += n


_REFERENCES: dict[str, Callable[..., Any]] = {
    f.__name__: f
    for f in (
        _npu_reshape_and_cache,
        _npu_paged_attention,
        _npu_flash_attention_qlens,
        _npu_flash_attention,
    )
}


# --------------------------------------------------------------------------- the callables


class AtbOp:
    """``torch_npu.<name>`` on the emulated NPU: bind against the header, run the reference."""

    def __init__(self, name: str) -> None:
        self.__name__ = name
        self.__qualname__ = name
        self._reference = _REFERENCES.get(name)
        self.__doc__ = f"Emulated ATB op torch_npu.{name} (CPU reference, schema from {HEADER})."

    def schema(self) -> OpSchema:
        found = schemas().get(self.__name__)
        if found is None:
            raise AttributeError(f"ATB header {header_path()} declares no op {self.__name__!r}")
        return found

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        bound = contract.bind(self.schema(), args, kwargs)
        rules.check(self.__name__, bound, host=host_view)
        if self._reference is None:
            raise NoReference(
                f"no reference implementation for the ATB op torch_npu.{self.__name__} in "
                f"emulation; the emulated NPU runs only {', '.join(sorted(_REFERENCES))}"
            )
        return self._reference(**bound)

    def __repr__(self) -> str:
        return f"<emulated ATB op torch_npu.{self.__name__}>"


ATB_OPS: dict[str, AtbOp] = {name: AtbOp(name) for name in _REFERENCES}
"""The ATB ops with a CPU reference, by torch_npu attribute name."""


def all_ops() -> dict[str, AtbOp]:
    """Every op the header declares (default overloads), those without a reference included."""
    ops = dict(ATB_OPS)
    for schema in schemas().values():
        if not schema.overload and schema.name not in ops:
            ops[schema.name] = AtbOp(schema.name)
    return ops
