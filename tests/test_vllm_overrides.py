"""Every method the vLLM plugin's classes override has the signature of the installed vLLM's.

vLLM calls our platform, worker, model runner, attention backend (and its impl and metadata
builder) and communicator through its own base classes' methods. An override whose
parameters drifted from the base's (a new argument in a vLLM release, a renamed one, a
classmethod where vLLM has an instance method) fails only when vLLM takes that path, often
on real hardware. This test compares, for each method one of our classes defines, its
parameters (names, kinds, order, defaults) and its kind (instance method, classmethod,
staticmethod, property) with the method of the same name on the nearest vLLM class in the
MRO.

A method that no vLLM base class defines must be listed below, with why:

* :data:`NEWER_VLLM_HOOKS`: a hook of a newer vLLM, with that version and the signature it
  has there (checked against our override now, and against the base once that vLLM is the
  installed one);
* :data:`DUCK_TYPED`: called by vLLM without a base-class declaration; compared with a
  vLLM implementation instead;
* :data:`DEVICE_MODULE_FUNCTIONS`: ``torch.<device>`` functions vLLM reaches through
  ``Platform.__getattr__``;
* :data:`OWN_HELPERS`: the plugin's own helpers (private names vLLM does not call).

Known differences are listed in :data:`KNOWN_MISMATCHES` and expected to fail (strictly: a
fixed one makes the test fail until its entry is removed).

Importing the plugin's classes imports vLLM and torch; no NPU and no NPU_PLATFORM_EMULATE
is needed.
"""

from __future__ import annotations

import functools
import importlib
import inspect
from typing import Any, NamedTuple

import pytest
from packaging.version import Version

from npu_platform import versions

# (class name, method name) -> (vLLM version whose base class has it, kind, parameter names)
NEWER_VLLM_HOOKS: dict[tuple[str, str], tuple[str, str, tuple[str, ...]]] = {
    # vLLM 0.33: Platform.get_kv_cache_config_builder_cls(cls, vllm_config) -> str | None
    ("NPUPlatform", "get_kv_cache_config_builder_cls"): (
        "0.33",
        "classmethod",
        ("cls", "vllm_config"),
    ),
}

# (class name, method name) -> "module.Class" of a vLLM implementation to compare with
DUCK_TYPED: dict[tuple[str, str], str] = {
    # vLLM calls attn_layer.impl.do_kv_cache_update(layer, key, value, kv_cache,
    # slot_mapping) when the backend's forward_includes_kv_cache_update is False; only
    # MLAAttentionImpl declares it (with MLA's parameters).
    ("NPUAttentionImpl", "do_kv_cache_update"): (
        "vllm.v1.attention.backends.cpu_attn.CPUAttentionBackendImpl"
    ),
}

# Platform methods that stand in for torch.<device_type>.<name>, which vLLM's
# Platform.__getattr__ forwards to (torch.npu is torch_npu's, absent without it).
DEVICE_MODULE_FUNCTIONS = frozenset(
    {
        "Event",
        "Stream",
        "current_device",
        "current_stream",
        "device_count",
        "empty_cache",
        "mem_get_info",
        "stream",
        "synchronize",
    }
)

# (class name, method name): the plugin's own helpers, which override nothing of vLLM's.
OWN_HELPERS: frozenset[tuple[str, str]] = frozenset(
    {
        ("NPUWorker", "_local_device_index"),
        ("NPUAttentionImpl", "_attend_float32"),
        ("NPUAttentionMetadataBuilder", "_add_gather_index"),
    }
)

# (class name, method name) -> a known difference that fails (xfail, strict) until fixed.
KNOWN_MISMATCHES: dict[tuple[str, str], str] = {}

_CATCH_ALL = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)


class Param(NamedTuple):
    name: str
    kind: str
    default: Any

    def show(self) -> str:
        prefix = {"VAR_POSITIONAL": "*", "VAR_KEYWORD": "**"}.get(self.kind, "")
        default = "" if self.default is inspect.Parameter.empty else f"={self.default!r}"
        return f"{prefix}{self.name}{default}"


# --------------------------------------------------------------------------- discovery


@functools.cache
def plugin_classes() -> tuple[type, ...]:
    """The plugin's classes that vLLM calls through its own base classes."""
    from npu_platform.vllm import platform as platform_mod
    from npu_platform.vllm.attention import NPUAttentionBackend
    from npu_platform.vllm.model_runner import NPUModelRunner
    from npu_platform.vllm.worker import NPUWorker

    platform_cls = platform_mod.NPUPlatform
    classes: list[type] = [
        platform_cls,
        NPUWorker,
        NPUModelRunner,
        NPUAttentionBackend,
        NPUAttentionBackend.get_impl_cls(),
        NPUAttentionBackend.get_builder_cls(),
    ]
    emulated = getattr(platform_mod, "EmulatedNPUPlatform", None)
    if isinstance(emulated, type):
        classes.append(emulated)
    # The communicator the platform names, when it is ours (vLLM's own base otherwise).
    communicator = platform_cls.get_device_communicator_cls()
    if communicator.startswith("npu_platform."):
        module, _, name = communicator.rpartition(".")
        classes.append(getattr(importlib.import_module(module), name))
    return tuple(dict.fromkeys(classes))


def method_kind(raw: object) -> str | None:
    if isinstance(raw, staticmethod):
        return "staticmethod"
    if isinstance(raw, classmethod):
        return "classmethod"
    if isinstance(raw, (property, functools.cached_property)):
        return "property"
    if inspect.isfunction(raw):
        return "method"
    return None


def defined_methods(cls: type) -> list[str]:
    return sorted(name for name, raw in vars(cls).items() if method_kind(raw) is not None)


def vllm_definer(cls: type, name: str) -> type | None:
    """The nearest class in ``cls``'s MRO that comes from vLLM and defines ``name``."""
    for base in cls.__mro__[1:]:
        if base.__module__.split(".")[0] == "vllm" and name in vars(base):
            return base
    return None


def params(raw: object) -> list[Param]:
    function = raw.__func__ if isinstance(raw, (staticmethod, classmethod)) else raw
    signature = inspect.signature(function)  # through decorators that keep __wrapped__
    return [Param(p.name, p.kind.name, p.default) for p in signature.parameters.values()]


def _same_default(a: Any, b: Any) -> bool:
    try:
        return bool(a == b)
    except Exception:
        return repr(a) == repr(b)


def differences(ours: object, theirs: object) -> list[str]:
    """How override ``ours`` differs from base method ``theirs`` (empty: it matches).

    Our override may end in ``*args`` / ``**kwargs`` the base lacks: those accept every
    call the base's signature allows.
    """
    kind_ours, kind_theirs = method_kind(ours), method_kind(theirs)
    if kind_ours != kind_theirs:
        return [f"it is a {kind_ours}, vLLM's is a {kind_theirs}"]
    if kind_ours == "property":
        return []
    mine, base = params(ours), params(theirs)
    base_kinds = {p.kind for p in base}
    while mine and mine[-1].kind in {k.name for k in _CATCH_ALL} - base_kinds:
        mine.pop()
    problems: list[str] = []
    names_mine, names_base = [p.name for p in mine], [p.name for p in base]
    missing = [n for n in names_base if n not in names_mine]
    extra = [n for n in names_mine if n not in names_base]
    if missing:
        problems.append(f"lacks parameter(s) {', '.join(missing)}")
    if extra:
        problems.append(f"adds parameter(s) {', '.join(extra)}")
    common_mine = [n for n in names_mine if n in names_base]
    common_base = [n for n in names_base if n in names_mine]
    if common_mine != common_base:
        problems.append(f"orders its parameters {common_mine}, vLLM {common_base}")
    by_name = {p.name: p for p in base}
    for p in mine:
        q = by_name.get(p.name)
        if q is None:
            continue
        if p.kind != q.kind:
            problems.append(f"{p.name} is {p.kind}, vLLM's is {q.kind}")
        if not _same_default(p.default, q.default):
            problems.append(f"{p.name} defaults to {p.show()}, vLLM's to {q.show()}")
    if problems:
        shown_mine = ", ".join(p.show() for p in params(ours))
        shown_base = ", ".join(p.show() for p in base)
        problems.append(f"ours: ({shown_mine}); vLLM's: ({shown_base})")
    return problems


def _cases() -> list[Any]:
    cases = []
    for cls in plugin_classes():
        for name in defined_methods(cls):
            marks = []
            reason = KNOWN_MISMATCHES.get((cls.__name__, name))
            if reason is not None:
                marks.append(pytest.mark.xfail(reason=f"known: {reason}", strict=True))
            cases.append(pytest.param(cls, name, id=f"{cls.__name__}.{name}", marks=marks))
    return cases


def _installed_vllm() -> Version:
    installed = versions.installed_version("vllm")
    assert installed is not None, "vLLM is not installed"
    return Version(installed)


# --------------------------------------------------------------------------- the checks


@pytest.mark.parametrize(("cls", "name"), _cases())
def test_override_matches_vllm(cls: type, name: str) -> None:
    key = (cls.__name__, name)
    ours = vars(cls)[name]
    base = vllm_definer(cls, name)
    where = f"{cls.__module__}.{cls.__qualname__}.{name}"
    if base is not None:
        assert key not in OWN_HELPERS, (
            f"{where} is listed as our own helper, but {base.__module__}.{base.__qualname__} "
            f"defines {name} too, so ours overrides it: compare the two and remove the entry."
        )
        problems = differences(ours, vars(base)[name])
        assert not problems, (
            f"{where} does not match {base.__module__}.{base.__qualname__}.{name} of the "
            f"installed vLLM {_installed_vllm()}: " + "; ".join(problems)
        )
        return
    if key in NEWER_VLLM_HOOKS:
        since, kind, names = NEWER_VLLM_HOOKS[key]
        assert _installed_vllm() < Version(since), (
            f"NEWER_VLLM_HOOKS says vLLM {since} has {name} on a base class of "
            f"{cls.__qualname__}, but the installed vLLM {_installed_vllm()} has none: fix "
            "the entry (or our override, if vLLM renamed the hook)."
        )
        found = (method_kind(ours), tuple(p.name for p in params(ours)))
        assert found == (kind, names), (
            f"{where} is {found}, but vLLM {since} declares it as a {kind} with parameters {names}."
        )
        return
    if key in DUCK_TYPED:
        module, _, class_name = DUCK_TYPED[key].rpartition(".")
        reference = getattr(importlib.import_module(module), class_name)
        problems = differences(ours, vars(reference)[name])
        assert not problems, f"{where} does not match {DUCK_TYPED[key]}.{name}: " + "; ".join(
            problems
        )
        return
    if name in DEVICE_MODULE_FUNCTIONS and vllm_definer(cls, "__getattr__") is not None:
        import torch

        assert hasattr(torch.cuda, name), (
            f"{where} stands in for torch.<device>.{name}, which torch.cuda does not have."
        )
        return
    assert key in OWN_HELPERS, (
        f"{where} overrides nothing in the installed vLLM {_installed_vllm()}. If it is a "
        "hook of a newer vLLM, add it to NEWER_VLLM_HOOKS with that version and signature; "
        "if vLLM renamed or dropped the method, ours is no longer called: follow vLLM; if it "
        "is our own helper, add it to OWN_HELPERS."
    )


def test_lists_name_methods_of_our_classes() -> None:
    defined = {(cls.__name__, name) for cls in plugin_classes() for name in defined_methods(cls)}
    for table in (NEWER_VLLM_HOOKS, DUCK_TYPED, OWN_HELPERS, KNOWN_MISMATCHES):
        stale = sorted(set(table) - defined)
        assert not stale, f"entries naming no method of the plugin's classes: {stale}"


def test_kv_cache_config_builder_hook_works_on_both_vllms() -> None:
    """0.32: no base hook, the override answers None; 0.33: it passes the config on."""
    from vllm.platforms.interface import Platform

    from npu_platform.vllm.platform import NPUPlatform

    config = object()
    if not hasattr(Platform, "get_kv_cache_config_builder_cls"):
        assert NPUPlatform.get_kv_cache_config_builder_cls(config) is None
    seen: list[object] = []

    class Platform033(Platform):
        @classmethod
        def get_kv_cache_config_builder_cls(cls, vllm_config: Any) -> str | None:
            seen.append(vllm_config)
            return "vllm.v1.core.kv_cache_config_builder.KVCacheConfigBuilder"

    class Resolved(NPUPlatform, Platform033):  # NPUPlatform's super() is now Platform033
        pass

    answer = Resolved.get_kv_cache_config_builder_cls(config)
    assert answer == "vllm.v1.core.kv_cache_config_builder.KVCacheConfigBuilder"
    assert seen == [config]


def test_differences_are_described() -> None:
    class Base:
        def f(self, a, b=1, *, c=None): ...

        @classmethod
        def g(cls): ...

    def renamed(self, a, bb=1, *, c=None): ...

    def new_default(self, a, b=2, *, c=None): ...

    def catch_all(self, a, b=1, *, c=None, **kwargs): ...

    def g(self): ...

    assert differences(catch_all, vars(Base)["f"]) == []
    problems = differences(renamed, vars(Base)["f"])
    assert problems[:2] == ["lacks parameter(s) b", "adds parameter(s) bb"]
    assert "b defaults to b=2, vLLM's to b=1" in differences(new_default, vars(Base)["f"])
    assert differences(g, vars(Base)["g"]) == ["it is a method, vLLM's is a classmethod"]
