"""Options of ``torch.npu`` (torch_npu/npu/npu_config.py) on the emulated NPU.

torch_npu hands these options to CANN. The emulated NPU validates and keeps them (its
kernels are CPU references, so the options do not change results), and answers them back
where torch_npu reads them back.
"""

import warnings
from enum import IntEnum

import torch_npu
from torch_npu import _emulated

__all__ = [
    "set_option",
    "set_compile_mode",
    "set_mm_bmm_format_nd",
    "get_mm_bmm_format_nd",
    "is_jit_compile_false",
    "set_stream_limit",
    "reset_stream_limit",
    "get_stream_limit",
]

_option_map = {
    "ACL_PRECISION_MODE": ["allow_fp32_to_fp16", "must_keep_origin_dtype"],
    "ACL_OP_SELECT_IMPL_MODE": ["high_performance", "high_precision"],
    "ACL_AICORE_NUM": (lambda value: value.isdigit() and 1 <= int(value) <= 32),
    "ACL_OPTYPELIST_FOR_IMPLMODE": None,
    "ACL_OP_DEBUG_LEVEL": ["0", "1", "2", "3", "4"],
    "ACL_DEBUG_DIR": None,
    "ACL_OP_COMPILER_CACHE_MODE": ["disable", "enable", "force"],
    "ACL_OP_COMPILER_CACHE_DIR": None,
    "ACL_OP_DEBUG_OPTION": None,
}

_deprecated_option_set = {"ACL_OP_SELECT_IMPL_MODE", "ACL_OPTYPELIST_FOR_IMPLMODE"}


class _CubeMathType(IntEnum):
    KEEP_DTYPE = 0
    ALLOW_FP32_DOWN_PRECISION = 1
    USE_FP16 = 2
    USE_HF32 = 3
    FORCE_GRP_ACC_FOR_FP32 = 4
    USE_FP32_ADD = 4


def _check_compile_option(name, value) -> bool:
    rule = _option_map.get(name)
    if name not in _option_map or rule is None:
        return True
    if callable(rule):
        return rule(value)
    return value in rule


def set_option(option):
    r"""Sets NPU options (a dict of option name to value); values are checked as torch_npu does."""
    if not isinstance(option, dict):
        raise TypeError("npu option must be a dict.")
    if option.get("MM_BMM_ND_ENABLE") == "enable":
        set_mm_bmm_format_nd(True)
    elif option.get("MM_BMM_ND_ENABLE") == "disable":
        set_mm_bmm_format_nd(False)
    for option_name, option_value in option.items():
        if _check_compile_option(option_name, str(option_value)):
            option[option_name] = str(option_value)
        else:
            raise ValueError(
                f"value of {option_name} is not accepted: {option_value!r}"
                + (
                    f"; it should be one of {_option_map[option_name]}"
                    if isinstance(_option_map[option_name], list)
                    else ""
                )
            )
        if option_name in _deprecated_option_set:
            warnings.warn(
                f"{option_name} will be deprecated in a future version. The accuracy or "
                "performance may not be optimal when configuring this option. We do not "
                "recommend setting it.",
                stacklevel=2,
            )
    _emulated.set_options(option)


def set_compile_mode(jit_compile=False):
    r"""Chooses online compilation of operators (``jit_compile=True``) or binary kernels."""
    if torch_npu.npu.is_initialized():
        torch_npu.npu.synchronize()
    _emulated.set_options({"jitCompile": "enable" if jit_compile else "disable"})


_MM_BMM_ND_ENABLE = True


def set_mm_bmm_format_nd(is_nd=True):
    r"""Whether mm and bmm compute in ND format (the default)."""
    global _MM_BMM_ND_ENABLE
    _MM_BMM_ND_ENABLE = bool(is_nd)


def get_mm_bmm_format_nd():
    return _MM_BMM_ND_ENABLE


def is_jit_compile_false() -> bool:
    r"""Whether operators run as binary kernels (``set_compile_mode(jit_compile=False)``)."""
    torch_npu.npu._lazy_init()
    return _emulated.get_option("jitCompile") == b"disable"


class _npuConfig:  # noqa: N801
    @classmethod
    def __setattr__(cls, name, value):
        if name == "allow_internal_format":
            option = {"ALLOW_INTERNAL_FORMAT": "enable" if value else "disable"}
            _emulated.set_options(option)


class _allowHF32Matmul:  # noqa: N801
    @classmethod
    def __setattr__(cls, name, value):
        if name == "allow_hf32":
            if not isinstance(value, bool):
                raise TypeError(f"allow_hf32 must be a bool, but got {type(value).__name__}")
            _emulated.set_options({"ALLOW_MATMUL_HF32": "enable" if value else "disable"})
        elif name == "cube_math_type":
            if not isinstance(value, _CubeMathType):
                raise TypeError(
                    "value should be one of Enum CubeMathType when setting cube_math_type, "
                    f"but got {type(value)}"
                )
            _emulated.set_options({"CUBE_MATH_TYPE": str(value.value)})

    @classmethod
    def __getattr__(cls, name):
        if name == "allow_hf32":
            value = _emulated.get_option("ALLOW_MATMUL_HF32")
            return value is not None and value.decode() == "enable"
        if name == "cube_math_type":
            value = _emulated.get_option("CUBE_MATH_TYPE")
            if value:
                return _CubeMathType(int(value))
        return None


class _allowHF32Conv:  # noqa: N801
    @classmethod
    def __setattr__(cls, name, value):
        if name == "allow_hf32":
            if not isinstance(value, bool):
                raise TypeError(f"allow_hf32 must be a bool, but got {type(value).__name__}")
            _emulated.set_options({"ALLOW_CONV_HF32": "enable" if value else "disable"})

    @classmethod
    def __getattr__(cls, name):
        if name == "allow_hf32":
            value = _emulated.get_option("ALLOW_CONV_HF32")
            return value is None or value.decode() in ("", "enable")
        return None


_stream_limits: dict = {}


def _check_stream(stream):
    if stream is None:
        raise AssertionError("stream cannot be None")
    if not isinstance(stream, torch_npu.npu.Stream):
        raise AssertionError(f"stream should be torch_npu.npu.Stream, could not be {type(stream)}")


def _stream_key(stream):
    return (stream.device_index, stream.stream_id)


def set_stream_limit(stream, cube_num=-1, vector_num=-1):
    r"""Limits the cube and vector cores a stream may use (-1: leave as is)."""
    _check_stream(stream)
    torch_npu.npu._lazy_init()
    limits = _stream_limits.setdefault(
        _stream_key(stream),
        {"cube_core_num": _emulated.CUBE_CORE_NUM, "vector_core_num": _emulated.VECTOR_CORE_NUM},
    )
    if cube_num != -1:
        limits["cube_core_num"] = int(cube_num)
    if vector_num != -1:
        limits["vector_core_num"] = int(vector_num)


def reset_stream_limit(stream):
    r"""Lifts the core limits of a stream."""
    _check_stream(stream)
    torch_npu.npu._lazy_init()
    _stream_limits.pop(_stream_key(stream), None)


def get_stream_limit(stream):
    r"""The cube and vector core limits of a stream (the device's cores when not limited)."""
    _check_stream(stream)
    torch_npu.npu._lazy_init()
    limits = _stream_limits.get(_stream_key(stream))
    if limits is None:
        return {
            "cube_core_num": _emulated.CUBE_CORE_NUM,
            "vector_core_num": _emulated.VECTOR_CORE_NUM,
        }
    return dict(limits)
