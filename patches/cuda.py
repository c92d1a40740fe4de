"""CUDA spellings sent to the NPU: applied right after ``import torch`` when the hook is active.

Real Ascend NPU
    ``import torch_npu.contrib.transfer_to_npu``, torch_npu's own migration module, does the
    work: it replaces ``torch.cuda.*`` (and ``torch.cuda.amp.*``) with ``torch.npu.*``,
    ``Tensor.cuda``/``Module.cuda`` with ``.npu``, maps ``"cuda"`` device arguments of the
    tensor factories, ``Tensor.to``/``new_*``, ``Module.to``/``to_empty``, ``torch.load`` and
    DDP/FSDP to ``"npu"``, and ``nccl`` to ``hccl`` in ``init_process_group``. As side effects
    of that module it also disables ``torch.jit.script`` and reports triton as absent. Added
    here, where it leaves gaps: ``torch.cuda.CUDAGraph`` is ``torch.npu.NPUGraph`` and
    ``torch.cuda.graph(g, pool, stream, capture_error_mode)`` calls ``torch.npu.graph`` with
    keywords (its fourth positional parameter differs).

Emulated NPU (the CPU stands in; device indices come from :mod:`npu_platform.device`)
    ``torch.cuda``: ``is_initialized`` (True), ``init`` (no-op),
    ``device_count``, ``current_device``, ``set_device``, ``device`` (context manager),
    ``synchronize``, ``get_device_name``, ``mem_get_info`` (host memory), ``empty_cache``,
    ``manual_seed``/``manual_seed_all``, ``Stream``, ``Event``, ``current_stream``,
    ``default_stream``, ``stream``, and CUDA graphs: ``CUDAGraph``, ``graph``,
    ``graph_pool_handle``, ``is_current_stream_capturing`` (see :mod:`._graphs`: capture
    records the aten ops, ``replay`` re-runs them in place).

    Device arguments: a ``"cuda"``/``"cuda:N"`` string or a CUDA ``torch.device`` becomes the
    CPU (``N`` is checked against ``NPU_PLATFORM_EMULATE_DEVICES``) in ``Tensor.cuda``,
    ``Module.cuda``, ``Tensor.to``, ``Tensor.new_empty``/``new_zeros``/``new_ones``/
    ``new_full``/``new_tensor``, ``Module.to``/``to_empty``, ``torch.load(map_location=)``
    and the ``device=`` keyword of the factories in :data:`FACTORIES`. A bare integer in
    ``.to(0)``/``.cuda(0)`` is a CUDA index, as in torch.

    Not redirected: ``torch.cuda.is_available()`` stays False (there is no CUDA; Triton and
    vLLM probe it and would take GPU-only paths), ``torch.device("cuda")`` itself stays a
    CUDA-typed device object (every API above accepts it; replacing the C type would break
    pickling), ``Tensor.is_cuda`` and
    ``tensor.device.type`` answer for the CPU, ``torch.Generator(device="cuda")``, and any
    other ``torch.cuda`` function (it fails as on a CPU-only torch).
"""

from __future__ import annotations

import contextlib
import functools
import threading
from collections.abc import Callable, Iterator
from typing import Any

from npu_platform.detect import Target

MARK = "__npu_platform_patched__"

#: torch functions whose ``device=`` keyword is redirected in emulation.
FACTORIES = (
    "arange",
    "as_tensor",
    "empty",
    "empty_like",
    "empty_strided",
    "eye",
    "full",
    "full_like",
    "linspace",
    "logspace",
    "ones",
    "ones_like",
    "rand",
    "rand_like",
    "randint",
    "randint_like",
    "randn",
    "randn_like",
    "randperm",
    "range",
    "tensor",
    "zeros",
    "zeros_like",
)
TENSOR_DEVICE_KW = ("new_empty", "new_zeros", "new_ones", "new_full", "new_tensor")

_lock = threading.Lock()
_applied: str | None = None


def apply(target: Target) -> str:
    """Apply the redirection for ``target`` once per process; returns what was done."""
    global _applied
    with _lock:
        if _applied is None:
            _applied = _apply_real() if target is Target.REAL else _apply_emulated()
        return _applied


# ---------------------------------------------------------------------------- real NPU


def _apply_real() -> str:
    import torch
    import torch_npu  # noqa: F401  (registers torch.npu)
    import torch_npu.contrib.transfer_to_npu  # noqa: F401  (patches torch on import)

    npu = torch.npu
    if hasattr(npu, "NPUGraph"):
        torch.cuda.CUDAGraph = npu.NPUGraph  # type: ignore[attr-defined,misc]

        def graph(
            cuda_graph: Any,
            pool: Any = None,
            stream: Any = None,
            capture_error_mode: str = "global",
            **kwargs: Any,
        ) -> Any:
            return npu.graph(
                cuda_graph,
                pool=pool,
                stream=stream,
                capture_error_mode=capture_error_mode,
                **kwargs,
            )

        torch.cuda.graph = graph  # type: ignore[assignment]
    return "torch_npu.contrib.transfer_to_npu, plus torch.cuda.CUDAGraph/graph on NPU graphs"


# ---------------------------------------------------------------------------- emulation


def _is_cuda_spec(value: Any) -> bool:
    import torch

    if isinstance(value, str):
        return value.strip().lower().startswith("cuda")
    return isinstance(value, torch.device) and value.type == "cuda"


def _cuda_index(value: Any) -> int | None:
    """The index of a CUDA device spec (None: the current device)."""
    import torch

    if isinstance(value, torch.device):
        return value.index
    if isinstance(value, str):
        _, _, number = value.strip().partition(":")
        return int(number) if number else None
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise TypeError(f"not a CUDA device: {value!r}")


def emulated_device(value: Any) -> Any:
    """The torch device standing in for CUDA device spec ``value`` (checks the index)."""
    from npu_platform import device

    return device.torch_device(_cuda_index(value))


def _convert(value: Any, *, ints: bool = False) -> Any:
    if _is_cuda_spec(value) or (ints and isinstance(value, int) and not isinstance(value, bool)):
        return emulated_device(value)
    return value


def _redirect_kw(fn: Callable[..., Any], names: tuple[str, ...] = ("device",)) -> Any:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        for name in names:
            if name in kwargs:
                kwargs[name] = _convert(kwargs[name])
        return fn(*args, **kwargs)

    setattr(wrapper, MARK, True)
    return wrapper


def _redirect_to(fn: Callable[..., Any]) -> Any:
    """``Tensor.to`` / ``Module.to``: the first positional and ``device=`` may be CUDA."""

    @functools.wraps(fn)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        if args:
            args = (_convert(args[0], ints=True), *args[1:])
        if "device" in kwargs:
            kwargs["device"] = _convert(kwargs["device"], ints=True)
        return fn(self, *args, **kwargs)

    setattr(wrapper, MARK, True)
    return wrapper


def _load_wrapper(fn: Callable[..., Any]) -> Any:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if len(args) > 1:
            args = (args[0], _convert(args[1]), *args[2:])
        if "map_location" in kwargs:
            kwargs["map_location"] = _convert(kwargs["map_location"])
        return fn(*args, **kwargs)

    setattr(wrapper, MARK, True)
    return wrapper


def _set(owner: Any, name: str, make: Callable[[Any], Any]) -> None:
    current = getattr(owner, name, None)
    if current is not None and getattr(current, MARK, False):
        return
    setattr(owner, name, make(current))


class _CudaDevice:
    """``torch.cuda.device(i)``: select device ``i`` inside the block."""

    def __init__(self, device: Any) -> None:
        self.index = _cuda_index(device) if device is not None else None
        self._previous: int | None = None

    def __enter__(self) -> _CudaDevice:
        from npu_platform import device

        if self.index is not None and self.index >= 0:
            self._previous = device.current_device()
            device.set_device(self.index)
        return self

    def __exit__(self, *exc: object) -> None:
        from npu_platform import device

        if self._previous is not None:
            device.set_device(self._previous)


def _emulated_cuda_functions() -> dict[str, Any]:
    from npu_platform import device
    from npu_platform.device.emulated import EmulatedEvent, EmulatedStream

    from . import _graphs

    def index_or_none(value: Any) -> int | None:
        if value is None:
            return None
        index = _cuda_index(value)
        return None if index is None or index < 0 else index

    def set_device(value: Any) -> None:
        index = index_or_none(value)
        if index is not None:  # torch ignores negative indices and index-less devices
            device.set_device(index)

    def synchronize(value: Any = None) -> None:
        device.synchronize(index_or_none(value))

    def get_device_name(value: Any = None) -> str:
        device.torch_device(index_or_none(value))  # checks the index
        return "Emulated Ascend NPU (CPU)"

    def mem_get_info(value: Any = None) -> tuple[int, int]:
        return device.mem_get_info(index_or_none(value))

    def current_stream(value: Any = None) -> Any:
        return device.current_stream(index_or_none(value))

    @contextlib.contextmanager
    def stream(s: Any) -> Iterator[Any]:
        with device.stream(s):
            yield s

    class Stream(EmulatedStream):
        def __init__(self, device: Any = None, priority: int = 0, **kwargs: Any) -> None:
            super().__init__(index_or_none(device), priority, **kwargs)

    return {
        # is_available() stays torch's own (False): there is no CUDA, and libraries that
        # probe it (Triton's driver, vLLM) would take GPU-only paths. On Ascend,
        # transfer_to_npu answers True but also reports Triton as absent.
        "is_initialized": lambda: True,
        "init": lambda: None,
        "device_count": device.device_count,
        "current_device": device.current_device,
        "set_device": set_device,
        "device": _CudaDevice,
        "synchronize": synchronize,
        "get_device_name": get_device_name,
        "mem_get_info": mem_get_info,
        "empty_cache": device.empty_cache,
        "manual_seed": device.manual_seed_all,
        "manual_seed_all": device.manual_seed_all,
        "Stream": Stream,
        "Event": EmulatedEvent,
        "current_stream": current_stream,
        "default_stream": current_stream,
        "stream": stream,
        "CUDAGraph": _graphs.EmulatedCUDAGraph,
        "graph": _graphs.graph,
        "graph_pool_handle": _graphs.graph_pool_handle,
        "is_current_stream_capturing": _graphs.is_current_stream_capturing,
    }


def _tensor_cuda(self: Any, device: Any = None, non_blocking: bool = False, **kwargs: Any) -> Any:
    target = emulated_device(device if device is not None else "cuda")
    return self.to(target, non_blocking=non_blocking, **kwargs)


def _module_cuda(self: Any, device: Any = None) -> Any:
    return self.to(emulated_device(device if device is not None else "cuda"))


def _apply_emulated() -> str:
    import torch

    for name, value in _emulated_cuda_functions().items():
        setattr(torch.cuda, name, value)
    torch.Tensor.cuda = _tensor_cuda  # type: ignore[method-assign]
    torch.nn.Module.cuda = _module_cuda  # type: ignore[method-assign]
    _set(torch.Tensor, "to", _redirect_to)
    _set(torch.nn.Module, "to", _redirect_to)
    _set(torch.nn.Module, "to_empty", _redirect_kw)
    for name in TENSOR_DEVICE_KW:
        _set(torch.Tensor, name, _redirect_kw)
    # ``with torch.device("meta"):`` (and set_default_device) recognise factory calls by
    # identity against a set torch builds, and caches, on first use from the ``torch.*``
    # names. Build it now, from torch's own functions: built after the wrapping it would hold
    # the wrappers, the builtins they call would not match, and models meant to be created
    # on the meta device (transformers' from_pretrained) would get uninitialised CPU buffers.
    from torch.utils._device import _device_constructors

    _device_constructors()
    for name in FACTORIES:
        if hasattr(torch, name):
            _set(torch, name, _redirect_kw)
    _set(torch, "load", _load_wrapper)
    return (
        "emulated NPU: torch.cuda device/stream/graph functions, .cuda(), and 'cuda' device "
        "arguments of .to(), new_*(), torch.load and the tensor factories go to the CPU"
    )
