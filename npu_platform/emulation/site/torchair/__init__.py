"""Stand-in for ``torchair`` (torch_npu's graph-mode compiler) on the emulated NPU.

sglang 0.5.23 imports ``torchair``, ``torchair.ge_concrete_graph.ge_converter.experimental.
patch_for_hcom_allreduce`` and ``torchair.configs.compiler_config.CompilerConfig`` and calls
:func:`get_npu_backend` for ``torch.compile`` on NPU. The emulated NPU has no graph engine:
the backend returned here runs the graph dynamo captured eagerly (like torch.compile's
``"eager"`` backend), whatever ``compiler_config`` says. Results are the eager ones; nothing
is captured into an NPU graph, so ``reduce-overhead`` (aclgraph) gives no replay.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torchair.configs.compiler_config import CompilerConfig

__all__ = ["CompilerConfig", "get_compiler", "get_npu_backend"]

__version__ = "0.0.0+npu_platform.emulated"


def _check_config(compiler_config: Any) -> CompilerConfig:
    if compiler_config is None:
        return CompilerConfig()
    if not isinstance(compiler_config, CompilerConfig):
        raise TypeError(
            f"compiler_config must be a torchair CompilerConfig, got {type(compiler_config)!r}"
        )
    return compiler_config


def get_compiler(compiler_config: CompilerConfig | None = None) -> Callable[..., Any]:
    """The fx compiler: returns the captured graph module's ``forward`` unchanged (eager)."""
    _check_config(compiler_config)

    def compile_fx(gm: Any, example_inputs: Any) -> Callable[..., Any]:
        return gm.forward

    return compile_fx


def get_npu_backend(
    *,
    compiler_config: CompilerConfig | None = None,
    custom_decompositions: dict | None = None,
) -> Callable[..., Any]:
    """A ``torch.compile`` backend that runs the captured graph eagerly on the emulated NPU."""
    config = _check_config(compiler_config)
    del custom_decompositions
    compiler = get_compiler(config)

    def npu_backend(gm: Any, example_inputs: Any, **kwargs: Any) -> Callable[..., Any]:
        return compiler(gm, example_inputs)

    npu_backend.compiler_config = config  # type: ignore[attr-defined]
    return npu_backend
