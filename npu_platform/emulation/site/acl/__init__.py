"""pyACL (CANN's ``acl`` Python module) on the emulated NPU: the device queries sglang makes.

CANN ships ``acl`` as a C extension over ``libascendcl.so``; its functions return their
outputs followed by an ``aclError`` code (0 is ``ACL_SUCCESS``). sglang's NPU path asks
``acl.rt.get_device_info(0, ACL_DEV_ATTR_NPU_ARCH)`` to tell Ascend 950 (arch 3510) from
the rest. Here the answers are the emulated device's (an Ascend 910B2, arch 2201, see
``torch_npu._emulated``). Only the queries below exist; anything else raises
``AttributeError`` as a missing pyACL function would.
"""

from __future__ import annotations

from acl import rt

__all__ = ["get_soc_name", "rt"]


def get_soc_name() -> str:
    """``aclrtGetSocName``: the emulated SoC's name."""
    from torch_npu import _emulated

    return _emulated.SOC_NAME
