"""Locating torch_npu's data files (op schema YAML, ACL headers) without importing torch_npu.

Search order:
1. ``NPU_PLATFORM_TORCH_NPU_DATA``: a folder laid out like the ``torch_npu`` package;
2. the installed ``torch_npu`` package, found with ``importlib.util.find_spec`` (no import);
3. ``<sys.prefix>/share/npu_platform/torch_npu``, where ``scripts/setup.sh`` unpacks the
   files of a downloaded torch-npu wheel on machines without CANN.
"""

from __future__ import annotations

import importlib.util
import os
import sys

from npu_platform import env
from npu_platform.errors import EnvironmentProblem

OP_SCHEMA_YAML = os.path.join("csrc", "aten", "npu_native_functions_by_codegen.yaml")
ACL_RT_HEADER = os.path.join("include", "acl", "acl_rt.h")
OP_PLUGIN_DOCS = "_op_plugin_docs.py"
"""torch_npu's op documentation (the kernels' documented constraints, cited by spec.rules)."""
ACL_INCLUDE_DIR = "include"


def shared_data_dir() -> str:
    return os.path.join(sys.prefix, "share", "npu_platform", "torch_npu")


def candidate_roots() -> list[tuple[str, str]]:
    """(source description, folder) pairs, in search order."""
    roots: list[tuple[str, str]] = []
    override = env.get("NPU_PLATFORM_TORCH_NPU_DATA")
    if override:
        roots.append(("NPU_PLATFORM_TORCH_NPU_DATA", str(override)))
    try:
        spec = importlib.util.find_spec("torch_npu")
    except (ImportError, ValueError):
        spec = None
    if spec is not None and spec.submodule_search_locations:
        for location in spec.submodule_search_locations:
            roots.append(("installed torch_npu", location))
    roots.append(("unpacked torch-npu wheel", shared_data_dir()))
    return roots


def find(relative: str) -> str:
    """Absolute path of a torch_npu data file; :class:`EnvironmentProblem` says where we looked."""
    looked = []
    for source, root in candidate_roots():
        path = os.path.join(root, relative)
        if os.path.exists(path):
            return path
        looked.append(f"{path} ({source})")
    raise EnvironmentProblem(
        f"torch_npu data file {relative} not found. Looked at: {'; '.join(looked)}. Install "
        "torch_npu, run scripts/setup.sh (it unpacks the torch-npu wheel's data files), or point "
        "NPU_PLATFORM_TORCH_NPU_DATA at a folder laid out like the torch_npu package."
    )
