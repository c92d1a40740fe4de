"""``sgl_kernel_npu.kvcacheio`` stand-in: hierarchical-cache transfers, not emulated.

The enums are the real ones; the transfer kernels raise :class:`NotImplementedError`. The
mamba-state transfers sglang imports with a fallback are left out.
"""

from enum import Enum

from sgl_kernel_npu._emulation import Unemulated

__all__ = ["TransferDirection", "TransferFlag", "transfer_kv_dim_exchange"]


class TransferDirection(Enum):
    H2D = 1
    D2H = 2


class TransferFlag(Enum):
    FAST2D = 2


transfer_kv_dim_exchange = Unemulated(__name__, "transfer_kv_dim_exchange")
