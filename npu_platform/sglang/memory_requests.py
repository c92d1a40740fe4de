"""Memory-occupation requests checked where sglang receives them, so a bad one cannot kill
the scheduler.

sglang 0.5.23 forwards ``release_memory_occupation`` / ``resume_memory_occupation``
(``Engine`` methods and the HTTP endpoints) from its tokenizer manager to every scheduler
without looking at the tags, and the scheduler (``scheduler_components/weight_updater.py``)
keeps the released ones in a set:

* resume of a tag that is not released runs ``set.remove`` and raises ``KeyError``, which
  ends the scheduler process. A resume without tags means every tag (``kv_cache``,
  ``weights``, ``cuda_graph``), so after a staged release of ``kv_cache`` and ``weights``
  the request ``{}`` dies with ``KeyError: 'cuda_graph'``;
* an unknown tag is accepted and ignored; a second release of ``weights`` stashes the
  model's static state again, over the saved one.

The hooks here run in the process that holds the tokenizer manager (the HTTP server or the
``Engine`` caller) before the request reaches a scheduler. They keep the set of released
tags there and

* turn a request without tags into the tags it can mean: release of everything not yet
  released, resume of everything released (so ``{}`` resumes exactly what was released);
* refuse an unknown tag, the release of a released tag and the resume of a tag that is not
  released with ``ValueError``, which sglang's HTTP layer answers as its error response
  (``{"error": {"message": ...}}``, status 400) and ``Engine`` raises to its caller. Nothing
  is sent to the schedulers, and the server keeps serving.

The set changes only when sglang's own call returned normally.
"""

from __future__ import annotations

import asyncio
from typing import Any

MIXIN = "sglang.srt.managers.tokenizer_control_mixin.TokenizerControlMixin"
RELEASE_TARGET = f"{MIXIN}.release_memory_occupation"
RESUME_TARGET = f"{MIXIN}.resume_memory_occupation"

_STATE = "_npu_platform_released_tags"
_LOCK = "_npu_platform_memory_lock"

_registered = False


def _all_tags() -> list[str]:
    from sglang.srt.constants import GPU_MEMORY_ALL_TYPES

    return list(GPU_MEMORY_ALL_TYPES)


def _state(manager: Any) -> tuple[set[str], asyncio.Lock]:
    released = getattr(manager, _STATE, None)
    if released is None:
        released = set()
        setattr(manager, _STATE, released)
    lock = getattr(manager, _LOCK, None)
    if lock is None:
        lock = asyncio.Lock()
        setattr(manager, _LOCK, lock)
    return released, lock


def checked_tags(action: str, requested: list[str] | None, released: set[str]) -> list[str]:
    """The tags a ``release``/``resume`` request acts on, or ``ValueError`` saying why not."""
    known = _all_tags()
    if not requested:
        tags = [t for t in known if (t in released) == (action == "resume")]
        if not tags:
            raise ValueError(
                f"{action}_memory_occupation without tags: nothing to {action} "
                f"({'no tag is released' if action == 'resume' else 'every tag is released'}"
                f"; released: {sorted(released) or 'none'})"
            )
        return tags
    unknown = [t for t in requested if t not in known]
    if unknown:
        raise ValueError(
            f"{action}_memory_occupation: unknown tag(s) {', '.join(map(repr, unknown))}; "
            f"sglang's memory tags are {', '.join(known)}"
        )
    if len(set(requested)) != len(requested):
        raise ValueError(f"{action}_memory_occupation: tags {requested} name a tag twice")
    if action == "release":
        again = [t for t in requested if t in released]
        if again:
            raise ValueError(
                f"release_memory_occupation: {', '.join(map(repr, again))} already released; "
                "resume it before releasing it again"
            )
    else:
        missing = [t for t in requested if t not in released]
        if missing:
            raise ValueError(
                f"resume_memory_occupation: {', '.join(map(repr, missing))} not released "
                f"(released: {', '.join(sorted(released)) or 'none'}); resume only what was "
                "released"
            )
    return list(requested)


def _hook(action: str):
    async def around(original_fn: Any, self: Any, obj: Any, *args: Any, **kwargs: Any) -> Any:
        released, lock = _state(self)
        async with lock:
            tags = checked_tags(action, getattr(obj, "tags", None), released)
            obj.tags = tags
            result = await original_fn(self, obj, *args, **kwargs)
            if action == "release":
                released.update(tags)
            else:
                released.difference_update(tags)
            return result

    around.__name__ = f"npu_platform_checked_{action}_memory_occupation"
    return around


release_hook = _hook("release")
resume_hook = _hook("resume")


def register_hooks() -> bool:
    """Register both hooks on sglang's ``HookRegistry`` (once per process)."""
    global _registered
    if _registered:
        return True
    from sglang.srt.plugins.hook_registry import HookRegistry, HookType

    HookRegistry.register(RELEASE_TARGET, release_hook, HookType.AROUND)
    HookRegistry.register(RESUME_TARGET, resume_hook, HookType.AROUND)
    _registered = True
    return True
