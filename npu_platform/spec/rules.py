"""What the torch_npu kernels accept, as checked rules with their sources.

The op schema (:mod:`npu_platform.spec.schema`) says how a call may be spelled; the kernels
accept less. torch_npu 2.13.0 documents those limits in ``torch_npu/_op_plugin_docs.py``
(unpacked with the schemas, :data:`npu_platform.torch_npu_data.OP_PLUGIN_DOCS`), and CANN
documents the ATB operators behind ``torch_npu._npu_*`` and the aclnn operators behind the
norms. Each :class:`Rule` encodes one documented limit and cites it: the line(s) of
``_op_plugin_docs.py`` or the CANN page. :func:`check` runs an op's rules on a call bound by
:func:`npu_platform.spec.contract.bind` and raises :class:`RuleViolation` (a
:class:`~npu_platform.spec.contract.ContractError`) naming the op, the argument, what was
passed, the rule and its source: the call the kernel's own parameter check refuses on an
Ascend NPU is refused before it is made.

Who checks: :func:`npu_platform.ops.check_call` for every call the plugin makes (on an NPU and
on the emulated one alike), and the emulated ``torch_npu`` for the calls frameworks make
directly (sglang's ATB calls, for instance). Rules read shapes, dtypes, strides, host
integers and host tensors only. They never read a device tensor's values (on an NPU that
would synchronise the device on every call), so value checks of device data (block and slot
ids in range) stay with the emulation's references, and so does everything the emulation
does not implement (:class:`~npu_platform.spec.contract.UnsupportedByReference`).

Reading the documentation. Where two passages disagree the stricter reading is encoded and
the rule says so. Not encoded, and why:

* FIA (``npu_fused_infer_attention_score``) lines 8113-8114 list "page attention" among what
  ``input_layout='TND'`` does not support, while lines 8220 and 8285 give TND's paged cache
  layouts and line 8275 TND's per-request paged KV lengths; vllm-ascend runs TND with
  ``block_table`` on Ascend hardware. The general sentence is taken as superseded.
* FIA lines 8193-8200 (TND: N in {8, 16, 32, 64, 128}, equal query and KV heads, D = 192,
  bfloat16 only) sit inside the ``query_rope``/MLA constraints (lines 8170-8200); as general
  TND rules they would refuse every GQA model, which the rest of the text and vllm-ascend
  use. They are taken as MLA-only and not encoded.
* FIA lines 8110-8111: ``pre_tokens``/``next_tokens`` are ignored when Q_S is 1. That is not
  a refusal but a silent change: a sliding window in a BSH/BSND/BNSD decode (S = 1) covers the
  whole context. TND calls (the plugin's) take PromptFlashAttention, where they apply.
* Value ranges of device data: FIA line 8218 (block ids are not validated), scatter line
  7033 (slots in range and distinct), rotary lines 3551 and 3559 (cos/sin in [-1, 1]).

Scope: the ops the plugin calls (``npu_platform/ops``) and the ATB ops of sglang's NPU path
(``_npu_reshape_and_cache``, ``_npu_paged_attention``, ``_npu_flash_attention_qlens``).
``_npu_flash_attention`` has no rules: neither calls it. ``_npu_flash_attention_qlens`` is
ATB's SelfAttention with calcType PREFIX_ENCODER and a compressed 128x128 mask (torch_npu's
op-plugin); the CANN page cited documents PREFIX_ENCODER's inputs for its causal-mask
variant, whose base-scenario limits (block size, head size, prefix alignment) are encoded.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from npu_platform.spec.contract import RuleViolation

TORCH_NPU_DOCS = "torch_npu 2.13.0 _op_plugin_docs.py"
"""How citations name torch_npu's documentation file."""

_HIASCEND = "https://www.hiascend.com/"
CANN_RMS_NORM = (
    "CANN 8.3.RC1.alpha001 aclnnRmsNorm, parameter gamma ("
    + _HIASCEND
    + "document/detail/zh/CANNCommunityEdition/83RC1alpha001/API/aolapi/context/"
    "aclnnRmsNorm.md)"
)
CANN_ADD_RMS_NORM = (
    "CANN 8.2.RC1.alpha003 aclnnAddRmsNorm, parameters x1, x2, gamma ("
    + _HIASCEND
    + "document/detail/zh/CANNCommunityEdition/82RC1alpha003/API/aolapi/context/"
    "aclnnAddRmsNorm.md)"
)
ATB_RESHAPE_AND_CACHE = (
    "CANN 8.0.RC3 ATB ReshapeAndCacheOperation, inputs ("
    + _HIASCEND
    + "document/detail/zh/canncommercial/80RC3/apiref/ascendtbapi/ascendtb_01_0089.html)"
)
ATB_RESHAPE_AND_CACHE_DTYPES = (
    "CANN 8.0.RC2.2 ATB ReshapeAndCacheOperation, constraints ("
    + _HIASCEND
    + "document/detail/zh/canncommercial/80RC22/apiref/ascendtbapi/ascendtb_01_0073.html)"
)
ATB_PAGED_ATTENTION = (
    "CANN 8.1.RC1 ATB PagedAttentionOperation, specification constraints ("
    + _HIASCEND
    + "doc_center/source/zh/canncommercial/81RC1/apiref/ascendtbapi/ascendtb_01_0186.html)"
)
ATB_PAGED_ATTENTION_IO = (
    "CANN 8.2.RC1 ATB PagedAttentionOperation, inputs and outputs ("
    + _HIASCEND
    + "document/detail/zh/CANNCommunityEdition/82RC1/API/ascendtbapi/ascendtb_01_0206.html)"
)
ATB_PREFIX_ENCODER = (
    "CANN 8.3.RC1.alpha002 ATB SelfAttentionOperation calcType=PREFIX_ENCODER, inputs ("
    + _HIASCEND
    + "document/detail/zh/CANNCommunityEdition/83RC1alpha002/API/ascendtbapi/"
    "ascendtb_01_0283.html)"
)
ATB_SELF_ATTENTION = (
    "CANN 8.0.RC2 ATB SelfAttentionOperation, constraints (GQA) ("
    + _HIASCEND
    + "document/detail/zh/canncommercial/80RC2/apiref/ascendtbapi/ascendtb_01_0076.html)"
)

#: FIA with paged KV in the PromptFlashAttention branch (every TND call with D != 512):
#: ``block_size`` is a multiple of this, at most :data:`FIA_MAX_BLOCK_SIZE` (line 8219).
FIA_PROMPT_BLOCK_MULTIPLE = 128
FIA_MAX_BLOCK_SIZE = 512
#: FIA with paged KV in the IncreFlashAttention branch (S = 1 with BSH/BSND/BNSD), float16 or
#: bfloat16 KV: ``block_size`` is a multiple of this (line 8280).
FIA_DECODE_BLOCK_MULTIPLE = 16
FIA_MAX_HEADS = 256
FIA_MAX_HEAD_DIM = 512
#: The block size ATB's prefix-encoder attention (``_npu_flash_attention_qlens``) requires.
ATB_PREFIX_BLOCK_SIZE = 128


CANN_FIA_TILING = (
    "CANN ops-transformer attention/fused_infer_attention_score/op_host/"
    "fused_infer_attention_score_tiling.cpp (GetQueryS: TND's S is T; IsGqaIfa: a TND call "
    "without query_rope takes IncreFlashAttention only with D = 512)"
)
"""Where the kernel decides its branch (the documentation's line 8056 says only "S is 1")."""


def docs(*lines: int) -> str:
    """A citation of lines of torch_npu 2.13.0's ``_op_plugin_docs.py``."""
    word = "lines" if len(lines) > 1 else "line"
    return f"{TORCH_NPU_DOCS} {word} {', '.join(str(n) for n in lines)}"


Outcome = str | tuple[str, str] | None
"""What a rule's test returns: None (kept), a detail (the rule's argument is at fault) or
(argument, detail)."""


@dataclass(frozen=True)
class Rule:
    id: str
    op: str
    argument: str
    text: str
    source: str
    test: Callable[[Mapping[str, Any], _Call], Outcome]


_RULES: dict[str, list[Rule]] = {}


def _rule(
    rule_id: str,
    op: str,
    argument: str,
    text: str,
    source: str,
    when: Callable[[Mapping[str, Any]], bool] | None = None,
):
    """Register the decorated test as rule ``rule_id`` of ``op``; with ``when``, the rule
    applies only to the calls ``when`` accepts (the others pass it)."""

    def register(test: Callable[[Mapping[str, Any], _Call], Outcome]):
        if any(r.id == rule_id for r in all_rules()):
            raise ValueError(f"rule {rule_id} registered twice")
        run = test
        if when is not None:

            def run(a: Mapping[str, Any], c: _Call) -> Outcome:
                return test(a, c) if when(a) else None

        _RULES.setdefault(op, []).append(Rule(rule_id, op, argument, text, source, run))
        return test

    return register


def rules_for(op: str) -> tuple[Rule, ...]:
    """The rules of torch_npu op ``op`` (an overload such as ``op.out`` has the op's rules)."""
    return tuple(_RULES.get(op.split(".", 1)[0], ()))


def all_rules() -> tuple[Rule, ...]:
    return tuple(r for rules in _RULES.values() for r in rules)


def check(
    op: str,
    bound: Mapping[str, Any],
    host: Callable[[torch.Tensor], torch.Tensor | None] | None = None,
) -> None:
    """Run the documented rules of ``op`` on a bound call; raise :class:`RuleViolation`.

    ``host`` gives a CPU view of a non-CPU tensor whose values a rule may read (the emulated
    device passes one; on an NPU there is none and such values are not read).
    """
    rules = rules_for(op)
    if not rules:
        return
    call = _Call(bound, host)
    for rule in rules:
        outcome = rule.test(bound, call)
        if outcome is None:
            continue
        argument, detail = outcome if isinstance(outcome, tuple) else (rule.argument, outcome)
        raise RuleViolation(rule.op, argument, detail, rule.text, rule.source, rule.id)


# --------------------------------------------------------------------------- helpers


def _dt(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _shape(t: torch.Tensor) -> tuple[int, ...]:
    return tuple(t.shape)


def _first_bad_dtype(a: Mapping[str, Any], names: Sequence[str], allowed) -> Outcome:
    for name in names:
        t = a[name]
        if t is not None and t.dtype not in allowed:
            return name, f"{name} has dtype {_dt(t.dtype)}"
    return None


def _dtype_of(a: Mapping[str, Any], ref: str, names: Sequence[str]) -> Outcome:
    """The first of ``names`` (None passed over) whose dtype is not ``ref``'s."""
    for name in names:
        t, want = a[name], a[ref].dtype
        if t is not None and t.dtype != want:
            return name, f"{name} is {_dt(t.dtype)}, {ref} is {_dt(want)}"
    return None


def _bad_tensor(
    a: Mapping[str, Any],
    names: Sequence[str],
    dtypes: Sequence[torch.dtype],
    ranks: Sequence[int],
    nonempty: bool = False,
) -> Outcome:
    """The first of ``names`` (None passed over) whose dtype is not in ``dtypes``, whose
    number of dimensions is not in ``ranks`` or, with ``nonempty``, that has no elements."""
    for name in names:
        t = a[name]
        if t is None:
            continue
        if t.dtype not in dtypes or t.dim() not in ranks or (nonempty and t.numel() == 0):
            return name, f"{name} is {_dt(t.dtype)} of shape {_shape(t)}"
    return None


def _same_shape(a: Mapping[str, Any], name: str, ref: str) -> Outcome:
    """``name`` when its shape is not ``ref``'s."""
    if _shape(a[name]) != _shape(a[ref]):
        return name, f"{name} {_shape(a[name])}, {ref} {_shape(a[ref])}"
    return None


def _not_contiguous(a: Mapping[str, Any], names: Sequence[str]) -> Outcome:
    for name in names:
        t = a[name]
        if t is not None and not t.is_contiguous():
            return name, f"{name} is not contiguous (shape {_shape(t)}, stride {t.stride()})"
    return None


def _non_decreasing(values: Sequence[int]) -> int | None:
    """Index of the first element smaller than the one before it (or negative), else None."""
    prev = 0
    for i, v in enumerate(values):
        if v < prev:
            return i
        prev = v
    return None


def _cumulative(
    ends: Sequence[int], total: int | None, tokens: str, trailing_zeros: bool = False
) -> str | None:
    """What is wrong with cumulative end offsets ``ends`` over ``total`` ``tokens`` (None:
    not known), or None. With ``trailing_zeros``, zeros after the last end are left out."""
    used = list(ends)
    while trailing_zeros and len(used) > 1 and used[-1] == 0:
        used.pop()
    bad = _non_decreasing(used)
    if bad is not None:
        return f"element {bad} of {list(ends)} breaks the cumulative order"
    if used and total is not None and used[-1] > total:
        return f"last element {used[-1]} exceeds the {total} {tokens}"
    return None


_F16_BF16 = (torch.float16, torch.bfloat16)
_FLOATS = (torch.float16, torch.bfloat16, torch.float32)


def _dtype_rule(
    rule_id: str,
    op: str,
    text: str,
    source: str,
    names: Sequence[str],
    dtypes: Sequence[torch.dtype],
    same: Sequence[str] = (),
    when: Callable[[Mapping[str, Any]], bool] | None = None,
) -> None:
    """Register a rule on ``names[0]`` (its argument): each of ``names`` has a dtype in
    ``dtypes``, then each of ``same`` has ``names[0]``'s dtype (None passed over)."""

    @_rule(rule_id, op, names[0], text, source, when)
    def _(a, c):
        return _first_bad_dtype(a, names, dtypes) or _dtype_of(a, names[0], same)


def _choice_rule(
    rule_id: str, op: str, argument: str, text: str, source: str, allowed: Sequence[Any]
) -> None:
    """Register a rule: host argument ``argument`` is one of ``allowed``."""

    @_rule(rule_id, op, argument, text, source)
    def _(a, c):
        if a[argument] not in allowed:
            return f"{argument}={a[argument]!r}"
        return None


@dataclass(frozen=True)
class _Dims:
    """An attention call's query dimensions (None where the call does not say) and the
    kernel branch it takes.

    FIA runs IncreFlashAttention when the query's S is 1 and PromptFlashAttention otherwise
    (:data:`CANN_FIA_TILING`); the documentation states different limits for the two. For TND the
    kernel's S is T, all tokens of the batch, and a TND call without ``query_rope`` takes
    IncreFlashAttention only when D is 512: a TND call is a prompt call, decode-only batches
    included, which is why vllm-ascend pages TND attention in blocks of 128 throughout.
    """

    batch: int | None = None
    heads: int | None = None
    head_dim: int | None = None
    q_s: int | None = None  # the kernel's S: S of BSH/BSND/BNSD, T of TND
    layout: str | None = None

    @property
    def prompt(self) -> bool:
        """The PromptFlashAttention branch (the documentation's "Q_S > 1")."""
        if self.layout == "TND":
            return self.head_dim is not None and self.head_dim != 512
        return self.q_s is not None and self.q_s > 1

    @property
    def incremental(self) -> bool:
        """The IncreFlashAttention branch (the documentation's "Q_S = 1")."""
        if self.layout == "TND":
            return self.head_dim == 512
        return self.q_s == 1

    def branch(self) -> str:
        if self.layout == "TND":
            return f"input_layout='TND' with D={self.head_dim}"
        return f"Q_S={self.q_s}"


class _Call:
    """What rules share about one call: derived dimensions (computed once) and host values."""

    def __init__(self, a: Mapping[str, Any], host) -> None:
        self._a = a
        self._host = host

    def ints(self, name: str) -> list[int] | None:
        """The values of integer tensor argument ``name`` if readable on the host."""
        t = self._a[name]
        if t is None:
            return None
        view = t if t.device.type == "cpu" else (self._host(t) if self._host else None)
        if view is None:
            return None
        return [int(v) for v in view.reshape(-1).tolist()]

    @functools.cached_property
    def fia(self) -> _Dims:
        return _fia_dims(self._a)

    @functools.cached_property
    def fa(self) -> _FADims | None:
        return _fa_dims(self._a)


# =========================================================================== FIA

FIA = "npu_fused_infer_attention_score"
_FIA_RANK = {"TND": 3, "BSH": 3, "BSND": 4, "BNSD": 4, "BNSD_BSND": 4}


def _fia_dims(a: Mapping[str, Any]) -> _Dims:
    q, layout = a["query"], a["input_layout"]
    if _FIA_RANK.get(layout) != q.dim():
        return _Dims()
    if layout == "TND":
        ends = a["actual_seq_lengths"]
        batch = None if ends is None else len(ends)
        return _Dims(batch, q.shape[1], q.shape[2], q.shape[0], layout)
    if layout == "BSH":
        b, s, h = q.shape
        n = a["num_heads"]
        d = h // n if n > 0 and h % n == 0 else None
        return _Dims(b, n, d, s, layout)
    if layout == "BSND":
        b, s, n, d = q.shape
    else:  # BNSD, BNSD_BSND
        b, n, s, d = q.shape
    return _Dims(b, n, d, s, layout)


def _fia_kv_heads(a: Mapping[str, Any]) -> int:
    return a["num_key_value_heads"] or a["num_heads"]


def _paged(a: Mapping[str, Any]) -> bool:
    return a["block_table"] is not None


def _fia_per_request(values: Sequence[int] | None, c: _Call, needed_with: str) -> str | None:
    """A per-request list that is missing (it is needed with ``needed_with``) or not one
    element per request of the batch."""
    if values is None:
        return f"missing with {needed_with}"
    if c.fia.batch is not None and len(values) != c.fia.batch:
        return f"{len(values)} elements for a batch of {c.fia.batch}"
    return None


def _fia_block_size(a: Mapping[str, Any], c: _Call, align: int, context: str) -> str | None:
    """A paged ``block_size`` that is not a multiple of ``align`` in (0, FIA_MAX_BLOCK_SIZE]."""
    bs = a["block_size"]
    if bs % align or not 0 < bs <= FIA_MAX_BLOCK_SIZE:
        return f"block_size={bs} {context} ({c.fia.branch()})"
    return None


_dtype_rule(
    "fia.query.dtype",
    FIA,
    "query is float16, bfloat16 or int8",
    docs(8065),
    ("query",),
    (*_F16_BF16, torch.int8),
)
_dtype_rule(
    "fia.kv.dtype",
    FIA,
    "key and value are float16, bfloat16, int8 or int32 (packed int4) on Atlas A2/A3",
    docs(8067, 8070),
    ("key", "value"),
    (*_F16_BF16, torch.int8, torch.int32),
)


@_rule(
    "fia.contiguous",
    FIA,
    "query",
    "query, key and value are contiguous (non-contiguous tensors are not supported)",
    docs(8065, 8066, 8069),
)
def _(a, c):
    return _not_contiguous(a, ("query", "key", "value"))


@_rule("fia.kv.same_shape", FIA, "value", "key and value have the same shape", docs(8155))
def _(a, c):
    if _shape(a["key"]) != _shape(a["value"]):
        return f"key is {_shape(a['key'])}, value is {_shape(a['value'])}"
    return None


_choice_rule(
    "fia.input_layout",
    FIA,
    "input_layout",
    "input_layout is BSH, BSND, BNSD, BNSD_BSND or TND on Atlas A2/A3",
    docs(8113, 8114),
    tuple(_FIA_RANK),
)


@_rule(
    "fia.query.rank",
    FIA,
    "query",
    "query is 3-D for TND (T, N, D) and BSH (B, S, H), 4-D for BSND, BNSD and BNSD_BSND",
    docs(8064),
)
def _(a, c):
    rank = _FIA_RANK.get(a["input_layout"])
    if rank is not None and a["query"].dim() != rank:
        return f"query has shape {_shape(a['query'])} with input_layout={a['input_layout']!r}"
    return None


@_rule(
    "fia.num_heads",
    FIA,
    "num_heads",
    "num_heads equals query's head count N (BSH: divides the hidden size H)",
    docs(8108),
)
def _(a, c):
    n, q = a["num_heads"], a["query"]
    if a["input_layout"] == "BSH" and q.dim() == 3:
        if n <= 0 or q.shape[2] % n:
            return f"num_heads={n} does not divide query's hidden size {q.shape[2]}"
        return None
    if c.fia.heads is not None and n != c.fia.heads:
        return f"num_heads={n} but query {_shape(q)} has {c.fia.heads} heads"
    return None


@_rule(
    "fia.num_key_value_heads",
    FIA,
    "num_key_value_heads",
    "num_key_value_heads is 0 (= num_heads) or divides num_heads, with num_heads / "
    "num_key_value_heads at most 64",
    docs(8116),
)
def _(a, c):
    n, kv = a["num_heads"], a["num_key_value_heads"]
    if kv == 0:
        return None
    if kv < 0 or n % kv or n // kv > 64:
        return f"num_key_value_heads={kv} with num_heads={n}"
    return None


@_rule(
    "fia.heads_and_head_dim",
    FIA,
    "query",
    f"N (query heads) <= {FIA_MAX_HEADS} and D (head dim) <= {FIA_MAX_HEAD_DIM}",
    docs(8204, 8271),
)
def _(a, c):
    n, d = c.fia.heads, c.fia.head_dim
    if n is not None and n > FIA_MAX_HEADS:
        return f"query has N={n} heads"
    if d is not None and d > FIA_MAX_HEAD_DIM:
        return f"query has head dim D={d}"
    return None


@_rule("fia.batch", FIA, "query", "B (batch) <= 65536", docs(8203, 8271))
def _(a, c):
    if c.fia.batch is not None and c.fia.batch > 65536:
        return f"the batch has {c.fia.batch} requests"
    return None


@_rule(
    "fia.head_dim.alignment",
    FIA,
    "query",
    "in the PromptFlashAttention branch (Q_S > 1; every TND call with D != 512) D is a "
    "multiple of 16 for float16/bfloat16 inputs (32 with int8)",
    f"{docs(8056, 8210)}; {CANN_FIA_TILING}",
)
def _(a, c):
    d = c.fia.head_dim
    if d is None or not c.fia.prompt:
        return None
    int8 = torch.int8 in (a["query"].dtype, a["key"].dtype, a["value"].dtype)
    align = 32 if int8 else 16
    if d % align:
        return f"head dim D={d} in the PromptFlashAttention branch ({c.fia.branch()})"
    return None


_dtype_rule(
    "fia.atten_mask.dtype",
    FIA,
    "atten_mask is bool, int8 or uint8",
    docs(8076),
    ("atten_mask",),
    (torch.bool, torch.int8, torch.uint8),
)


@_rule(
    "fia.sparse_mode",
    FIA,
    "sparse_mode",
    "sparse_mode is 0, 1, 2, 3, 4 or 9 (5-8 are not implemented); 9 (tree mask) only with "
    "query_rope and key_rope",
    docs(8117, 8123),
)
def _(a, c):
    mode = a["sparse_mode"]
    if mode not in (0, 1, 2, 3, 4, 9):
        return f"sparse_mode={mode}"
    if mode == 9 and (a["query_rope"] is None or a["key_rope"] is None):
        return "sparse_mode=9 without query_rope and key_rope"
    return None


_COMPRESSED_MASK_SHAPES = ((2048, 2048), (1, 2048, 2048), (1, 1, 2048, 2048))


@_rule(
    "fia.atten_mask.compressed",
    FIA,
    "atten_mask",
    "sparse_mode 2, 3 and 4 take the optimised (compressed) mask of shape (2048, 2048), "
    "(1, 2048, 2048) or (1, 1, 2048, 2048); without it the call fails",
    docs(8081, 8214),
)
def _(a, c):
    mode, mask = a["sparse_mode"], a["atten_mask"]
    if mode not in (2, 3, 4):
        return None
    if mask is None:
        return f"sparse_mode={mode} without atten_mask"
    if _shape(mask) not in _COMPRESSED_MASK_SHAPES:
        return f"sparse_mode={mode} with atten_mask of shape {_shape(mask)}"
    return None


@_rule(
    "fia.inner_precise",
    FIA,
    "inner_precise",
    "inner_precise is 0, 1, 2 or 3; in the IncreFlashAttention branch (Q_S = 1; TND only "
    "with D = 512) only 0 or 1",
    f"{docs(8056, 8124)}; {CANN_FIA_TILING}",
)
def _(a, c):
    value = a["inner_precise"]
    if value not in (0, 1, 2, 3) or (c.fia.incremental and value not in (0, 1)):
        return f"inner_precise={value} ({c.fia.branch()})"
    return None


_choice_rule(
    "fia.antiquant_mode",
    FIA,
    "antiquant_mode",
    "antiquant_mode is 0 (per-channel) or 1 (per-token)",
    docs(8131),
    (0, 1),
)


@_rule(
    "fia.tnd.actual_seq_lengths",
    FIA,
    "actual_seq_lengths",
    "with input_layout='TND' actual_seq_lengths is required: one cumulative end offset per "
    "request (non-negative, each >= the one before), the last at most T",
    docs(8082),
)
def _(a, c):
    if a["input_layout"] != "TND" or a["query"].dim() != 3:
        return None
    ends = a["actual_seq_lengths"]
    return _fia_per_request(ends, c, "input_layout='TND'") or _cumulative(
        ends, a["query"].shape[0], "query tokens"
    )


@_rule(
    "fia.tnd.actual_seq_lengths_kv",
    FIA,
    "actual_seq_lengths_kv",
    "with input_layout='TND' and no block_table, actual_seq_lengths_kv is required: one "
    "cumulative KV end offset per request (each >= the one before), the last at most T_kv",
    docs(8211, 8275),
)
def _(a, c):
    if a["input_layout"] != "TND" or _paged(a):
        return None
    ends, key = a["actual_seq_lengths_kv"], a["key"]
    return _fia_per_request(ends, c, "input_layout='TND'") or _cumulative(
        ends, key.shape[0] if key.dim() == 3 else None, "KV tokens"
    )


@_rule(
    "fia.paged.actual_seq_lengths_kv",
    FIA,
    "actual_seq_lengths_kv",
    "with page attention (block_table) actual_seq_lengths_kv is required, with each "
    "request's own KV length (non-negative, not cumulative), one per request",
    docs(8222, 8275),
    when=_paged,
)
def _(a, c):
    lens = a["actual_seq_lengths_kv"]
    bad = _fia_per_request(lens, c, "block_table")
    if bad is None and any(v < 0 for v in lens):
        return f"negative length in {list(lens)}"
    return bad


_dtype_rule(
    "fia.block_table.dtype",
    FIA,
    "block_table is int32",
    docs(8091),
    ("block_table",),
    (torch.int32,),
)


@_rule(
    "fia.block_table.shape",
    FIA,
    "block_table",
    "block_table is 2-D: first dimension the batch B, second at least the blocks of the "
    "longest request, ceil(max(actual_seq_lengths_kv) / block_size)",
    docs(8223, 8284),
)
def _(a, c):
    table = a["block_table"]
    if table is None:
        return None
    if table.dim() != 2:
        return f"block_table has shape {_shape(table)}"
    if c.fia.batch is not None and table.shape[0] != c.fia.batch:
        return f"block_table has {table.shape[0]} rows for a batch of {c.fia.batch}"
    lens, bs = a["actual_seq_lengths_kv"], a["block_size"]
    if lens and bs > 0:
        need = -(-max(lens) // bs)
        if table.shape[1] < need:
            return (
                f"block_table has {table.shape[1]} columns but a request of {max(lens)} "
                f"tokens needs {need} blocks of {bs}"
            )
    return None


@_rule(
    "fia.paged.block_size.prompt",
    FIA,
    "block_size",
    "with page attention in the PromptFlashAttention branch (Q_S > 1; every TND call with "
    "D != 512, decode-only batches included) block_size is a multiple of "
    f"{FIA_PROMPT_BLOCK_MULTIPLE}, at least {FIA_PROMPT_BLOCK_MULTIPLE} and at most "
    f"{FIA_MAX_BLOCK_SIZE}",
    f"{docs(8056, 8219)}; {CANN_FIA_TILING}",
    when=_paged,
)
def _(a, c):
    if c.fia.prompt:
        return _fia_block_size(
            a, c, FIA_PROMPT_BLOCK_MULTIPLE, "in the PromptFlashAttention branch"
        )
    return None


@_rule(
    "fia.paged.block_size.decode",
    FIA,
    "block_size",
    "with page attention in the IncreFlashAttention branch (Q_S = 1 with BSH, BSND or BNSD; "
    f"TND with D = 512) block_size is non-zero, at most {FIA_MAX_BLOCK_SIZE}, a multiple of "
    f"{FIA_DECODE_BLOCK_MULTIPLE} for float16/bfloat16 KV and of 32 for int8 KV",
    f"{docs(8056, 8280)}; {CANN_FIA_TILING}",
    when=_paged,
)
def _(a, c):
    if c.fia.incremental:
        kv = a["key"].dtype
        align = 32 if kv == torch.int8 else FIA_DECODE_BLOCK_MULTIPLE
        return _fia_block_size(a, c, align, f"with {_dt(kv)} KV")
    return None


@_rule(
    "fia.paged.cache_layout",
    FIA,
    "key",
    "with page attention the caches are (num_blocks, block_size, H = N_kv * D) or, for "
    "query layouts BNSD and TND only, (num_blocks, N_kv, block_size, D)",
    docs(8220, 8285),
    when=_paged,
)
def _(a, c):
    key, bs, kv = a["key"], a["block_size"], _fia_kv_heads(a)
    d = c.fia.head_dim if a["query_rope"] is None else None
    if key.dim() == 3:
        ok = key.shape[1] == bs and (d is None or key.shape[2] == kv * d)
        want = f"(num_blocks, {bs}, {kv} * D)"
    elif key.dim() == 4 and a["input_layout"] in ("BNSD", "TND"):
        ok = key.shape[1:3] == (kv, bs) and (d is None or key.shape[3] == d)
        want = f"(num_blocks, {kv}, {bs}, D)"
    else:
        ok, want = False, "3-D (num_blocks, block_size, H)"
    if not ok:
        return f"key cache {_shape(key)} is not {want} (D = {d} from query)"
    return None


@_rule(
    "fia.paged.hidden_size",
    FIA,
    "key",
    "with page attention and caches laid out (num_blocks, block_size, H), H = N_kv * D is "
    "at most 65535",
    docs(8220, 8287),
    when=_paged,
)
def _(a, c):
    key = a["key"]
    if key.dim() == 3 and key.shape[2] > 65535:
        return f"key cache {_shape(key)} has H={key.shape[2]}"
    return None


@_rule(
    "fia.paged.num_blocks",
    FIA,
    "key",
    "with page attention the caches hold at least as many blocks as the requests need "
    "together: sum of ceil(actual_seq_lengths_kv / block_size)",
    docs(8220, 8285),
    when=_paged,
)
def _(a, c):
    lens, bs, key = a["actual_seq_lengths_kv"], a["block_size"], a["key"]
    if not lens or bs <= 0:
        return None
    need = sum(-(-n // bs) for n in lens)
    if key.shape[0] < need:
        return f"the caches have {key.shape[0]} blocks, the requests need {need}"
    return None


_dtype_rule(
    "fia.paged.kv_dtype",
    FIA,
    "with page attention key and value are float16, bfloat16 or int8",
    docs(8218, 8278),
    ("key", "value"),
    (*_F16_BF16, torch.int8),
    when=_paged,
)


@_rule(
    "fia.paged.query_dtype",
    FIA,
    "query",
    "page attention does not take an int8 query",
    docs(8224),
    when=_paged,
)
def _(a, c):
    if a["query"].dtype == torch.int8:
        return "int8 query with block_table"
    return None


@_rule(
    "fia.rope_pair",
    FIA,
    "key_rope",
    "query_rope and key_rope are given together or not at all",
    docs(8171),
)
def _(a, c):
    if (a["query_rope"] is None) != (a["key_rope"] is None):
        given = "query_rope" if a["query_rope"] is not None else "key_rope"
        return f"only {given} given"
    return None


@_rule(
    "fia.paged.no_left_padding",
    FIA,
    "query_padding_size",
    "left padding (query_padding_size, kv_padding_size) cannot be combined with block_table",
    docs(8232, 8237),
    when=_paged,
)
def _(a, c):
    for name in ("query_padding_size", "kv_padding_size"):
        if a[name] is not None:
            return name, f"{name} given with block_table"
    return None


@_rule(
    "fia.shared_prefix",
    FIA,
    "value_shared_prefix",
    "key_shared_prefix and value_shared_prefix are given together or not at all, and not "
    "with page attention",
    docs(8251, 8256),
)
def _(a, c):
    k, v = a["key_shared_prefix"], a["value_shared_prefix"]
    if (k is None) != (v is None):
        return "only one of key_shared_prefix and value_shared_prefix given"
    if k is not None and _paged(a):
        return "shared prefix given with block_table"
    return None


# =========================================================================== FA

FA = "npu_fusion_attention"
_FA_RANK = {"BSH": 3, "SBH": 3, "TND": 3, "BSND": 4, "BNSD": 4}
_MIB = 1024 * 1024


@dataclass(frozen=True)
class _FADims:
    batch: int | None  # None for TND (see the lengths)
    seq_q: int | None
    heads: int
    kv_heads: int
    dq: int
    dk: int
    dv: int


def _fa_dims(a: Mapping[str, Any]) -> _FADims | None:
    """Heads and head dims of query/key/value (None when the shapes do not fit the layout)."""
    q, k, v, layout, n = a["query"], a["key"], a["value"], a["input_layout"], a["head_num"]
    rank = _FA_RANK.get(layout)
    if rank is None or any(t.dim() != rank for t in (q, k, v)):
        return None
    if layout in ("BSH", "SBH"):
        if n <= 0 or q.shape[2] % n:
            return None
        d = q.shape[2] // n
        if k.shape[2] % d:
            return None
        nkv = k.shape[2] // d
        if nkv == 0 or v.shape[2] % nkv:
            return None
        b, s = (q.shape[0], q.shape[1]) if layout == "BSH" else (q.shape[1], q.shape[0])
        return _FADims(b, s, n, nkv, d, d, v.shape[2] // nkv)
    if layout == "TND":
        return _FADims(None, None, q.shape[1], k.shape[1], q.shape[2], k.shape[2], v.shape[2])
    if layout == "BSND":
        return _FADims(q.shape[0], q.shape[1], q.shape[2], k.shape[2], q.shape[3], k.shape[3],
                       v.shape[3])  # fmt: skip
    return _FADims(q.shape[0], q.shape[2], q.shape[1], k.shape[1], q.shape[3], k.shape[3],
                   v.shape[3])  # fmt: skip


_dtype_rule(
    "fa.dtype",
    FA,
    "query, key and value are float16, bfloat16 or float32, all the same (pse too)",
    docs(1603, 1604, 1605, 1676),
    ("query", "key", "value"),
    _FLOATS,
    same=("key", "value", "pse"),
)


@_rule(
    "fa.input_layout",
    FA,
    "input_layout",
    "input_layout is BSH, SBH, BSND, BNSD or TND; query, key and value are 3-D for BSH, SBH "
    "and TND, 4-D for BSND and BNSD",
    docs(1607, 1677),
)
def _(a, c):
    rank = _FA_RANK.get(a["input_layout"])
    if rank is None:
        return f"input_layout={a['input_layout']!r}"
    for name in ("query", "key", "value"):
        if a[name].dim() != rank:
            return name, f"{name} has shape {_shape(a[name])} for {a['input_layout']!r}"
    return None


@_rule(
    "fa.varlen_lengths",
    FA,
    "actual_seq_qlen",
    "with input_layout='TND' (varlen) actual_seq_qlen and actual_seq_kvlen are required, of "
    "equal length, cumulative (each >= the one before; trailing zeros leave batches out), "
    "the last at most the tokens given",
    docs(1607, 1619, 1621, 1695),
)
def _(a, c):
    if a["input_layout"] != "TND":
        return None
    for name, t in (("actual_seq_qlen", a["query"]), ("actual_seq_kvlen", a["key"])):
        ends = a[name]
        if ends is None:
            return name, f"{name} missing with input_layout='TND'"
        bad = _cumulative(ends, t.shape[0], "tokens given", trailing_zeros=True)
        if bad is not None:
            return name, bad
    if len(a["actual_seq_qlen"]) != len(a["actual_seq_kvlen"]):
        return "actual_seq_kvlen", "actual_seq_qlen and actual_seq_kvlen differ in length"
    return None


@_rule(
    "fa.heads",
    FA,
    "head_num",
    "head_num is query's head count N (BSH/SBH: divides H); N <= 256 and a whole multiple of "
    "the key/value head count",
    docs(1606, 1686),
)
def _(a, c):
    q, n, layout = a["query"], a["head_num"], a["input_layout"]
    if _FA_RANK.get(layout) != q.dim():
        return None
    dims = c.fa
    if dims is None:
        return f"head_num={n} does not split query {_shape(q)} / key {_shape(a['key'])}"
    if dims.heads != n:
        return f"head_num={n} but query {_shape(q)} has {dims.heads} heads"
    if not 1 <= n <= 256 or dims.kv_heads <= 0 or n % dims.kv_heads:
        return f"head_num={n} with {dims.kv_heads} key/value heads"
    return None


@_rule(
    "fa.head_dim",
    FA,
    "key",
    "head dims satisfy Dq = Dk >= Dv, each in [1, 768]",
    docs(1681),
)
def _(a, c):
    dims = c.fa
    if dims is None:
        return None
    if dims.dq != dims.dk:
        return f"query's D={dims.dq}, key's D={dims.dk}"
    if dims.dv > dims.dk:
        return "value", f"value's D={dims.dv} exceeds key's {dims.dk}"
    if not 1 <= dims.dq <= 768 or dims.dv < 1:
        return f"head dim {dims.dq}"
    return None


@_rule(
    "fa.sizes",
    FA,
    "query",
    "B in [1, 2M] and S in [1, 1M] (fixed length); T <= 1M and at most 1K sequences (varlen; "
    "line 1680 says 2K, line 1694 1K: the stricter is kept)",
    docs(1680, 1682, 1684, 1694),
)
def _(a, c):
    q = a["query"]
    if a["input_layout"] == "TND":
        ends = a["actual_seq_qlen"] or ()
        if len(ends) > 1024:
            return "actual_seq_qlen", f"{len(ends)} sequences"
        if q.shape[0] > _MIB:
            return f"T={q.shape[0]} tokens"
        return None
    dims = c.fa
    if dims is None:
        return None
    if not 1 <= (dims.batch or 0) <= 2 * _MIB or not 1 <= (dims.seq_q or 0) <= _MIB:
        return f"B={dims.batch}, S={dims.seq_q}"
    return None


_dtype_rule(
    "fa.atten_mask.dtype",
    FA,
    "atten_mask is bool or uint8",
    docs(1610),
    ("atten_mask",),
    (torch.bool, torch.uint8),
)


@_rule(
    "fa.sparse_mode",
    FA,
    "sparse_mode",
    "sparse_mode is 0-8; 7 and 8 only for varlen (TND); 5 not for varlen",
    docs(1623, 1632, 1634, 1635),
)
def _(a, c):
    mode, varlen = a["sparse_mode"], a["input_layout"] == "TND"
    if mode not in range(9) or (mode in (7, 8) and not varlen) or (mode == 5 and varlen):
        return f"sparse_mode={mode} with input_layout={a['input_layout']!r}"
    return None


@_rule(
    "fa.atten_mask.compressed",
    FA,
    "atten_mask",
    "sparse_mode 2, 3, 4, 7 and 8 take the compressed (2048, 2048) mask, sparse_mode 6 a "
    "(3072, 2048) one, as SS or 11SS; varlen (TND) masks are SS (2-D)",
    docs(1610, 1643, 1644, 1645, 1647, 1649, 1655),
)
def _(a, c):
    mask, mode = a["atten_mask"], a["sparse_mode"]
    if mask is None:  # line 1689: no mask means full computation whatever the mode
        return None
    if a["input_layout"] == "TND" and mask.dim() != 2:
        return f"varlen atten_mask of shape {_shape(mask)}"
    ss = {6: (3072, 2048)}.get(mode, (2048, 2048))
    if mode in (2, 3, 4, 6, 7, 8) and _shape(mask) not in (ss, (1, 1, *ss)):
        return f"sparse_mode={mode} with atten_mask of shape {_shape(mask)}"
    return None


@_rule("fa.keep_prob", FA, "keep_prob", "keep_prob lies in (0, 1]", docs(1612))
def _(a, c):
    if not 0 < a["keep_prob"] <= 1:
        return f"keep_prob={a['keep_prob']}"
    return None


@_rule(
    "fa.padding_mask",
    FA,
    "padding_mask",
    "padding_mask is not supported (pass None)",
    docs(1609),
)
def _(a, c):
    if a["padding_mask"] is not None:
        return "padding_mask given"
    return None


@_rule(
    "fa.softmax_layout",
    FA,
    "softmax_layout",
    "softmax_layout is '' or, with input_layout='TND' only, 'TND'",
    docs(1624),
)
def _(a, c):
    value = a["softmax_layout"]
    if value not in ("", "TND") or (value == "TND" and a["input_layout"] != "TND"):
        return f"softmax_layout={value!r} with input_layout={a['input_layout']!r}"
    return None


@_rule(
    "fa.band",
    FA,
    "pre_tockens",
    "the band (sparse_mode 4) needs pre_tockens and next_tockens to overlap: "
    "pre_tockens + next_tockens >= 0",
    docs(1640, 1641, 1645),
)
def _(a, c):
    if a["sparse_mode"] == 4 and a["atten_mask"] is not None:
        pre, nxt = a["pre_tockens"], a["next_tockens"]
        if pre + nxt < 0:
            return f"pre_tockens={pre}, next_tockens={nxt}"
    return None


# =========================================================================== KV write

SCATTER = "npu_scatter_pa_kv_cache"
_SCATTER_KEY_DTYPES = tuple(
    getattr(torch, name)
    for name in (
        "float16",
        "float32",
        "bfloat16",
        "int8",
        "uint8",
        "int16",
        "uint16",
        "int32",
        "uint32",
        "hifloat8",
        "float8_e5m2",
        "float8_e4m3fn",
    )
    if hasattr(torch, name)
)


_dtype_rule(
    "scatter.key.dtype",
    SCATTER,
    "key is float16, float32, bfloat16, int8, uint8, int16, uint16, int32, uint32, hifloat8, "
    "float8_e5m2 or float8_e4m3fn",
    docs(7015),
    ("key",),
    _SCATTER_KEY_DTYPES,
)


@_rule(
    "scatter.same_dtype",
    SCATTER,
    "value",
    "key, value, key_cache and value_cache have the same dtype",
    docs(7016, 7017, 7018, 7031),
)
def _(a, c):
    return _dtype_of(a, "key", ("value", "key_cache", "value_cache"))


@_rule(
    "scatter.rank",
    SCATTER,
    "key",
    "key and value are both 3-D or both 4-D; key_cache and value_cache are 4-D",
    docs(7015, 7016, 7017, 7018),
)
def _(a, c):
    key, value = a["key"], a["value"]
    if key.dim() not in (3, 4) or value.dim() != key.dim():
        return f"key {_shape(key)}, value {_shape(value)}"
    for name in ("key_cache", "value_cache"):
        if a[name].dim() != 4:
            return name, f"{name} has shape {_shape(a[name])}"
    return None


_dtype_rule(
    "scatter.index_dtype",
    SCATTER,
    "slot_mapping is int32 or int64; compress_lens, compress_seq_offsets and seq_lens have "
    "slot_mapping's dtype",
    docs(7019, 7032),
    ("slot_mapping",),
    (torch.int32, torch.int64),
    same=("compress_lens", "compress_seq_offsets", "seq_lens"),
)
_choice_rule(
    "scatter.cache_mode",
    SCATTER,
    "cache_mode",
    "cache_mode is None or 'Norm' (ND caches) or 'PA_NZ' (NZ caches)",
    docs(7023),
    (None, "Norm", "PA_NZ"),
)


@_rule(
    "scatter.contiguous",
    SCATTER,
    "key",
    "no input is non-contiguous",
    docs(7030),
)
def _(a, c):
    names = ("key", "value", "key_cache", "value_cache", "slot_mapping", "compress_lens",
             "compress_seq_offsets", "seq_lens")  # fmt: skip
    return _not_contiguous(a, names)


@_rule(
    "scatter.tokens",
    SCATTER,
    "value",
    "3-D key and value agree in their first two dimensions (tokens, heads)",
    docs(7034),
)
def _(a, c):
    key, value = a["key"], a["value"]
    if key.dim() == 3 == value.dim() and key.shape[:2] != value.shape[:2]:
        return f"key {_shape(key)}, value {_shape(value)}"
    return None


@_rule(
    "scatter.compressed_scene",
    SCATTER,
    "key",
    "4-D key and value (scene three) agree in their first three dimensions, need "
    "compress_lens and seq_lens, a 2-D slot_mapping (batch, num_head) and caches whose third "
    "dimension is 1",
    docs(6998, 7035, 7036, 7037, 7038),
)
def _(a, c):
    key, value = a["key"], a["value"]
    if key.dim() != 4 or value.dim() != 4:
        return None
    if key.shape[:3] != value.shape[:3]:
        return "value", f"key {_shape(key)}, value {_shape(value)}"
    for name in ("compress_lens", "seq_lens"):
        if a[name] is None:
            return name, f"{name} missing with 4-D key"
    if _shape(a["slot_mapping"]) != (key.shape[0], key.shape[2]):
        return "slot_mapping", f"slot_mapping {_shape(a['slot_mapping'])} for key {_shape(key)}"
    for name in ("key_cache", "value_cache"):
        if a[name].dim() == 4 and a[name].shape[2] != 1:
            return name, f"{name} {_shape(a[name])} with 4-D key"
    return None


@_rule(
    "scatter.nd_layout",
    SCATTER,
    "key_cache",
    "with cache_mode None or 'Norm' and 3-D key (T, N, Dk) and value (T, N, Dv) (scene two) "
    "the caches are (num_blocks, block_size, N, Dk) and (num_blocks, block_size, N, Dv) and "
    "slot_mapping is (T,)",
    docs(6989, 6990, 6991, 6992, 6993, 6994, 7023),
)
def _(a, c):
    key, value, kc, vc = a["key"], a["value"], a["key_cache"], a["value_cache"]
    if a["cache_mode"] not in (None, "Norm") or key.dim() != 3 or value.dim() != 3:
        return None
    if kc.dim() != 4 or _shape(kc)[2:] != _shape(key)[1:]:
        return f"key_cache {_shape(kc)} for key {_shape(key)}"
    if vc.dim() != 4 or _shape(vc) != (*_shape(kc)[:2], *_shape(value)[1:]):
        return "value_cache", f"value_cache {_shape(vc)} for value {_shape(value)}"
    if _shape(a["slot_mapping"]) != (key.shape[0],):
        return "slot_mapping", f"slot_mapping {_shape(a['slot_mapping'])} for key {_shape(key)}"
    return None


# =========================================================================== norms


RMS = "npu_rms_norm"


@_rule(
    "rms_norm.self",
    RMS,
    "self",
    "self is float16, bfloat16 or float32 with 2 to 8 dimensions",
    docs(3447),
)
def _(a, c):
    return _bad_tensor(a, ("self",), _FLOATS, range(2, 9))


@_rule("rms_norm.gamma.dtype", RMS, "gamma", "gamma has self's dtype", docs(3448))
def _(a, c):
    return _dtype_of(a, "self", ("gamma",))


def _gamma_shape_rule(rule_id: str, op: str, x: str, text: str, source: str) -> None:
    """Register a rule: ``gamma``'s shape is the trailing dimensions of ``x``'s."""

    @_rule(rule_id, op, "gamma", text, source)
    def _(a, c):
        xs, gamma = _shape(a[x]), _shape(a["gamma"])
        if not 1 <= len(gamma) <= len(xs) or xs[len(xs) - len(gamma) :] != gamma:
            return f"gamma {gamma} for {x} {xs}"
        return None


_gamma_shape_rule(
    "rms_norm.gamma.shape",
    RMS,
    "self",
    "gamma's shape is the trailing dimensions of self's (gamma_shape = x_shape[n:])",
    CANN_RMS_NORM,
)


ADD_RMS = "npu_add_rms_norm"


@_rule(
    "add_rms_norm.inputs",
    ADD_RMS,
    "x1",
    "x1 and x2 are float32, float16 or bfloat16, 1 to 8 dimensions, of the same shape, "
    "contiguous and not empty",
    CANN_ADD_RMS_NORM,
)
def _(a, c):
    names = ("x1", "x2")
    return (
        _bad_tensor(a, names, _FLOATS, range(1, 9), nonempty=True)
        or _same_shape(a, "x2", "x1")
        or _not_contiguous(a, names)
    )


_gamma_shape_rule(
    "add_rms_norm.gamma.shape",
    ADD_RMS,
    "x1",
    "gamma's shape is the trailing dimensions of x1's",
    CANN_ADD_RMS_NORM,
)


# =========================================================================== rotary

ROPE = "npu_rotary_mul"


def _rope_layouts(x: torch.Tensor, r: torch.Tensor, mode: str) -> list[tuple[str, int, int]]:
    """(layout, B, N) of each layout whose documented r1 pattern ``r`` matches for ``x``."""
    d0, d1, d2, d = x.shape
    if mode == "half":
        patterns = {
            "BNSD": [(1, 1, d2), (d0, 1, d2), (d0, d1, d2)],
            "BSND": [(1, d1, 1), (d0, d1, 1), (d0, d1, d2)],
            "SBND": [(d0, 1, 1), (d0, d1, 1), (d0, d1, d2)],
        }
    else:
        patterns = {"BNSD": [(1, 1, d2)], "BSND": [(1, d1, 1)], "SBND": [(d0, 1, 1)]}
    bn = {"BNSD": (d0, d1), "BSND": (d0, d2), "SBND": (d1, d2)}
    if r.dim() != 4 or r.shape[3] != d:
        return []
    return [(lay, *bn[lay]) for lay, pats in patterns.items() if tuple(r.shape[:3]) in pats]


@_rule(
    "rotary_mul.inputs",
    ROPE,
    "self",
    "self, r1 and r2 are 4-D float16, bfloat16 or float32; rotate (if given) is 2-D of "
    "those dtypes",
    docs(3542, 3543, 3544, 3546),
)
def _(a, c):
    return _bad_tensor(a, ("self", "r1", "r2"), _FLOATS, (4,)) or _bad_tensor(
        a, ("rotate",), _FLOATS, (2,)
    )


_choice_rule(
    "rotary_mul.mode",
    ROPE,
    "rotary_mode",
    "rotary_mode is 'half' or 'interleave'",
    docs(3545),
    ("half", "interleave"),
)


@_rule(
    "rotary_mul.head_dim",
    ROPE,
    "self",
    "D (last dimension) is even and less than 896",
    docs(3550, 3558),
)
def _(a, c):
    x = a["self"]
    if x.dim() == 4 and (x.shape[3] % 2 or x.shape[3] >= 896):
        return f"self {_shape(x)} has D={x.shape[3]}"
    return None


@_rule(
    "rotary_mul.broadcast",
    ROPE,
    "r1",
    "r1 and r2 have the same shape, one the layout allows: 'half' BNSD 11SD/B1SD/BNSD, BSND "
    "1S1D/BS1D/BSND, SBND S11D/SB1D/SBND; 'interleave' BNSD 11SD, BSND 1S1D, SBND S11D",
    docs(3551, 3552, 3553, 3554, 3555, 3559, 3560, 3561, 3562, 3563),
)
def _(a, c):
    x, r1 = a["self"], a["r1"]
    if x.dim() != 4 or a["rotary_mode"] not in ("half", "interleave"):
        return None
    bad = _same_shape(a, "r2", "r1")
    if bad is None and not _rope_layouts(x, r1, a["rotary_mode"]):
        return f"r1 {_shape(r1)} for self {_shape(x)} in mode {a['rotary_mode']!r}"
    return bad


@_rule(
    "rotary_mul.batch_heads",
    ROPE,
    "self",
    "'half': B < 1000 and N < 1000; 'interleave': B * N < 1000 (in the layout r1 implies)",
    docs(3550, 3558),
)
def _(a, c):
    x, mode = a["self"], a["rotary_mode"]
    if x.dim() != 4 or mode not in ("half", "interleave"):
        return None
    layouts = _rope_layouts(x, a["r1"], mode)
    if not layouts:
        return None

    def fits(b: int, n: int) -> bool:
        return b * n < 1000 if mode == "interleave" else (b < 1000 and n < 1000)

    if not any(fits(b, n) for _, b, n in layouts):
        found = ", ".join(f"{lay}: B={b}, N={n}" for lay, b, n in layouts)
        return f"self {_shape(x)} ({found}) in mode {mode!r}"
    return None


# =========================================================================== activation

SWIGLU = "npu_swiglu"


@_rule(
    "swiglu.self",
    SWIGLU,
    "self",
    "self is float32, float16 or bfloat16 with 1 to 8 dimensions",
    docs(4404),
)
def _(a, c):
    return _bad_tensor(a, ("self",), _FLOATS, range(1, 9))


# =========================================================================== ATB

RESHAPE_AND_CACHE = "_npu_reshape_and_cache"


_dtype_rule(
    "atb.reshape_and_cache.dtype",
    RESHAPE_AND_CACHE,
    "key, value, key_cache and value_cache are float16, bfloat16 or int8, all the same",
    f"{ATB_RESHAPE_AND_CACHE}; {ATB_RESHAPE_AND_CACHE_DTYPES}",
    ("key",),
    (*_F16_BF16, torch.int8),
    same=("value", "key_cache", "value_cache"),
)


@_rule(
    "atb.reshape_and_cache.shapes",
    RESHAPE_AND_CACHE,
    "key_cache",
    "key/value are (num_tokens, num_head, head_size); the ND caches are (num_blocks, "
    "block_size, num_head, head_size) with the same (num_blocks, block_size); slot_indices "
    "(the slotMapping) is int32 (num_tokens,)",
    ATB_RESHAPE_AND_CACHE,
)
def _(a, c):
    key, value, kc, vc = a["key"], a["value"], a["key_cache"], a["value_cache"]
    for name, t in (("key", key), ("value", value)):
        if t.dim() != 3:
            return name, f"{name} has shape {_shape(t)}"
    if value.shape[:2] != key.shape[:2]:
        return "value", f"value {_shape(value)} for key {_shape(key)}"
    for name, cache, t in (("key_cache", kc, key), ("value_cache", vc, value)):
        if cache.dim() != 4 or _shape(cache)[2:] != _shape(t)[1:]:
            return name, f"{name} {_shape(cache)} for {name[:-6]} {_shape(t)}"
    if _shape(vc)[:2] != _shape(kc)[:2]:
        return "value_cache", f"value_cache {_shape(vc)}, key_cache {_shape(kc)}"
    slots = a["slot_indices"]
    if slots.dtype != torch.int32 or _shape(slots) != (key.shape[0],):
        return "slot_indices", f"slot_indices is {_dt(slots.dtype)} of shape {_shape(slots)}"
    return None


PAGED = "_npu_paged_attention"
#: The tensors of ATB's attention ops that have query's dtype.
_ATB_ATTENTION_TENSORS = ("key_cache", "value_cache", "out")


def _atb_heads(a: Mapping[str, Any]) -> str | tuple[str, str] | None:
    n, kv = a["num_heads"], a["num_kv_heads"]
    if n <= 0 or kv <= 0 or kv > n or n % kv:
        return "num_kv_heads", f"num_heads={n}, num_kv_heads={kv}"
    return None


_dtype_rule(
    "atb.paged_attention.dtype",
    PAGED,
    "query, key_cache, value_cache and out are float16 or bfloat16 (Atlas A2/A3, no "
    "quantisation), all the same",
    f"{ATB_PAGED_ATTENTION_IO}; {ATB_PAGED_ATTENTION}",
    ("query",),
    _F16_BF16,
    same=_ATB_ATTENTION_TENSORS,
)


@_rule(
    "atb.paged_attention.heads",
    PAGED,
    "num_kv_heads",
    "num_kv_heads divides num_heads (GQA: num_heads > num_kv_heads, num_heads % num_kv_heads "
    "== 0); the caches hold num_kv_heads heads, query num_heads",
    ATB_PAGED_ATTENTION,
)
def _(a, c):
    bad = _atb_heads(a)
    if bad is not None:
        return bad
    q = a["query"]
    if q.dim() != 3 or q.shape[1] != a["num_heads"]:
        return "query", f"query {_shape(q)} for num_heads={a['num_heads']}"
    for name in ("key_cache", "value_cache"):
        t = a[name]
        if t.dim() != 4 or t.shape[2] != a["num_kv_heads"]:
            return name, f"{name} {_shape(t)} for num_kv_heads={a['num_kv_heads']}"
    return None


@_rule(
    "atb.paged_attention.block_size",
    PAGED,
    "key_cache",
    "block_size (dimension 1 of the ND caches) is a multiple of 16 (128 recommended)",
    ATB_PAGED_ATTENTION,
)
def _(a, c):
    kc = a["key_cache"]
    if kc.dim() == 4 and kc.shape[1] % 16:
        return f"key_cache {_shape(kc)} has block_size {kc.shape[1]}"
    return None


@_rule(
    "atb.paged_attention.head_size",
    PAGED,
    "key_cache",
    "key/value head sizes lie in (0, 256], the key's equal to query's (the page also allows "
    "up to 576 with block_size <= 128 outside its listed scenarios; the stricter range is "
    "kept)",
    ATB_PAGED_ATTENTION,
)
def _(a, c):
    q, kc, vc = a["query"], a["key_cache"], a["value_cache"]
    if kc.dim() != 4 or vc.dim() != 4 or q.dim() != 3:
        return None
    dk, dv = kc.shape[3], vc.shape[3]
    if dk != q.shape[2]:
        return f"key head size {dk}, query's {q.shape[2]}"
    for name, d in (("key_cache", dk), ("value_cache", dv)):
        if not 0 < d <= 256:
            return name, f"{name} head size {d}"
    return None


@_rule(
    "atb.paged_attention.metadata",
    PAGED,
    "context_lens",
    "block_table is int32 (batch, max_blocks); context_lens is int32 (batch,); out is "
    "(num_tokens, num_heads, value head size)",
    ATB_PAGED_ATTENTION_IO,
)
def _(a, c):
    q, table, lens, out = a["query"], a["block_table"], a["context_lens"], a["out"]
    batch = q.shape[0] if q.dim() else 0
    if table.dtype != torch.int32 or table.dim() != 2 or table.shape[0] < batch:
        return "block_table", f"block_table is {_dt(table.dtype)} of shape {_shape(table)}"
    if lens.dtype != torch.int32 or _shape(lens) != (batch,):
        return f"context_lens is {_dt(lens.dtype)} of shape {_shape(lens)} for {batch} tokens"
    vc = a["value_cache"]
    want = (batch, a["num_heads"], vc.shape[3] if vc.dim() == 4 else None)
    if _shape(out) != want:
        return "out", f"out has shape {_shape(out)}, expected {want}"
    return None


QLENS = "_npu_flash_attention_qlens"


def _qlens_head_size(a: Mapping[str, Any]) -> int | None:
    kc = a["key_cache"]
    if kc.dim() == 4:
        return kc.shape[3]
    if kc.dim() == 3 and a["num_kv_heads"] > 0 and kc.shape[2] % a["num_kv_heads"] == 0:
        return kc.shape[2] // a["num_kv_heads"]
    return None


_dtype_rule(
    "atb.qlens.dtype",
    QLENS,
    "query, key_cache, value_cache and out are float16 or bfloat16, all the same",
    ATB_PREFIX_ENCODER,
    ("query",),
    _F16_BF16,
    same=_ATB_ATTENTION_TENSORS,
)


@_rule(
    "atb.qlens.heads",
    QLENS,
    "num_kv_heads",
    "GQA: num_heads >= num_kv_heads and num_heads % num_kv_heads == 0",
    ATB_SELF_ATTENTION,
)
def _(a, c):
    return _atb_heads(a)


@_rule(
    "atb.qlens.layout",
    QLENS,
    "key_cache",
    "query is (nTokens, heads * headSize) or (nTokens, heads, headSize); the ND caches are "
    "(numBlocks, blockSize, kvHeads * headSize) or (numBlocks, blockSize, kvHeads, "
    "headSize), key and value of the same shape",
    ATB_PREFIX_ENCODER,
)
def _(a, c):
    q, kc = a["query"], a["key_cache"]
    if q.dim() not in (2, 3):
        return "query", f"query has shape {_shape(q)}"
    if kc.dim() not in (3, 4):
        return f"key_cache has shape {_shape(kc)}"
    bad = _same_shape(a, "value_cache", "key_cache")
    if bad is not None:
        return bad
    d = _qlens_head_size(a)
    if d is None or (kc.dim() == 4 and kc.shape[2] != a["num_kv_heads"]):
        return f"key_cache {_shape(kc)} for num_kv_heads={a['num_kv_heads']}"
    if math.prod(q.shape[1:]) != a["num_heads"] * d:
        return "query", f"query {_shape(q)} for {a['num_heads']} heads of {d}"
    return None


@_rule(
    "atb.qlens.block_size",
    QLENS,
    "key_cache",
    f"blockSize (dimension 1 of the caches) must be {ATB_PREFIX_BLOCK_SIZE}",
    ATB_PREFIX_ENCODER,
)
def _(a, c):
    kc = a["key_cache"]
    if kc.dim() in (3, 4) and kc.shape[1] != ATB_PREFIX_BLOCK_SIZE:
        return f"key_cache {_shape(kc)} has blockSize {kc.shape[1]}"
    return None


@_rule(
    "atb.qlens.head_size",
    QLENS,
    "key_cache",
    "headSize is a multiple of 16 and at most 128 (blockSize * headSize <= 128 * 128)",
    ATB_PREFIX_ENCODER,
)
def _(a, c):
    d = _qlens_head_size(a)
    if d is not None and (d % 16 or not 0 < d <= 128):
        return f"head size {d}"
    return None


@_rule(
    "atb.qlens.metadata",
    QLENS,
    "seq_len",
    "blockTables is int32 (batch, maxBlockNum); seqLen and kvSeqLen (seq_len, context_lens) "
    "are int32 (batch,)",
    ATB_PREFIX_ENCODER,
)
def _(a, c):
    lens = ("seq_len", "context_lens")
    int32 = (torch.int32, getattr(torch, "uint32", torch.int32))
    bad = _bad_tensor(a, lens, int32, (1,)) or _same_shape(a, "context_lens", "seq_len")
    if bad is not None:
        return bad
    table = a["block_table"]
    if table.dtype != torch.int32 or table.dim() != 2 or table.shape[0] < a["seq_len"].shape[0]:
        return "block_table", f"block_table is {_dt(table.dtype)} of shape {_shape(table)}"
    return None


@_rule(
    "atb.qlens.prefix_alignment",
    QLENS,
    "context_lens",
    f"each request's cached prefix, kvSeqLen - seqLen (context_lens - seq_len), is a "
    f"multiple of {ATB_PREFIX_BLOCK_SIZE}",
    ATB_PREFIX_ENCODER,
)
def _(a, c):
    q_lens, kv_lens = c.ints("seq_len"), c.ints("context_lens")
    if q_lens is None or kv_lens is None or len(q_lens) != len(kv_lens):
        return None
    for b, (q, kv) in enumerate(zip(q_lens, kv_lens, strict=True)):
        if (kv - q) % ATB_PREFIX_BLOCK_SIZE:
            return f"request {b} has a prefix of {kv - q} tokens ({q} new of {kv})"
    return None
