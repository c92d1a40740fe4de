"""``acl.rt`` of the emulated pyACL: device count and device attributes."""

from __future__ import annotations

#: ``aclError`` codes (``acl_base.h``).
ACL_SUCCESS = 0
ACL_ERROR_INVALID_PARAM = 100000
ACL_ERROR_RT_INVALID_DEVICEID = 107001

#: ``aclrtDevAttr`` values (``acl_rt.h``) the emulated device answers.
ACL_DEV_ATTR_AICORE_CORE_NUM = 101
ACL_DEV_ATTR_CUBE_CORE_NUM = 102
ACL_DEV_ATTR_VECTOR_CORE_NUM = 201
ACL_DEV_ATTR_TOTAL_GLOBAL_MEM_SIZE = 301
ACL_DEV_ATTR_L2_CACHE_SIZE = 302
ACL_DEV_ATTR_NPU_ARCH = 601

#: The Ascend 910B family's NPU architecture (Ascend 950 reports 3510).
NPU_ARCH = 2201


def get_device_count() -> tuple[int, int]:
    """``aclrtGetDeviceCount``: ``(count, ret)``."""
    from torch_npu import _emulated

    return _emulated.device_count(), ACL_SUCCESS


def get_device_info(device_id: int, attr: int) -> tuple[int, int]:
    """``aclrtGetDeviceInfo``: ``(value, ret)``; ``ret`` is non-zero for a bad id or attribute."""
    from torch_npu import _emulated

    if not 0 <= int(device_id) < _emulated.device_count():
        return 0, ACL_ERROR_RT_INVALID_DEVICEID
    values = {
        ACL_DEV_ATTR_AICORE_CORE_NUM: _emulated.CUBE_CORE_NUM,
        ACL_DEV_ATTR_CUBE_CORE_NUM: _emulated.CUBE_CORE_NUM,
        ACL_DEV_ATTR_VECTOR_CORE_NUM: _emulated.VECTOR_CORE_NUM,
        ACL_DEV_ATTR_TOTAL_GLOBAL_MEM_SIZE: _emulated.configured_memory(),
        ACL_DEV_ATTR_L2_CACHE_SIZE: _emulated.L2_CACHE_SIZE,
        ACL_DEV_ATTR_NPU_ARCH: NPU_ARCH,
    }
    value = values.get(int(attr))
    if value is None:
        return 0, ACL_ERROR_INVALID_PARAM
    return int(value), ACL_SUCCESS
