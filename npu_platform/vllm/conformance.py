"""Conformance checks of the vLLM integration, as plain functions.

Each check returns ``(name, passed, detail)``; a check that does not apply on this machine
passes with a detail starting ``"skipped:"``. :func:`run_all` runs them in order; the
``npu-platform conformance`` command prints them. The checks:

* the ``vllm.platform_plugins`` and ``vllm.general_plugins`` entry points are installed
  (``importlib.metadata``) and point at ours;
* under the current detection our platform entry point answers our class, and vLLM's
  ``current_platform`` is an instance of it;
* every ``Platform`` method vLLM requires (:func:`required_platform_methods`) is overridden
  by our platform and callable; those without side effects are called;
* the attention backend contract: ``NPU_ATTN`` registered, the platform selects it,
  concrete impl and metadata-builder classes, a KV-cache layout declared;
* custom-op registration: vLLM's out-of-tree registry maps ``RMSNorm``,
  ``RotaryEmbedding`` and ``SiluAndMul`` to ours;
* a short greedy generation through ``vllm.LLM`` on a tiny local model
  (:mod:`npu_platform.vllm.tiny_model`, no downloads) in the configuration users get: bfloat16,
  the platform's default block size (128), head size 128, GQA; compared with Hugging Face
  greedy ``generate`` in bfloat16, token for token up to the first near-tie
  (:func:`~npu_platform.vllm.tiny_model.greedy_agreement`), in a child process
  (``python -m npu_platform.vllm.conformance generate DIR``) so the caller's process keeps
  no engine, no model and no vLLM global state.

Importing this module imports neither torch nor vLLM; the checks do.
"""

from __future__ import annotations

import ast
import importlib.metadata
import inspect
import json
import os
import pkgutil
import subprocess
import sys
import tempfile
import textwrap
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from npu_platform.detect import detect

Result = tuple[str, bool, str]

PLATFORM_GROUP = "vllm.platform_plugins"
GENERAL_GROUP = "vllm.general_plugins"
EXPECTED_ENTRY_POINTS = {
    PLATFORM_GROUP: "npu_platform.entry_points.vllm:platform_plugin",
    GENERAL_GROUP: "npu_platform.entry_points.vllm:register",
}
#: The custom ops our general plugin replaces, by their in-tree class names.
CUSTOM_OPS = ("RMSNorm", "RotaryEmbedding", "SiluAndMul")

#: Hooks every platform on vLLM's V1 path must answer, beyond the methods vLLM's
#: ``Platform`` leaves raising ``NotImplementedError`` (their defaults are CUDA's or empty).
V1_HOOKS = frozenset(
    {
        "get_attn_backend_cls",
        "check_and_update_config",
        "get_device_communicator_cls",
        "is_sleep_mode_available",
        "is_pin_memory_available",
        "validate_environ",
        "import_kernels",
        "register_triton_kernel_overrides",
        "support_hybrid_kv_cache",
        "opaque_attention_op",
    }
)

#: Required methods the platform check calls (no side effects beyond this process's
#: device queries), with their arguments.
_SAFE_CALLS: dict[str, tuple[Any, ...]] = {
    "get_device_name": (),
    "get_device_uuid": (),
    "get_device_total_memory": (),
    "get_current_memory_usage": (),
    "num_compute_units": (),
    "is_pin_memory_available": (),
    "is_sleep_mode_available": (),
    "get_punica_wrapper": (),
    "get_device_communicator_cls": (),
    "import_kernels": (),
    "opaque_attention_op": (),
    "support_hybrid_kv_cache": (),
    "check_runner_kv_caches_multi_layer": (),
    "validate_environ": (False,),
}

#: The generation check: prompts, new tokens per prompt, child time limit (seconds).
GENERATION_PROMPTS = 3
GENERATION_TOKENS = 8
#: ... and its model and dtype: the production configuration (GQA, head size 128, bfloat16).
GENERATION_DTYPE = "bfloat16"
#: A standard weight spread: a well-conditioned model, on which 16-bit rounding rarely
#: changes a greedy token.
GENERATION_MODEL = {
    "kind": "qwen2",
    "hidden_size": 512,
    "num_attention_heads": 4,
    "initializer_range": 0.04,
}
GENERATION_TIMEOUT_S = 600
_RESULT_PREFIX = "NPU-PLATFORM-CONFORMANCE-RESULT "
_MODULE = "npu_platform.vllm.conformance"


def _failure(name: str, exc: BaseException) -> Result:
    last = traceback.format_exception_only(type(exc), exc)[-1].strip()
    return (name, False, f"raised {last}")


def _class_path(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _skip_without_npu(name: str) -> Result | None:
    decision = detect()
    if decision.is_npu:
        return None
    return (name, True, f"skipped: no NPU, real or emulated ({decision.reason})")


def _expected_platform_path() -> str:
    from npu_platform.entry_points import vllm as entry

    return entry.NPU_PLATFORM


def _load_general_plugins() -> None:
    """What vLLM does in every process: run the general plugins (ours registers there)."""
    from vllm.plugins import load_general_plugins

    load_general_plugins()


# --------------------------------------------------------------------------- introspection


def raises_not_implemented(fn: Callable[..., Any]) -> bool:
    """Whether ``fn``'s source raises ``NotImplementedError`` anywhere."""
    try:
        source = textwrap.dedent(inspect.getsource(fn))
    except (OSError, TypeError):
        return False
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return False
    return any(
        isinstance(node, ast.Raise) and "NotImplementedError" in ast.unparse(node)
        for node in ast.walk(tree)
    )


def required_platform_methods() -> set[str]:
    """Methods of vLLM's ``Platform`` that raise ``NotImplementedError``, plus
    :data:`V1_HOOKS`. Found by introspection, so a newer vLLM adding one lists it."""
    from vllm.platforms.interface import Platform

    required = set(V1_HOOKS)
    for name, member in vars(Platform).items():
        fn = member.__func__ if isinstance(member, (classmethod, staticmethod)) else member
        if callable(fn) and raises_not_implemented(fn):
            required.add(name)
    return required


def not_overridden(platform_cls: type, required: set[str] | None = None) -> list[str]:
    """Required methods that ``platform_cls`` takes from vLLM's ``Platform`` (or from a
    class other than npu_platform's)."""
    from npu_platform.vllm.platform import NPUPlatform

    if required is None:
        required = required_platform_methods()
    missing = []
    for name in sorted(required):
        owner = next((k for k in platform_cls.__mro__ if name in vars(k)), None)
        if owner is None or not issubclass(owner, NPUPlatform):
            missing.append(name)
    return missing


# --------------------------------------------------------------------------- checks


def check_entry_points() -> Result:
    """Both vLLM entry points are installed, point at our functions and load."""
    name = "vllm entry points registered"
    found: list[str] = []
    problems: list[str] = []
    for group, value in EXPECTED_ENTRY_POINTS.items():
        matches = [ep for ep in importlib.metadata.entry_points(group=group) if ep.value == value]
        if not matches:
            problems.append(f"{group} -> {value} missing")
            continue
        try:
            loaded = matches[0].load()
        except Exception as exc:
            problems.append(f"{group} -> {value} does not load ({exc!r})")
            continue
        if not callable(loaded):
            problems.append(f"{group} -> {value} is not callable")
            continue
        found.append(f"{group}: {matches[0].name} -> {value}")
    if problems:
        return (name, False, "; ".join(problems) + " (reinstall npu-platform: pip install -e .)")
    return (name, True, "; ".join(found))


def check_platform_class() -> Result:
    """Under the current detection, our entry point answers our class and vLLM uses it."""
    name = "vllm platform class resolves to ours"
    skipped = _skip_without_npu(name)
    if skipped is not None:
        return skipped
    try:
        from npu_platform.entry_points import vllm as entry

        expected = _expected_platform_path()
        answer = entry.platform_plugin()
        if answer != expected:
            return (name, False, f"the platform entry point answers {answer!r}, not {expected}")
        from vllm.platforms import current_platform

        actual = _class_path(type(current_platform))
        if actual != expected:
            return (
                name,
                False,
                f"vLLM resolved {actual}, not {expected} (VLLM_PLUGINS, VLLM_TARGET_DEVICE or "
                "another platform plugin may take precedence)",
            )
        return (name, True, f"{detect().target.value} NPU -> {actual}")
    except Exception as exc:
        return _failure(name, exc)


def check_platform_methods() -> Result:
    """Every required ``Platform`` method is overridden and callable; safe ones are called."""
    name = "vllm platform methods implemented"
    skipped = _skip_without_npu(name)
    if skipped is not None:
        return skipped
    try:
        cls = pkgutil.resolve_name(_expected_platform_path())
        required = required_platform_methods()
        missing = not_overridden(cls, required)
        if missing:
            return (name, False, f"{cls.__qualname__} does not override: {', '.join(missing)}")
        not_callable = sorted(n for n in required if not callable(getattr(cls, n, None)))
        if not_callable:
            return (name, False, f"not callable: {', '.join(not_callable)}")
        called = []
        platform = cls()  # vLLM calls them on its instance (some are instance methods)
        for method, args in _SAFE_CALLS.items():
            if method not in required:
                continue
            try:
                getattr(platform, method)(*args)
            except Exception as exc:
                return (name, False, f"{cls.__qualname__}.{method}{args!r} raised {exc!r}")
            called.append(method)
        communicator = cls.get_device_communicator_cls()
        pkgutil.resolve_name(communicator)
        return (
            name,
            True,
            f"{len(required)} required methods overridden by {cls.__qualname__}; "
            f"{len(called)} called without error; communicator {communicator} imports",
        )
    except Exception as exc:
        return _failure(name, exc)


def check_attention_backend() -> Result:
    """``NPU_ATTN``: registered, selected by the platform, concrete, with a KV layout."""
    name = "vllm attention backend contract"
    skipped = _skip_without_npu(name)
    if skipped is not None:
        return skipped
    try:
        import torch
        from vllm.v1.attention.backend import AttentionImpl, AttentionMetadataBuilder
        from vllm.v1.attention.backends.registry import AttentionBackendEnum
        from vllm.v1.attention.selector import AttentionSelectorConfig
        from vllm.v1.kv_cache_interface import FullAttentionSpec, KVCacheLayout

        from npu_platform.vllm.platform import ATTENTION_BACKEND_NAME, ATTENTION_BACKEND_PATH

        _load_general_plugins()
        if ATTENTION_BACKEND_NAME not in AttentionBackendEnum.__members__:
            return (name, False, f"{ATTENTION_BACKEND_NAME} is not in AttentionBackendEnum")
        member = AttentionBackendEnum[ATTENTION_BACKEND_NAME]
        if member.get_path() != ATTENTION_BACKEND_PATH:
            return (name, False, f"{ATTENTION_BACKEND_NAME} points at {member.get_path()}")
        platform_cls = pkgutil.resolve_name(_expected_platform_path())
        selector = AttentionSelectorConfig(
            head_size=128, dtype=torch.bfloat16, kv_cache_dtype="auto", block_size=128
        )
        for selected in (None, member):
            path = platform_cls.get_attn_backend_cls(selected, selector)
            if path != ATTENTION_BACKEND_PATH:
                return (name, False, f"the platform selects {path} for {selected}")
        backend = member.get_class()
        problems = []
        if backend.get_name() != ATTENTION_BACKEND_NAME:
            problems.append(f"get_name() is {backend.get_name()!r}")
        for cls, base in (
            (backend.get_impl_cls(), AttentionImpl),
            (backend.get_builder_cls(), AttentionMetadataBuilder),
        ):
            if not (isinstance(cls, type) and issubclass(cls, base)):
                problems.append(f"{cls!r} is not an {base.__name__}")
            elif inspect.isabstract(cls):
                problems.append(f"{cls.__qualname__} leaves abstract methods")
        layouts = backend.supported_kv_cache_layouts()
        if not layouts or not all(isinstance(x, KVCacheLayout) for x in layouts):
            problems.append(f"no KV-cache layout declared ({layouts!r})")
        spec = backend.customize_spec(
            FullAttentionSpec(block_size=128, num_kv_heads=2, head_size=128, dtype=torch.bfloat16)
        )
        if spec.num_head_slots != 2 or spec.state_content_bytes != 2 * 128 * 2:
            problems.append(f"unexpected KV-cache spec {spec!r}")
        if backend.forward_includes_kv_cache_update or not hasattr(
            backend.get_impl_cls(), "do_kv_cache_update"
        ):
            problems.append("the KV-cache update is not a separate do_kv_cache_update step")
        if problems:
            return (name, False, "; ".join(problems))
        return (
            name,
            True,
            f"{ATTENTION_BACKEND_NAME} -> {ATTENTION_BACKEND_PATH}; "
            f"impl {backend.get_impl_cls().__qualname__}, builder "
            f"{backend.get_builder_cls().__qualname__}; KV-cache layout "
            f"{', '.join(x.name for x in layouts)} with separate key and value planes",
        )
    except Exception as exc:
        return _failure(name, exc)


def _in_tree_op(op_registry: dict[str, type], name: str) -> type | None:
    """vLLM's class named ``name`` among its registered custom ops and their subclasses.

    vLLM swaps in an out-of-tree op by the *class name* of the op being built, while its
    registry is keyed by registration names (``rms_norm``), and some ops (``RotaryEmbedding``)
    are subclasses of the registered class (``RotaryEmbeddingBase``)."""
    seen: set[type] = set()
    pending = list(op_registry.values())
    while pending:
        cls = pending.pop()
        if cls in seen:
            continue
        seen.add(cls)
        if cls.__name__ == name and cls.__module__.startswith("vllm."):
            return cls
        pending.extend(cls.__subclasses__())
    return None


def check_custom_ops() -> Result:
    """vLLM's out-of-tree custom-op registry maps the in-tree ops to ours."""
    name = "vllm custom ops registered"
    skipped = _skip_without_npu(name)
    if skipped is not None:
        return skipped
    try:
        from vllm.model_executor.custom_op import op_registry, op_registry_oot

        from npu_platform.vllm.custom_ops import OOT_OPS

        _load_general_plugins()
        problems = []
        for op in CUSTOM_OPS:
            ours = OOT_OPS.get(op)
            registered = op_registry_oot.get(op)
            if ours is None or registered is not ours:
                problems.append(f"{op} -> {registered!r}")
                continue
            in_tree = _in_tree_op(op_registry, op)
            if in_tree is None:
                problems.append(f"vLLM has no custom op class {op} (ours would never be used)")
            elif not issubclass(ours, in_tree):
                problems.append(f"{_class_path(ours)} does not subclass {_class_path(in_tree)}")
            if "forward_oot" not in vars(ours):
                problems.append(f"{_class_path(ours)} does not define forward_oot")
        if problems:
            return (name, False, "; ".join(problems))
        return (
            name,
            True,
            ", ".join(f"{op} -> {OOT_OPS[op].__qualname__}" for op in CUSTOM_OPS),
        )
    except Exception as exc:
        return _failure(name, exc)


def check_greedy_generation() -> Result:
    """A short greedy generation through ``vllm.LLM`` matches Hugging Face greedy decoding."""
    name = "vllm greedy generation on a tiny model"
    skipped = _skip_without_npu(name)
    if skipped is not None:
        return skipped
    try:
        env = dict(os.environ)
        env["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
        env.setdefault("TOKENIZERS_PARALLELISM", "false")
        with tempfile.TemporaryDirectory(prefix="npu-platform-conformance-") as workdir:
            proc = subprocess.run(
                [sys.executable, "-m", _MODULE, "generate", workdir],
                env=env,
                capture_output=True,
                text=True,
                timeout=GENERATION_TIMEOUT_S,
                check=False,
            )
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(_RESULT_PREFIX)]
        if proc.returncode != 0 or not lines:
            tail = " | ".join(proc.stderr.strip().splitlines()[-3:])
            return (name, False, f"the child exited with {proc.returncode}: {tail}")
        result = json.loads(lines[-1][len(_RESULT_PREFIX) :])
        expected = _expected_platform_path()
        if result["platform"] != expected:
            return (name, False, f"vLLM ran on {result['platform']}, not {expected}")
        agreement = result["agreement"]
        setting = (
            f"{GENERATION_DTYPE}, block size {result['block_size']}, "
            f"head size {result['head_size']}"
        )
        if not agreement["ok"]:
            return (
                name,
                False,
                f"vLLM's tokens {result['got']} differ from Hugging Face's {result['ref']} "
                f"beyond a near-tie ({setting}): {agreement['sequences']}",
            )
        equal = sum(1 for s in agreement["sequences"] if s["equal"])
        return (
            name,
            True,
            f"{len(result['got'])} prompts x {GENERATION_TOKENS} tokens, {setting}: "
            f"{equal} equal to Hugging Face greedy generate, the rest up to a near-tie; "
            f"vLLM on {result['platform'].rsplit('.', 1)[-1]}",
        )
    except subprocess.TimeoutExpired:
        return (name, False, f"the child did not finish in {GENERATION_TIMEOUT_S} s")
    except Exception as exc:
        return _failure(name, exc)


def _generate(workdir: str) -> dict[str, Any]:
    """(child process) Build the tiny model, greedy-decode with transformers, then vLLM."""

    from npu_platform.vllm import tiny_model

    shape = dict(GENERATION_MODEL)
    kind = shape.pop("kind")
    model_dir = tiny_model.build_model(kind, Path(workdir) / f"tiny-{kind}", seed=0, **shape)
    tokenizer = tiny_model.load_tokenizer(model_dir)
    prompts = [tokenizer(t).input_ids for t in tiny_model.prompts(GENERATION_PROMPTS, seed=0)]

    ref = tiny_model.hf_greedy(model_dir, prompts, GENERATION_TOKENS, GENERATION_DTYPE)

    from vllm import LLM, SamplingParams
    from vllm.platforms import current_platform

    llm = LLM(
        model=str(model_dir),
        dtype=GENERATION_DTYPE,
        max_model_len=128,
        max_num_seqs=len(prompts),
        kv_cache_memory_bytes=16 << 20,
        seed=0,
    )
    params = SamplingParams(
        temperature=0.0, max_tokens=GENERATION_TOKENS, min_tokens=GENERATION_TOKENS
    )
    outputs = llm.generate([{"prompt_token_ids": p} for p in prompts], params, use_tqdm=False)
    got = [list(o.outputs[0].token_ids) for o in outputs]
    return {
        "platform": _class_path(type(current_platform)),
        "block_size": llm.llm_engine.vllm_config.cache_config.block_size,
        "head_size": llm.llm_engine.model_config.get_head_size(),
        "ref": ref,
        "got": got,
        "agreement": tiny_model.greedy_agreement(model_dir, prompts, got, ref, GENERATION_DTYPE),
    }


CHECKS: tuple[Callable[[], Result], ...] = (
    check_entry_points,
    check_platform_class,
    check_platform_methods,
    check_attention_backend,
    check_custom_ops,
    check_greedy_generation,
)


def run_all() -> list[Result]:
    return [check() for check in CHECKS]


def main(argv: list[str] | None = None) -> int:
    """``python -m npu_platform.vllm.conformance [generate DIR]``: the checks as a table,
    or (``generate``) the generation check's child."""
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["generate"] and len(args) == 2:
        result = _generate(args[1])
        print(_RESULT_PREFIX + json.dumps(result), flush=True)
        return 0
    if args:
        print("usage: python -m npu_platform.vllm.conformance [generate DIR]", file=sys.stderr)
        return 2
    results = run_all()
    for check_name, passed, detail in results:
        status = "skip" if detail.startswith("skipped:") else ("pass" if passed else "FAIL")
        print(f"[{status:>4}] {check_name}: {detail}")
    return 0 if all(passed for _, passed, _ in results) else 1


if __name__ == "__main__":  # the child process of the generation check
    raise SystemExit(main())
