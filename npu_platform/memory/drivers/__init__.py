"""Memory drivers and how to pick one.

* ``host`` (:class:`npu_platform.memory.drivers.host.HostDriver`): Linux virtual memory;
  tests and benchmarks.
* ``acl`` (``npu_platform.memory.drivers.acl.AclDriver``): Ascend NPUs via libascendcl.
* ``cuda`` (``npu_platform.memory.drivers.cuda.CudaDriver``): NVIDIA GPUs via libcuda.

Modules are imported lazily: importing this package loads no driver library.
"""

from __future__ import annotations

import importlib
from typing import Any

from npu_platform.errors import EnvironmentProblem
from npu_platform.memory.driver import Driver

__all__ = ["DRIVERS", "default_driver_name", "load_driver"]

# name -> (module, class)
DRIVERS: dict[str, tuple[str, str]] = {
    "host": ("npu_platform.memory.drivers.host", "HostDriver"),
    "acl": ("npu_platform.memory.drivers.acl", "AclDriver"),
    "cuda": ("npu_platform.memory.drivers.cuda", "CudaDriver"),
}


def load_driver(name: str, **kwargs: Any) -> Driver:
    """Instantiate the driver called ``name`` with ``kwargs``."""
    try:
        module_name, class_name = DRIVERS[name]
    except KeyError:
        raise ValueError(
            f"unknown memory driver {name!r}; choose one of {', '.join(sorted(DRIVERS))}"
        ) from None
    try:
        module = importlib.import_module(module_name)
        cls = getattr(module, class_name)
    except (ImportError, AttributeError) as exc:
        raise EnvironmentProblem(
            f"the {name!r} memory driver ({module_name}.{class_name}) cannot be loaded: {exc}"
        ) from exc
    return cls(**kwargs)


def default_driver_name() -> str:
    """``acl`` on an Ascend NPU (the emulated one too), ``cuda`` where torch has CUDA,
    else ``host``.
    """
    from npu_platform import detect

    if detect.detect().is_npu:
        return "acl"
    try:
        import torch

        if torch.cuda.is_available():
            return "cuda"
    except Exception:  # no torch, or a broken CUDA stack: host memory
        pass
    return "host"
