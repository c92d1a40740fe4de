"""The ``NPU_PLATFORM_*`` environment variables: one table, one parser per kind.

This module is imported on the cheapest paths (detection, entry points, the start-up hook),
so it imports nothing beyond the standard library. None of our variables starts with
``VLLM_``: vLLM warns about ``VLLM_*`` names it does not know.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from npu_platform.errors import ConfigError

PREFIX = "NPU_PLATFORM_"

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off", "")


class Variable:
    """One variable: its name, kind ("bool", "int", "path", "choice", "list") and default."""

    __slots__ = ("choices", "default", "help", "kind", "minimum", "name")

    def __init__(
        self,
        name: str,
        kind: str,
        default: object,
        help: str,
        choices: tuple[str, ...] = (),
        minimum: int | None = None,
    ) -> None:
        self.name = name
        self.kind = kind
        self.default = default
        self.help = help
        self.choices = choices
        self.minimum = minimum

    def accepted(self) -> str:
        if self.kind == "bool":
            return "1/0 (also true/false, yes/no, on/off; empty means 0)"
        if self.kind == "int":
            return f"an integer >= {self.minimum}" if self.minimum is not None else "an integer"
        if self.kind == "choice":
            return ", ".join(self.choices)
        if self.kind == "list":
            return "a comma-separated subset of: " + ", ".join(self.choices)
        return "a path"


VARIABLES: dict[str, Variable] = {
    v.name: v
    for v in (
        Variable(
            "NPU_PLATFORM_EMULATE",
            "bool",
            False,
            "Run every plugin code path on an emulated NPU backed by the CPU.",
        ),
        Variable(
            "NPU_PLATFORM_EMULATE_DEVICES",
            "int",
            1,
            "Number of emulated NPU devices.",
            minimum=1,
        ),
        Variable(
            "NPU_PLATFORM_EMULATE_DEVICE_MEMORY",
            "int",
            4 << 30,
            "Memory of each emulated NPU device, in bytes (host memory, taken as it is used).",
            minimum=64 << 20,
        ),
        Variable(
            "NPU_PLATFORM_TORCH_NPU_DATA",
            "path",
            None,
            "Folder holding torch_npu's data files (the op schema YAML and the ACL headers), "
            "for machines where torch_npu is not installed.",
        ),
        Variable(
            "NPU_PLATFORM_TORCH_MEMORY_SAVER",
            "choice",
            "npu_platform",
            "Which torch_memory_saver sglang gets on an NPU: npu_platform (default: "
            "npu-platform's, even where the CUDA one or sgl-kernel-npu's Ascend port is "
            "installed) or installed (the installed package, unchanged).",
            choices=("npu_platform", "installed"),
        ),
        Variable(
            "NPU_PLATFORM_PATCHES",
            "bool",
            True,
            "Start-up patches for unmodified CUDA programs (dInfer): on by default, acting only "
            "on a real or emulated NPU; 0 turns them off in every process.",
        ),
        Variable(
            "NPU_PLATFORM_PATCH_ONLY",
            "list",
            None,
            "Apply only these start-up patches (default: distributed, flash_attn and "
            "torch_memory_saver; cuda, torch_npu's transfer_to_npu, only when named).",
            choices=("cuda", "distributed", "flash_attn", "torch_memory_saver"),
        ),
    )
}


def _raw(name: str, environ: Mapping[str, str] | None) -> str | None:
    env = os.environ if environ is None else environ
    return env.get(name)


def _bad(var: Variable, value: str) -> ConfigError:
    return ConfigError(f"{var.name}={value!r} is not valid: {var.name} accepts {var.accepted()}.")


def get(name: str, environ: Mapping[str, str] | None = None) -> object:
    """Parse one of our variables; raise :class:`ConfigError` naming it on a bad value."""
    var = VARIABLES[name]
    value = _raw(name, environ)
    if value is None:
        return var.default
    text = value.strip()
    if var.kind == "bool":
        low = text.lower()
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
        raise _bad(var, value)
    if var.kind == "int":
        if text == "":
            return var.default
        try:
            number = int(text)
        except ValueError:
            raise _bad(var, value) from None
        if var.minimum is not None and number < var.minimum:
            raise _bad(var, value)
        return number
    if var.kind == "choice":
        if text == "":
            return var.default
        if text.lower() not in var.choices:
            raise _bad(var, value)
        return text.lower()
    if var.kind == "list":
        if text == "":
            return var.default
        items = tuple(part.strip().lower() for part in text.split(",") if part.strip())
        unknown = [item for item in items if item not in var.choices]
        if unknown:
            raise _bad(var, value)
        return items
    return text or var.default


def validate(environ: Mapping[str, str] | None = None) -> list[str]:
    """Check every ``NPU_PLATFORM_*`` variable that is set.

    Raises :class:`ConfigError` on the first bad value. Returns warnings for names we do not
    know (most likely typos), each with the closest known name.
    """
    env = os.environ if environ is None else environ
    warnings: list[str] = []
    for name in sorted(env):
        if not name.startswith(PREFIX):
            continue
        if name in VARIABLES:
            get(name, env)
            continue
        import difflib

        close = difflib.get_close_matches(name, list(VARIABLES), n=1)
        hint = f" Did you mean {close[0]}?" if close else ""
        warnings.append(
            f"{name} is not a variable npu-platform knows and is ignored.{hint} "
            f"Known: {', '.join(sorted(VARIABLES))}."
        )
    return warnings
