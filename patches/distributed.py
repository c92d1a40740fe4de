"""Process-group backends: ``nccl`` becomes ``hccl`` on an Ascend NPU.

Patched (each function is wrapped once; the wrapper rewrites two arguments and calls the
original):

* ``torch.distributed.init_process_group`` and ``torch.distributed.new_group`` (also under
  ``torch.distributed.distributed_c10d``, so torch's own helpers such as ``new_subgroups``
  are covered);
* ``init_distributed_environment`` and ``initialize_model_parallel`` of
  ``vllm.distributed.parallel_state``, ``sglang.srt.distributed.parallel_state`` and
  ``sglang.multimodal_gen.runtime.distributed.parallel_state``, whichever is imported,
  right after the import (so ``vllm.distributed`` and ``sglang.srt.distributed``, which
  re-export them, hand out the wrappers too).

``backend``: ``"nccl"`` becomes ``"hccl"``; per-device strings are rewritten entry by entry
(``"cpu:gloo,cuda:nccl"`` becomes ``"cpu:gloo,npu:hccl"``). Other names and ``None`` pass
unchanged. ``device_id`` (a CUDA ``torch.device`` or an index) becomes the NPU with the same
index.
"""

from __future__ import annotations

import functools
import inspect
import sys
from collections.abc import Callable
from types import ModuleType
from typing import Any

MARK = "__npu_platform_patched__"
PARALLEL_STATE_FUNCTIONS = ("init_distributed_environment", "initialize_model_parallel")


BACKEND = "hccl"
DEVICE_TYPE = "npu"


def map_backend(value: Any) -> Any:
    """The backend string to use on ``target`` instead of ``value`` (see the module doc)."""
    if not isinstance(value, str):
        return value
    text = value.strip()
    backend = BACKEND
    if ":" not in text:
        return backend if text.lower() == "nccl" else value
    entries: dict[str, str] = {}
    for part in text.split(","):
        device, _, name = part.strip().partition(":")
        device, name = device.strip().lower(), name.strip()
        if device == "cuda":
            device = DEVICE_TYPE
        if name.lower() == "nccl":
            name = backend
        entries.setdefault(device, name)
    return ",".join(f"{device}:{name}" for device, name in entries.items())


def map_device_id(value: Any) -> Any:
    """``device_id``: the NPU with the same index as a CUDA device or a bare index."""
    if value is None:
        return None
    import torch

    if isinstance(value, int) and not isinstance(value, bool):
        index: int | None = value
    elif isinstance(value, torch.device) and value.type == "cuda":
        index = value.index
    else:
        return value
    return torch.device(DEVICE_TYPE, index if index is not None else 0)


def _wrap(fn: Callable[..., Any], converters: dict[str, Callable[[Any], Any]]) -> Any:
    """``fn`` with the named arguments (positional or keyword) passed through converters."""
    try:
        names = list(inspect.signature(fn).parameters)
    except (TypeError, ValueError):
        names = []
    positions = {name: names.index(name) for name in converters if name in names}

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if positions:
            new_args = list(args)
            for name, convert in converters.items():
                if name in kwargs:
                    kwargs[name] = convert(kwargs[name])
                elif name in positions and positions[name] < len(new_args):
                    new_args[positions[name]] = convert(new_args[positions[name]])
            args = tuple(new_args)
        return fn(*args, **kwargs)

    setattr(wrapper, MARK, True)
    return wrapper


def _converters(*, device_id: bool) -> dict[str, Callable[[Any], Any]]:
    out: dict[str, Callable[[Any], Any]] = {"backend": map_backend}
    if device_id:
        out["device_id"] = map_device_id
    return out


def _root(fn: Any) -> Any:
    """The function at the bottom of a ``functools.wraps`` chain (``fn`` itself if none)."""
    try:
        return inspect.unwrap(fn)
    except ValueError:  # a cycle of __wrapped__
        return fn


def _patch_function(
    modules: list[ModuleType], name: str, converters: dict[str, Callable[[Any], Any]]
) -> bool:
    """Wrap ``name`` of ``modules[0]``, and of the other modules where they hold that function.

    Another module holds it when its ``name`` is the same object (a re-export) or a
    ``functools.wraps`` wrapper of it: torch_npu's ``transfer_to_npu`` (the ``cuda`` patch,
    applied first) rebinds ``torch.distributed.init_process_group`` to its own wrapper and
    leaves ``distributed_c10d``'s alone, and callers use the ``torch.distributed`` name. Each
    distinct function gets one wrapper; a function already wrapped by us is left as it is.
    """
    original = getattr(modules[0], name, None)
    if original is None or not callable(original):
        return False
    root = _root(original)
    wrappers: dict[int, Any] = {}
    for module in modules:
        current = getattr(module, name, None)
        if current is None or not callable(current) or getattr(current, MARK, False):
            continue
        if module is not modules[0] and _root(current) is not root:
            continue
        wrapper = wrappers.get(id(current))
        if wrapper is None:
            wrapper = wrappers[id(current)] = _wrap(current, converters)
        setattr(module, name, wrapper)
    return True


def patch_torch() -> list[str]:
    """Wrap torch.distributed's ``init_process_group`` and ``new_group``; the names done."""
    import torch.distributed as dist

    if not dist.is_available():
        return []
    c10d = sys.modules["torch.distributed.distributed_c10d"]
    done = []
    for name in ("init_process_group", "new_group"):
        if _patch_function([c10d, dist], name, _converters(device_id=True)):
            done.append(name)
    return done


def patch_parallel_state(module: ModuleType) -> list[str]:
    """Wrap a vLLM/sglang ``parallel_state`` module's functions; the names done.

    The package above it (``vllm.distributed``...) is rebound too when it already re-exports
    the originals.
    """
    modules = [module]
    parent = sys.modules.get(module.__name__.rpartition(".")[0])
    if parent is not None:
        modules.append(parent)
    return [
        name
        for name in PARALLEL_STATE_FUNCTIONS
        if _patch_function(modules, name, _converters(device_id=False))
    ]
