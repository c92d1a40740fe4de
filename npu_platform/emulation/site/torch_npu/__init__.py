"""The emulated ``torch_npu`` 2.13.0: torch_npu's Python API over the emulated NPU.

Importable only with ``NPU_PLATFORM_EMULATE=1`` (:mod:`npu_platform.emulation.boot` puts the
folder holding this package in front of ``sys.path``). Importing it, which torch's
device-backend autoload does at the end of ``import torch``:

* installs the native ``npu`` device (:func:`npu_platform.emulation.native.install_device`)
  with ``NPU_PLATFORM_EMULATE_DEVICES`` devices (default 1, seen through
  ``ASCEND_RT_VISIBLE_DEVICES`` as on an Ascend machine) of
  ``NPU_PLATFORM_EMULATE_DEVICE_MEMORY`` bytes each (default 4 GiB);
* registers :mod:`torch_npu.npu` as ``torch.npu``;
* offers torch_npu's ops (``torch_npu.npu_rms_norm`` ...) as schema-checked CPU references
  (:data:`npu_platform.emulation.kernels.EMULATED`) and its ATB ops
  (``torch_npu._npu_paged_attention`` ..., :mod:`npu_platform.emulation.kernels.atb`),
  recorded by NPU graph capture as one node each, like torch_npu's dispatch records;
* makes ``torch.multiprocessing`` pickle ``npu`` tensors (as copies,
  :mod:`torch_npu.multiprocessing.reductions`);
* wraps torch.compile's inductor entry, as torch_npu does, so ``torch.compile`` works on
  ``npu`` tensors: dynamo captures the graph, which runs op by op on the emulated kernels
  (:mod:`torch_npu._emulated_inductor`).
"""

import os

# As torch_npu does: no device-backend autoload while this package imports torch.
ORG_AUTOLOAD = os.getenv("TORCH_DEVICE_BACKEND_AUTOLOAD", "1")
os.environ["TORCH_DEVICE_BACKEND_AUTOLOAD"] = "0"

import sys  # noqa: E402
import types  # noqa: E402

import torch  # noqa: E402

from torch_npu import _emulated  # noqa: E402
from torch_npu.version import __version__ as __version__  # noqa: E402

_emulated.install()

import torch_npu.npu  # noqa: E402

if getattr(torch, "npu", None) is not torch_npu.npu:
    torch._register_device_module("npu", torch_npu.npu)

# torch_npu registers its HCCL process-group backend when it loads.
from torch_npu._C import _distributed_c10d  # noqa: E402

_distributed_c10d.register()
# `import torch.npu.memory` must give torch_npu.npu.memory, not a second copy of the module.
for _name, _module in list(sys.modules.items()):
    if _name.startswith("torch_npu.npu."):
        sys.modules.setdefault("torch" + _name[len("torch_npu") :], _module)

# torch_npu teaches torch.multiprocessing to pickle npu tensors when it loads.
from torch_npu.multiprocessing import reductions as _reductions  # noqa: E402

_reductions._add_reductions_methods()

# torch_npu wraps torch.compile's inductor entry (its npu backend is set up lazily).
from torch_npu import _emulated_inductor  # noqa: E402

_emulated_inductor.install()


# This function is an entrypoint called by PyTorch when running 'import torch'; the import
# of this package did the work.
def _autoload():
    # Restore the switch: child processes inherit it.
    os.environ["TORCH_DEVICE_BACKEND_AUTOLOAD"] = ORG_AUTOLOAD


def _apply_patches(monkey_patches):
    """Set ``torch.<dest>`` to each patch (``[["profiler.profile", fn], ...]``).

    Missing intermediate modules are created; a module patch adds its public names to the
    destination module instead of replacing it.
    """

    def resolve(parts):
        module = torch
        for part in parts:
            if not hasattr(module, part):
                name = f"{module.__name__}.{part}"
                sys.modules[name] = types.ModuleType(name)
                setattr(module, part, sys.modules[name])
            module = getattr(module, part)
        return module

    for dest, patch in monkey_patches:
        parts = dest.split(".")
        parent = resolve(parts[:-1])
        if not isinstance(patch, types.ModuleType):
            setattr(parent, parts[-1], patch)
            continue
        target = resolve(parts)
        for name in dir(patch):
            if not name.startswith("_"):
                setattr(target, name, getattr(patch, name))


class _NPUOp:
    """One torch_npu op: ``torch_npu.npu_rms_norm`` and the like.

    Calls run the emulated implementation; inside an NPU graph capture the call is recorded
    as one node that replay runs again (see :mod:`torch_npu.npu.graphs`).
    """

    __slots__ = ("__name__", "_impl")

    def __init__(self, name, impl):
        self.__name__ = name
        self._impl = impl

    def __call__(self, *args, **kwargs):
        from torch_npu.npu import graphs

        return graphs._run_npu_op(self.__name__, self._impl, args, kwargs)

    def __getattr__(self, item):
        overload = _overload(self.__name__, item)
        if overload is not None:
            return overload
        return getattr(self._impl, item)

    def __repr__(self):
        return f"<emulated torch_npu.{self.__name__}>"


def _overload(name, overload_name):
    """``torch_npu.<name>.<overload>`` (``npu_fused_infer_attention_score.out``), or None.

    Called as torch_npu's overloads are: the out arguments by name or as ``out=[...]`` in
    schema order. Graph capture records it under the op's own name, as torch_npu's graph
    handlers key updates (``actual_seq_lengths_kv`` ...) on it.
    """
    if overload_name.startswith("_"):
        return None
    from npu_platform.emulation.kernels import EMULATED

    full = f"{name}.{overload_name}"
    if full not in EMULATED.schemas:
        return None
    schema = EMULATED.schemas.get(full)
    out_names = [arg.name for arg in schema.args if arg.type.mutable]
    op = getattr(EMULATED, name)

    def call(*args, **kwargs):
        out = kwargs.pop("out", None)
        if out is not None:
            out = list(out) if isinstance(out, (list, tuple)) else [out]
            if len(out) != len(out_names):
                raise TypeError(
                    f"torch_npu.{full}: out= takes {len(out_names)} tensors "
                    f"({', '.join(out_names)}), got {len(out)}"
                )
            kwargs.update(zip(out_names, out, strict=True))
        return op(*args, **kwargs)

    call.__name__ = full
    return _NPUOp(name, call)


def _register_op(name, impl):
    """Expose ``impl`` as ``torch_npu.<name>`` (for the emulation's other op providers)."""
    op = _NPUOp(name, impl)
    globals()[name] = op
    return op


def __getattr__(name):
    if name.startswith("__"):
        raise AttributeError(f"module 'torch_npu' has no attribute '{name}'")
    here = os.path.dirname(__file__)
    if os.path.isdir(os.path.join(here, name)) or os.path.isfile(os.path.join(here, name + ".py")):
        import importlib

        return importlib.import_module(f"torch_npu.{name}")  # a subpackage not imported yet
    from npu_platform.emulation.kernels import EMULATED

    if not EMULATED.schemas.has_op(name):
        try:
            from npu_platform.emulation.kernels import atb
        except ImportError:  # no ATB ops in this emulation
            atb = None
        if atb is not None:
            impl = atb.ATB_OPS.get(name)
            if impl is None and name.startswith("_npu_"):
                impl = atb.all_ops().get(name)
            if impl is not None:
                return _register_op(name, impl)
    impl = getattr(EMULATED, name)  # AttributeError naming the op schema when unknown
    return _register_op(name, impl)


_autoload()
