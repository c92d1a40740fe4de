"""``torch.compile`` on emulated ``npu`` tensors: dynamo captures, the graph runs op by op.

torch_npu wraps torch's inductor entry (``torch._TorchCompileInductorWrapper``): creating
the wrapper (``torch.compile(...)`` with the default backend) registers torch_npu's dynamo
device interface for ``npu``, and compiling a graph sets up its inductor backend for ``npu``,
whose kernels triton-ascend builds. The emulated package keeps the wrapper and the device
interface; it has no kernel compiler, so a graph that reads or makes ``npu`` tensors runs as
dynamo captured it, op by op (each op an emulated kernel), as dynamo's ``eager`` backend runs
graphs. Dynamo itself (tracing, guards, recompilation on new shapes, graph breaks) works as
on hardware. Graphs of CPU tensors go to inductor as without the emulation. Nothing is
compiled for ``npu`` graphs, so ``mode="reduce-overhead"`` captures no graphs either.
"""

from __future__ import annotations

import functools
import threading

import torch

_lock = threading.Lock()
_dynamo_ready = False


def _interface_class():
    from torch._dynamo.device_interface import DeviceInterface

    from torch_npu import npu

    class NpuInterface(DeviceInterface):
        """Dynamo's view of the emulated ``npu`` device (``torch.npu``)."""

        device = torch.device
        Event = npu.Event
        Stream = npu.Stream

        class Worker:
            @staticmethod
            def set_device(device: int) -> None:
                npu.set_device(device)

            @staticmethod
            def current_device() -> int:
                return npu.current_device()

            @staticmethod
            def get_device_properties(device=None):
                return npu.get_device_properties(device)

        current_device = staticmethod(npu.current_device)
        set_device = staticmethod(npu.set_device)
        device_count = staticmethod(npu.device_count)
        stream = staticmethod(npu.stream)
        current_stream = staticmethod(npu.current_stream)
        set_stream = staticmethod(npu.set_stream)
        synchronize = staticmethod(npu.synchronize)
        get_device_properties = staticmethod(Worker.get_device_properties)

        @staticmethod
        def is_available() -> bool:
            return npu.device_count() > 0

        @staticmethod
        def get_raw_stream(device_idx: int) -> int:
            return 0  # execution is synchronous: every kernel runs on the default stream

        @staticmethod
        def get_compute_capability(device=None) -> str:
            return npu.get_device_name(device)  # torch_npu answers with the chip's name

        @staticmethod
        def is_bf16_supported(including_emulation: bool = False) -> bool:
            return True

    return NpuInterface


def setup_dynamo() -> None:
    """Register the ``npu`` device interface with dynamo (once per process)."""
    global _dynamo_ready
    with _lock:
        if _dynamo_ready:
            return
        from torch._dynamo.device_interface import register_interface_for_device

        from torch_npu import npu

        interface = _interface_class()
        register_interface_for_device("npu", interface)
        for index in range(npu.device_count()):
            register_interface_for_device(f"npu:{index}", interface)
        _dynamo_ready = True


def _on_npu(value) -> bool:
    return isinstance(value, torch.Tensor) and value.device.type == "npu"


def graph_uses_npu(model_, inputs_) -> bool:
    """Whether a graph dynamo hands to inductor reads or makes ``npu`` tensors."""
    if any(_on_npu(value) for value in inputs_):
        return True
    for node in getattr(getattr(model_, "graph", None), "nodes", ()):
        value = node.meta.get("example_value", node.meta.get("val"))
        values = value if isinstance(value, (list, tuple)) else (value,)
        if any(_on_npu(item) for item in values):
            return True
    return False


def install() -> None:
    """Wrap ``torch._TorchCompileInductorWrapper`` as torch_npu does (idempotent)."""
    wrapper = torch._TorchCompileInductorWrapper
    if getattr(wrapper, "_npu_emulated", False):
        return
    original_init = wrapper.__init__
    original_call = wrapper.__call__

    @functools.wraps(original_init)
    def __init__(self, *args, **kwargs):
        original_init(self, *args, **kwargs)
        setup_dynamo()

    @functools.wraps(original_call)
    def __call__(self, model_, inputs_):
        if graph_uses_npu(model_, inputs_):
            # No NPU kernel compiler here: the graph dynamo captured runs op by op, each op
            # the emulated device's kernel, as dynamo's "eager" backend runs it.
            return model_.forward
        return original_call(self, model_, inputs_)

    wrapper.__init__ = __init__
    wrapper.__call__ = __call__
    wrapper._npu_emulated = True
