"""``torchair.configs.compiler_config.CompilerConfig`` stand-in.

Holds the options sglang sets (``mode``, ``debug.run_eagerly``) and the other top-level
groups of torchair's config as plain attribute namespaces. ``mode`` accepts torchair's two
values; the emulated backend runs eagerly for both.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

__all__ = ["CompilerConfig"]

_MODES = ("max-autotune", "reduce-overhead")


class CompilerConfig:
    """torchair's compiler options (accepted and kept; the emulated backend is eager)."""

    def __init__(self) -> None:
        self.debug = SimpleNamespace(
            run_eagerly=False,
            graph_dump=SimpleNamespace(type=None, path=None),
            fx_summary=SimpleNamespace(type=None, skip_compile=True),
            data_dump=SimpleNamespace(type=None, filter=None),
            aclgraph=SimpleNamespace(disable_reinplace_inplaceable_ops_pass=False),
        )
        self.export = SimpleNamespace(export_mode=False, export_path_dir=None, export_name=None)
        self.dump_config = SimpleNamespace(enable_dump=False, dump_path="./", dump_mode="all")
        self.experimental_config = SimpleNamespace(
            frozen_parameter=False,
            tiling_schedule_optimize=False,
            static_model_ops_lower_limit=None,
            topology_sorting_strategy="DFS",
            enable_view_optimize=True,
            keep_inference_input_mutations=True,
            enable_single_stream=False,
        )
        self.inference_config = SimpleNamespace(dynamic_gears_merge_policy="zip")
        self.ge_config = SimpleNamespace(enable_single_stream=False, oo_level="O3")
        self.aoe_config = SimpleNamespace(aoe_mode=None)
        self.fusion_config = SimpleNamespace(fusion_switch_file=None)
        self.aclgraph_config = SimpleNamespace(use_custom_pool=None)
        self._mode = "max-autotune"

    @property
    def mode(self) -> str:
        return self._mode

    @mode.setter
    def mode(self, value: Any) -> None:
        if value not in _MODES:
            raise ValueError(
                f"CompilerConfig.mode must be one of {', '.join(_MODES)}, got {value!r}"
            )
        self._mode = value

    def __repr__(self) -> str:
        return f"CompilerConfig(mode={self._mode!r}, run_eagerly={self.debug.run_eagerly})"
