"""``torch_npu.contrib.transfer_to_npu`` on the emulated NPU: run CUDA code on the NPU.

Importing it does what torch_npu 2.13.0's module does, with the same module-level names:

* ``torch.cuda`` answers with ``torch.npu``: every name of ``torch_npu.npu.__all__`` is copied
  onto ``torch.cuda`` (``is_available`` -> True, ``device_count``, ``set_device``,
  ``synchronize``, ``Stream``/``Event``, ``get_device_properties``, memory statistics,
  RNG state, ``empty_cache``, ``ipc_collect``, ...), and likewise ``torch.cuda.amp`` and
  ``torch.cuda.random``; ``torch.cuda.CUDAGraph`` is ``torch.npu.NPUGraph``;
* ``"cuda"``/``"cuda:N"`` (and ``torch.device("cuda", N)``) device arguments are rewritten to
  ``npu`` in torch's factory functions (:data:`torch_fn_white_list`, ``torch.load``'s
  ``map_location`` included), ``Tensor.to``/``new_*``/``pin_memory``, ``Module.to``/
  ``to_empty`` (where a bare int also means an npu index), ``torch.Generator``,
  ``torch.Event``, ``torch.UntypedStorage``, autocast, DDP/FSDP/DeviceMesh/pipelining and
  ``torch.utils._device.DeviceContext``; ``Tensor.cuda``/``Module.cuda`` are their ``npu``
  twins and ``Tensor.is_cuda`` is ``is_npu``;
* ``torch.distributed``: ``nccl`` becomes ``hccl`` (and ``cuda`` ``npu``) in
  ``init_process_group`` and new groups, ``is_nccl_available`` is ``is_hccl_available``,
  ``ProcessGroupNCCL`` is ``ProcessGroupHCCL``, ``cuda`` leaves the default device-backend map;
* ``torch.jit.script``/``script_method`` return their argument (disabled, with a
  ``RuntimeWarning``), Triton is reported absent to dynamo/inductor, inductor's GPU type is
  ``npu`` and ``torch._utils._get_available_device_type()`` answers ``npu``;
* some transformers/trl/peft/accelerate functions see the original
  ``torch.cuda.is_available`` while they run (the library list torch_npu ships in
  ``apis_config.json``, here in :data:`_LIBRARY_APIS`).

One deliberate difference: ``torch.cuda.get_device_capability()`` answers ``(0, 0)`` where
``torch.npu.get_device_capability()`` answers None (``TORCH_NPU_DEVICE_CAPABILITY`` unset),
because dynamo and inductor compare it with tuples (``>= (9, 0)``) once ``torch.cuda`` says it
is available, and ``torch.compile`` would otherwise fail.

Where the emulated torch_npu lacks a piece the real one patches in (``torch_npu.profiler``,
``torch_npu.npu.amp``, ``torch.npu.FloatTensor``, memory-history recording), that patch is
skipped, except ``torch.cuda.amp``, which gets a minimal npu autocast/GradScaler.
"""

import collections
import functools
import importlib
import importlib.metadata
import json
import logging as logger
import os
import sys as _sys
import types as _types
import warnings
from collections.abc import Callable
from functools import wraps
from typing import Optional, cast

import torch
from torch._utils import _get_device_module
from torch.autograd.profiler_util import Kernel
from torch.nn.parameter import UninitializedTensorMixin
from torch.utils import cpp_extension
from torch.utils._device import _device_constructors
from torch.utils._triton import has_triton  # noqa: F401  (kept as in the real module)

import torch_npu

try:
    from torch_npu.utils import _dynamo
except ImportError:  # the emulated torch_npu has no torch_npu.utils: jit.script stays off
    _dynamo = _types.SimpleNamespace(use_jit_script=False)

from packaging.version import Version as _Version  # a dependency of npu_platform

_device_constructors()

warnings.filterwarnings(action="once")

__all__ = []

torch_fn_white_list = [
    "logspace",
    "randint",
    "hann_window",
    "rand",
    "full_like",
    "ones_like",
    "rand_like",
    "randperm",
    "arange",
    "frombuffer",
    "normal",
    "_empty_per_channel_affine_quantized",
    "empty_strided",
    "empty_like",
    "scalar_tensor",
    "tril_indices",
    "bartlett_window",
    "ones",
    "sparse_coo_tensor",
    "randn",
    "kaiser_window",
    "tensor",
    "triu_indices",
    "as_tensor",
    "zeros",
    "randint_like",
    "full",
    "eye",
    "_sparse_csr_tensor_unsafe",
    "empty",
    "_sparse_coo_tensor_unsafe",
    "blackman_window",
    "zeros_like",
    "range",
    "sparse_csr_tensor",
    "randn_like",
    "from_file",
    "_cudnn_init_dropout_state",
    "_empty_affine_quantized",
    "linspace",
    "hamming_window",
    "empty_quantized",
    "_pin_memory",
    "load",
    "set_default_device",
    "get_device_module",
    "sparse_compressed_tensor",
]
torch_tensor_fn_white_list = [
    "new_empty",
    "new_empty_strided",
    "new_full",
    "new_ones",
    "new_tensor",
    "new_zeros",
    "to",
    "pin_memory",
]
torch_module_fn_white_list = ["to", "to_empty"]
torch_cuda_fn_white_list = [
    "get_device_properties",
    "get_device_name",
    "get_device_capability",
    "list_gpu_processes",
    "set_device",
    "synchronize",
    "mem_get_info",
    "memory_stats",
    "memory_summary",
    "memory_allocated",
    "max_memory_allocated",
    "reset_max_memory_allocated",
    "memory_reserved",
    "max_memory_reserved",
    "reset_max_memory_cached",
    "reset_peak_memory_stats",
    "default_stream",
    "can_device_access_peer",
    "current_stream",
    "utilization",
    "set_per_process_memory_fraction",
    "caching_allocator_alloc",
    "get_rng_state",
    "set_rng_state",
]
torch_distributed_fn_white_list = ["__init__"]
device_kwargs_list = ["device", "device_type", "map_location", "device_id"]
is_available = torch.cuda.is_available
cur_path = os.path.dirname(os.path.realpath(__file__))
config_path = os.path.join(cur_path, "apis_config.json")

# The library functions torch_npu's apis_config.json lists: while they run,
# torch.cuda.is_available is the original one (they probe for real CUDA).
_LIBRARY_APIS = {
    "transformers": {
        "version": "4.32.0",
        "apis": {
            "transformers.training_args.TrainingArguments.__post_init__": "method",
            "transformers.trainer.Trainer._load_rng_state": "method",
            "transformers.trainer.Trainer._save_rng_state": "method",
            "transformers.trainer_utils.TrainerMemoryTracker.start": "method",
            "transformers.utils.import_utils.is_torch_cuda_available": "function",
            "transformers.utils.import_utils.is_mamba_ssm_available": "function",
            "transformers.utils.import_utils.is_causal_conv1d_available": "function",
            "transformers.utils.import_utils.is_torch_bf16_gpu_available": "function",
            "transformers.utils.import_utils.is_torch_tf32_available": "function",
            "transformers.utils.import_utils.is_bitsandbytes_available": "function",
            "transformers.utils.import_utils.is_flash_attn_2_available": "function",
        },
    },
    "trl": {
        "version": "0.7.1",
        "apis": {
            "trl.import_utils.is_bitsandbytes_available": "function",
            "trl.trainer.utils.get_kbit_device_map": "function",
        },
    },
    "peft": {"version": "0.5.0", "apis": {"peft.utils.other.infer_device": "function"}},
    "accelerate": {
        "version": "0.22.0",
        "apis": {
            "accelerate.commands.env.env_command": "function",
            "accelerate.launchers.notebook_launcher": "function",
            "accelerate.commands.config.default.write_basic_config": "function",
            "accelerate.utils.environment.override_numa_affinity": "function",
            "accelerate.utils.modeling.get_max_memory": "function",
            "accelerate.utils.megatron_lm.initialize": "function",
            "accelerate.utils.bnb.load_and_quantize_model": "function",
            "accelerate.utils.bnb.get_quantized_model_device_map": "function",
            "accelerate.utils.imports.is_cuda_available": "function",
            "accelerate.test_utils.scripts.test_script.training_check": "function",
            "accelerate.test_utils.scripts.test_cli.main": "function",
            "accelerate.test_utils.scripts.external_deps.test_peak_memory_usage."
            "TorchTracemalloc.__enter__": "method",
            "accelerate.test_utils.scripts.external_deps.test_peak_memory_usage."
            "TorchTracemalloc.__exit__": "method",
            "accelerate.state.PartialState._prepare_backend": "method",
        },
    },
}


# --------------------------------------------------------------------------- device rewriting


class _TorchTypeProxyMeta(type(torch.Generator)):
    # isinstance(x, torch.Generator / torch.Event) stays true for objects of the base type
    # once torch.Generator / torch.Event are rebound to the proxies below.
    def __instancecheck__(self, instance):
        return super().__instancecheck__(instance) or isinstance(instance, self.__mro__[1])


class _GeneratorProxy(torch.Generator, metaclass=_TorchTypeProxyMeta):
    def __new__(cls, device="cpu"):
        device = _replace_cuda_to_npu_in_list([device], None)[0]
        return super().__new__(cls, device)


class _EventProxy(torch.Event, metaclass=_TorchTypeProxyMeta):
    def __new__(cls, *args, **kwargs):
        if args:
            args = _replace_cuda_to_npu_in_list(list(args), None)
        if kwargs and kwargs.get("device") is not None:
            _replace_cuda_to_npu_in_kwargs(kwargs, "device", kwargs["device"])
        # torch.Stream.record_event rejects subclass instances: hand out a plain torch.Event.
        return super().__new__(_EventProxy.__mro__[1], *args, **kwargs)


def _npu_device_of(device):
    """``torch.device('npu'[, index])`` for a CUDA ``torch.device``."""
    return torch.device("npu" if device.index is None else f"npu:{device.index}")


@torch._dynamo.disable
def _replace_cuda_to_npu_in_kwargs(kwargs, device_arg, device):
    if type(device) is str and "cuda" in device:
        kwargs[device_arg] = device.replace("cuda", "npu")
    elif type(device) is torch.device and "cuda" in device.type:
        kwargs[device_arg] = _npu_device_of(device)
    elif type(device) is int:
        kwargs[device_arg] = f"npu:{device}"
    elif type(device) is dict:
        kwargs[device_arg] = _replace_cuda_to_npu_in_dict(device)


@torch._dynamo.disable
def _replace_cuda_to_npu_in_list(args_list, replace_int):
    for i, arg in enumerate(args_list):
        if isinstance(arg, str) and "cuda" in arg:
            args_list[i] = arg.replace("cuda", "npu")
        elif isinstance(arg, torch.device) and "cuda" in arg.type:
            args_list[i] = _npu_device_of(arg)
        elif replace_int and isinstance(arg, int) and not isinstance(arg, bool):
            args_list[i] = f"npu:{arg}"
        elif isinstance(arg, dict):
            args_list[i] = _replace_cuda_to_npu_in_dict(arg)
    return args_list


@torch._dynamo.disable
def _replace_cuda_to_npu_in_dict(device_dict):
    def swap(item):
        return item.replace("cuda", "npu") if isinstance(item, str) else item

    return {swap(key): swap(value) for key, value in device_dict.items()}


def _rewrite_device_ids(kwargs, replace_int):
    ids = kwargs.get("device_ids")
    if isinstance(ids, list):
        kwargs["device_ids"] = _replace_cuda_to_npu_in_list(ids, replace_int)
    elif isinstance(ids, tuple):
        kwargs["device_ids"] = tuple(_replace_cuda_to_npu_in_list(list(ids), replace_int))


def _wrapper_cuda(fn):
    @wraps(fn)
    def decorated(*args, **kwargs):
        replace_int = fn.__name__ in ("to", "to_empty")
        if args:
            args = _replace_cuda_to_npu_in_list(list(args), replace_int)
        if kwargs:
            for name in device_kwargs_list:
                device = kwargs.get(name)
                if device is not None:
                    _replace_cuda_to_npu_in_kwargs(kwargs, name, device)
            _rewrite_device_ids(kwargs, replace_int)
        return fn(*args, **kwargs)

    return decorated


def _device_wrapper(enter_fn, white_list):
    for name in white_list:
        fn = getattr(enter_fn, name, None)
        if fn:
            setattr(enter_fn, name, _wrapper_cuda(fn))


def _patch_is_autocast_enabled(fn):
    @wraps(fn)
    @torch._dynamo.disable
    def decorated(device_type=None):
        if device_type is None or (isinstance(device_type, str) and "cuda" in device_type):
            device_type = device_type.replace("cuda", "npu") if device_type else "npu"
        return fn(device_type)

    return decorated


def _patch_set_autocast_enabled(fn):
    @wraps(fn)
    @torch._dynamo.disable
    def decorated(*args, **kwargs):
        if len(args) == 1 and "device_type" not in kwargs:
            args = ("npu", args[0])  # the old set_autocast_enabled(enabled) form
        elif "enabled" in kwargs and "device_type" not in kwargs:
            kwargs["device_type"] = "npu"
        elif args and isinstance(args[0], str) and "cuda" in args[0]:
            args = (args[0].replace("cuda", "npu"), *args[1:])
        elif isinstance(kwargs.get("device_type"), str) and "cuda" in kwargs["device_type"]:
            kwargs["device_type"] = kwargs["device_type"].replace("cuda", "npu")
        return fn(*args, **kwargs)

    return decorated


def _wrapper_hccl(fn):
    def to_hccl(text):
        return text.replace("nccl", "hccl").replace("cuda", "npu")

    @wraps(fn)
    def decorated(*args, **kwargs):
        if args:
            args = [to_hccl(a) if type(a) is str else a for a in args]
        if kwargs and type(kwargs.get("backend")) is str:
            kwargs["backend"] = to_hccl(kwargs["backend"])
        return fn(*args, **kwargs)

    return decorated


def _wrapper_profiler(fn):
    @wraps(fn)
    def decorated(*args, **kwargs):
        profiler = getattr(torch_npu, "profiler", None)
        experimental = getattr(profiler, "_ExperimentalConfig", None)
        if "experimental_config" in kwargs and (
            experimental is None or type(kwargs["experimental_config"]) is not experimental
        ):
            logger.warning(
                "The parameter experimental_config of torch.profiler.profile has been removed "
                "by the tool because it can only be used with CUDA. Please manually modify the "
                "code to use an experimental_config parameter that supports NPU."
            )
            del kwargs["experimental_config"]
        return fn(*args, **kwargs)

    return decorated


def _compose_wrappers(*wrappers):
    def compose(f):
        for wrapper in wrappers:
            f = wrapper(f)
        return f

    return compose


def _patch_nametuple(nametuple):
    original_new = nametuple.__new__

    def new_nametuple__new__(cls, *args, **kwargs):
        if args:
            args = _replace_cuda_to_npu_in_list(list(args), False)
        if kwargs:
            for name in device_kwargs_list:
                device = kwargs.get(name)
                if device is not None:
                    _replace_cuda_to_npu_in_kwargs(kwargs, name, device)
            _rewrite_device_ids(kwargs, False)
        return original_new(cls, *args, **kwargs)

    nametuple.__new__ = new_nametuple__new__


# --------------------------------------------------------------------------- library APIs


def _get_function_from_string(attribute_string):
    try:
        module_path, _, attr_name = attribute_string.rpartition(".")
        return [importlib.import_module(module_path), attr_name]
    except Exception:
        return []


def _get_method_from_string(attribute_string):
    try:
        parts = attribute_string.split(".")
        owner = getattr(importlib.import_module(".".join(parts[:-2])), parts[-2])
        return [owner, parts[-1]]
    except Exception:
        return []


def _get_package_version(package_name):
    try:
        return importlib.metadata.version(package_name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _compare_versions(current_version, version):
    return _Version(current_version) >= _Version(version)


def _check_input_file_valid(file_path):
    if os.path.islink(os.path.abspath(file_path)):
        return False
    real = os.path.realpath(file_path)
    return (
        os.path.exists(real)
        and os.access(real, os.R_OK)
        and len(os.path.basename(real)) <= 200
        and os.path.getsize(real) <= 10 * 1024**2
    )


def _load_json_file(file_path):
    if not _check_input_file_valid(file_path):
        return {}
    try:
        with open(file_path) as f:
            data = json.load(f)
    except json.JSONDecodeError:
        return {}
    return data if isinstance(data, dict) else {}


def _wrapper_libraries_func(fn):
    @wraps(fn)
    def decorated(*args, **kwargs):
        patched = torch.cuda.is_available
        torch.cuda.is_available = is_available
        try:
            return fn(*args, **kwargs)
        finally:
            torch.cuda.is_available = patched

    return decorated


def _do_wrapper_libraries_func(json_dict):
    for package, spec in json_dict.items():
        current = _get_package_version(package)
        if not current:
            continue
        version, apis = spec.get("version"), spec.get("apis")
        if not (version and apis and _compare_versions(current, version)):
            continue
        for full_name, api_type in apis.items():
            found = None
            if api_type == "method":
                found = _get_method_from_string(full_name)
            elif api_type == "function":
                found = _get_function_from_string(full_name)
            if found and getattr(found[0], found[1], None):
                setattr(found[0], found[1], _wrapper_libraries_func(getattr(*found)))


# --------------------------------------------------------------------------- jit / triton


_real_jit_script = torch.jit.script
_warned_jit_fallback = False


def _jit_script(obj, *args, **kwargs):
    global _warned_jit_fallback
    if getattr(_dynamo, "use_jit_script", False):
        if not _warned_jit_fallback:
            _warned_jit_fallback = True
            warnings.warn("torch.jit.script is in use.", RuntimeWarning, stacklevel=2)
        return _real_jit_script(obj, *args, **kwargs)
    return obj


def _jit_script_method(fn):
    return fn


def _patch_jit_script():
    warnings.warn(
        "torch.jit.script and torch.jit.script_method will be disabled by transfer_to_npu, "
        "which currently does not support them. If you need to enable them, please do not use "
        "transfer_to_npu.",
        RuntimeWarning,
        stacklevel=2,
    )
    torch.jit.script = _jit_script
    torch.jit.script_method = _jit_script_method


def _patch_has_triton(**kwargs):
    return False


def _get_npu_type():
    return "npu"


def _patch_get_available_device_type():
    if torch.npu.is_available():
        return "npu"
    return None


def _patch_OverlappingCpuLoader_init_(  # noqa: N802 - torch_npu's name
    self,
    resolve_fun: Callable,
    stream: Optional[torch.Stream] = None,  # noqa: UP045 - the real signature's spelling
    inflight_threshhold: int = 1_000_000,
) -> None:
    self.resolve_fun = resolve_fun
    self.items = []
    self.inflight_threshhold = inflight_threshhold
    self.in_flight_data = 0
    self.current_items = collections.deque()
    self.idx = 0
    self.started = False
    self.device_type = stream.device_type if stream else _patch_get_available_device_type()
    self.device_module = _get_device_module(self.device_type)
    self.stream = cast(torch.cuda.Stream, stream or self.device_module.current_stream())
    if self.stream != self.device_module.current_stream():
        self.stream.wait_stream(self.device_module.current_stream())


# --------------------------------------------------------------------------- torch.cuda


def _apply_patches(patches):
    """torch_npu's monkey patching: ``torch.<dest>`` gets ``patch``.

    A module patch whose destination exists and which has ``__all__`` has each name of
    ``__all__`` copied onto the destination module (the module object stays); any other
    patch replaces the destination (missing parents are created as empty modules).
    """
    for dest, patch in patches:
        parts = dest.split(".")
        parent = torch
        for part in parts[:-1]:
            if not hasattr(parent, part):
                name = f"{parent.__name__}.{part}"
                _sys.modules[name] = _types.ModuleType(name)
                setattr(parent, part, _sys.modules[name])
            parent = getattr(parent, part)
        last = parts[-1]
        if not isinstance(patch, _types.ModuleType):
            setattr(parent, last, patch)
            continue
        if not hasattr(parent, last) or not hasattr(patch, "__all__"):
            setattr(parent, last, patch)
            _sys.modules[f"{parent.__name__}.{last}"] = patch
            continue
        target = getattr(parent, last)
        for name in patch.__all__:
            setattr(target, name, getattr(patch, name))


@functools.cache
def _npu_amp():
    """``torch_npu.npu.amp`` (a minimal npu one when the emulated torch_npu has none)."""
    amp = getattr(torch_npu.npu, "amp", None)
    if isinstance(amp, _types.ModuleType):
        return amp
    amp = _types.ModuleType("torch_npu.npu.amp")

    class autocast(torch.amp.autocast_mode.autocast):  # noqa: N801 - torch's name
        """``torch.npu.amp.autocast(...)``: ``torch.autocast("npu", ...)``."""

        def __init__(self, enabled=True, dtype=torch.float16, cache_enabled=True):
            super().__init__("npu", enabled=enabled, dtype=dtype, cache_enabled=cache_enabled)

    class GradScaler(torch.amp.GradScaler):
        def __init__(
            self,
            init_scale=2.0**16,
            growth_factor=2.0,
            backoff_factor=0.5,
            growth_interval=2000,
            enabled=True,
        ):
            super().__init__(
                "npu",
                init_scale=init_scale,
                growth_factor=growth_factor,
                backoff_factor=backoff_factor,
                growth_interval=growth_interval,
                enabled=enabled,
            )

    def custom_fwd(fwd=None, *, cast_inputs=None):
        return torch.amp.custom_fwd(fwd, device_type="npu", cast_inputs=cast_inputs)

    def custom_bwd(bwd=None):
        return torch.amp.custom_bwd(bwd, device_type="npu")

    for obj in (autocast, GradScaler, custom_fwd, custom_bwd):
        obj.__module__ = amp.__name__
    autocast_mode = _types.ModuleType("torch_npu.npu.amp.autocast_mode")
    autocast_mode.__all__ = ["autocast", "custom_fwd", "custom_bwd"]
    grad_scaler = _types.ModuleType("torch_npu.npu.amp.grad_scaler")
    grad_scaler.__all__ = ["GradScaler"]
    common = _types.ModuleType("torch_npu.npu.amp.common")
    common.__all__ = ["amp_definitely_not_available"]
    common.amp_definitely_not_available = lambda: not torch_npu.npu.is_available()
    for module in (amp, autocast_mode):
        module.autocast, module.custom_fwd, module.custom_bwd = autocast, custom_fwd, custom_bwd
    amp.GradScaler = grad_scaler.GradScaler = GradScaler
    amp.__all__ = ["autocast", "GradScaler", "custom_fwd", "custom_bwd"]
    amp.autocast_mode, amp.grad_scaler, amp.common = autocast_mode, grad_scaler, common
    return amp


def _patch_cuda():
    npu = torch_npu.npu
    amp = _npu_amp()
    patches = [["cuda", npu], ["cuda.amp", amp]]
    random = getattr(npu, "random", None)
    if isinstance(random, _types.ModuleType):
        patches.append(["cuda.random", random])
    for name in ("autocast_mode", "common", "grad_scaler"):
        module = getattr(amp, name, None)
        if isinstance(module, _types.ModuleType):
            patches.append([f"cuda.amp.{name}", module])
    _apply_patches(patches)


def _patch_profiler():
    profiler = getattr(torch_npu, "profiler", None)
    if profiler is None:
        return  # the emulated torch_npu has no profiler: torch.profiler stays torch's
    patches = []
    for dest, name in (
        ("profiler.profile", "profile"),
        ("profiler.schedule", "schedule"),
        ("profiler.tensorboard_trace_handler", "tensorboard_trace_handler"),
        ("profiler.ProfilerAction", "ProfilerAction"),
    ):
        if hasattr(profiler, name):
            patches.append([dest, getattr(profiler, name)])
    activity = getattr(profiler, "ProfilerActivity", None)
    if activity is not None:
        patches.append(["profiler.ProfilerActivity.CUDA", activity.NPU])
        patches.append(["profiler.ProfilerActivity.CPU", activity.CPU])
    _apply_patches(patches)


def _warning_fn(msg, rank0=True):
    is_distributed = (
        torch.distributed.is_available()
        and torch.distributed.is_initialized()
        and torch.distributed.get_world_size() > 1
    )
    env_rank = os.getenv("RANK", None)
    if rank0 and is_distributed:
        if torch.distributed.get_rank() == 0:
            warnings.warn(msg, ImportWarning, stacklevel=2)
    elif rank0 and env_rank:
        if env_rank == "0":
            warnings.warn(msg, ImportWarning, stacklevel=2)
    else:
        warnings.warn(msg, ImportWarning, stacklevel=2)


def _replace_to_method_in_allowed_methods():
    for i, method in enumerate(UninitializedTensorMixin._allowed_methods):
        if method.__name__ == "to":
            UninitializedTensorMixin._allowed_methods[i] = torch.Tensor.to
            break


def _del_nccl_device_backend_map():
    if hasattr(torch.distributed.Backend, "default_device_backend_map"):
        torch.distributed.Backend.default_device_backend_map.pop("cuda", None)


# --------------------------------------------------------------------------- the patching


def _patch_get_device_capability(fn):
    """torch.npu answers None without ``TORCH_NPU_DEVICE_CAPABILITY``; CUDA callers (dynamo,
    inductor: ``get_device_capability() >= (9, 0)``) need a tuple, so None becomes (0, 0)."""

    @wraps(fn)
    def decorated(device=None):
        capability = fn(device)
        return (0, 0) if capability is None else capability

    return decorated


def _patch_cuda_module():
    _patch_cuda()
    _device_wrapper(torch.cuda, torch_cuda_fn_white_list)
    torch.cuda.get_device_capability = _patch_get_device_capability(
        torch.cuda.get_device_capability
    )
    torch.cuda.device.__init__ = _wrapper_cuda(torch.cuda.device.__init__)
    torch.cuda.amp.autocast_mode = _npu_amp().autocast_mode

    def _update_cuda_default_generators():
        generators = getattr(torch_npu.npu, "default_generators", None)
        if generators is not None:
            torch.cuda.default_generators = generators

    lazy_call = getattr(torch_npu.npu, "_lazy_call", None)
    if lazy_call is not None:
        lazy_call(_update_cuda_default_generators)
    else:
        _update_cuda_default_generators()

    _device_wrapper(torch.cuda.random, ["get_rng_state", "set_rng_state"])

    memory = getattr(torch.npu, "memory", None)
    if memory is not None:
        _device_wrapper(memory, ["_record_memory_history", "_snapshot"])
        for name in ("_record_memory_history", "_snapshot", "_dump_snapshot"):
            if hasattr(memory, name):
                setattr(torch.cuda.memory, name, getattr(memory, name))
    host_empty_cache = getattr(getattr(torch_npu, "_C", None), "_npu_hostEmptyCache", None)
    if host_empty_cache is None:
        host_empty_cache = getattr(torch.npu, "host_empty_cache", None)
    if host_empty_cache is not None:
        torch._C._host_emptyCache = host_empty_cache
    torch.cuda.CUDAGraph = torch.npu.NPUGraph


def _patch_torch_functions():
    profiler = getattr(torch_npu, "profiler", None)
    kineto = getattr(profiler, "_KinetoProfile", None)
    if kineto is not None:
        _device_wrapper(kineto, ["export_memory_timeline"])
    _patch_profiler()
    torch.profiler.profile = _wrapper_profiler(torch.profiler.profile)

    _device_wrapper(torch, torch_fn_white_list)
    torch.UntypedStorage.__new__ = _wrapper_cuda(torch.UntypedStorage.__new__)
    torch.storage.TypedStorage.is_cuda = torch.storage.TypedStorage.is_npu
    torch.Generator = _GeneratorProxy
    torch.Event = _EventProxy
    autocast = torch.amp.autocast_mode.autocast
    autocast.__init__ = _wrapper_cuda(autocast.__init__)

    torch.is_autocast_enabled = _patch_is_autocast_enabled(torch.is_autocast_enabled)
    torch.set_autocast_enabled = _patch_set_autocast_enabled(torch.set_autocast_enabled)
    torch.get_autocast_dtype = _wrapper_cuda(torch.get_autocast_dtype)
    torch.set_autocast_dtype = _wrapper_cuda(torch.set_autocast_dtype)
    get_dtype = getattr(torch_npu.npu, "get_autocast_dtype", None)
    set_dtype = getattr(torch_npu.npu, "set_autocast_dtype", None)
    torch.get_autocast_gpu_dtype = get_dtype or functools.partial(torch.get_autocast_dtype, "npu")
    torch.set_autocast_gpu_dtype = set_dtype or functools.partial(torch.set_autocast_dtype, "npu")
    torch.amp.custom_fwd = _wrapper_cuda(torch.amp.custom_fwd)
    torch.amp.custom_bwd = _wrapper_cuda(torch.amp.custom_bwd)

    _device_wrapper(torch.Tensor, torch_tensor_fn_white_list)
    torch.Tensor.cuda = torch.Tensor.npu
    torch.Tensor.is_cuda = torch.Tensor.is_npu
    float_tensor = getattr(torch.npu, "FloatTensor", None)
    if float_tensor is not None:
        torch.cuda.DoubleTensor = float_tensor

    _device_wrapper(torch.nn.Module, torch_module_fn_white_list)
    torch.nn.Module.cuda = torch.nn.Module.npu

    _device_wrapper(torch.fft, ["fftfreq", "rfftfreq"])


def _patch_distributed():
    dist = torch.distributed
    dist.init_process_group = _compose_wrappers(_wrapper_cuda, _wrapper_hccl)(
        dist.init_process_group
    )
    is_hccl = getattr(dist, "is_hccl_available", None)
    if is_hccl is None:

        def is_hccl():
            return "hccl" in dist.Backend.backend_list

        dist.is_hccl_available = is_hccl
    dist.is_nccl_available = is_hccl
    dist.ProcessGroup._get_backend = _wrapper_cuda(dist.ProcessGroup._get_backend)
    from torch_npu._C._distributed_c10d import ProcessGroupHCCL

    if "_get_backend" in vars(ProcessGroupHCCL):  # the emulated group defines its own
        ProcessGroupHCCL._get_backend = _wrapper_cuda(vars(ProcessGroupHCCL)["_get_backend"])
    fsdp = dist.fsdp.fully_sharded_data_parallel.FullyShardedDataParallel
    fsdp.__init__ = _wrapper_cuda(fsdp.__init__)
    if hasattr(dist, "init_device_mesh"):
        _del_nccl_device_backend_map()
        dist.device_mesh.init_device_mesh = _wrapper_cuda(dist.device_mesh.init_device_mesh)
    c10d = dist.distributed_c10d
    c10d._new_group_with_tag = _wrapper_hccl(c10d._new_group_with_tag)
    mesh = dist.device_mesh.DeviceMesh
    mesh.__init__ = _wrapper_cuda(mesh.__init__)
    dist.ProcessGroupNCCL = ProcessGroupHCCL
    c10d.ProcessGroupNCCL = ProcessGroupHCCL

    if hasattr(dist, "pipelining"):
        stage = dist.pipelining.stage
        stage.PipelineStage.__init__ = _wrapper_cuda(stage.PipelineStage.__init__)
        _device_wrapper(stage, ["build_stage"])

    ddp = torch.nn.parallel.DistributedDataParallel
    _device_wrapper(ddp, torch_distributed_fn_white_list)


def _patch_compilers():
    trace_rules = torch._dynamo.trace_rules
    if hasattr(trace_rules, "_disallowed_callable_ids"):
        trace_rules._disallowed_callable_ids.function_ids = None

    torch.utils._triton.has_triton = _patch_has_triton
    torch._dynamo.utils.has_triton = _patch_has_triton
    torch._inductor.runtime.autotune_cache.has_triton = _patch_has_triton
    torch._inductor.compile_fx.has_triton = _patch_has_triton

    torch._inductor.utils.get_gpu_type = _get_npu_type
    torch._inductor.fx_passes.post_grad.get_gpu_type = _get_npu_type
    torch._inductor.fx_passes.joint_graph.get_gpu_type = _get_npu_type
    torch._inductor.autotune_process.get_gpu_type = _get_npu_type

    torch._utils._get_available_device_type = _patch_get_available_device_type


def _init():
    # Imported here, as the real module does, rather than relying on side effects.
    import torch._dynamo.trace_rules  # noqa: F401
    import torch._dynamo.utils  # noqa: F401
    import torch._inductor.autotune_process  # noqa: F401
    import torch._inductor.compile_fx  # noqa: F401
    import torch._inductor.fx_passes.joint_graph  # noqa: F401
    import torch._inductor.fx_passes.post_grad  # noqa: F401
    import torch._inductor.runtime.autotune_cache  # noqa: F401
    import torch._inductor.utils  # noqa: F401
    import torch.distributed.fsdp  # noqa: F401
    import torch.distributed.pipelining  # noqa: F401
    from torch.distributed.checkpoint import filesystem

    patched = ", ".join(
        ["torch." + n for n in torch_fn_white_list]
        + ["torch.Tensor." + n for n in torch_tensor_fn_white_list]
        + ["torch.nn.Module." + n for n in torch_module_fn_white_list]
    )
    _warning_fn(
        f"""
    *************************************************************************************************************
    The torch.Tensor.cuda and torch.nn.Module.cuda are replaced with torch.Tensor.npu and torch.nn.Module.npu now..
    The torch.cuda.DoubleTensor is replaced with torch.npu.FloatTensor cause the double type is not supported now..
    The backend in torch.distributed.init_process_group set to hccl now..
    The torch.cuda.* and torch.cuda.amp.* are replaced with torch.npu.* and torch.npu.amp.* now..
    The device parameters have been replaced with npu in the function below:
    {patched}
    *************************************************************************************************************
    """  # noqa: E501 - the banner's text
    )

    _patch_cuda_module()
    _patch_torch_functions()
    _patch_distributed()

    torch.utils._device.DeviceContext.__init__ = _wrapper_cuda(
        torch.utils._device.DeviceContext.__init__
    )
    _patch_jit_script()
    _do_wrapper_libraries_func(_load_json_file(config_path) or _LIBRARY_APIS)
    _patch_compilers()
    filesystem._OverlappingCpuLoader.__init__ = _patch_OverlappingCpuLoader_init_
    _replace_to_method_in_allowed_methods()

    torch.utils.cpp_extension = cpp_extension
    _device_wrapper(torch.utils.cpp_extension, ["include_paths"])
    _patch_nametuple(Kernel)


_init()
