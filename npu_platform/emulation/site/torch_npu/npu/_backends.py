"""The SoC query of torch_npu/npu/_backends.py on the emulated NPU."""

import torch_npu
from torch_npu import _emulated


def get_soc_version():
    r"""The SoC version number (torch_npu's ``SocVersion``: Ascend910B2 is 221)."""
    torch_npu.npu._lazy_init()
    return _emulated.SOC_VERSION
