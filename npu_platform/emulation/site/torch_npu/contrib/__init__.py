"""``torch_npu.contrib`` on the emulated NPU.

Only :mod:`torch_npu.contrib.transfer_to_npu` is provided (imported explicitly, as with the
real package, since importing it patches torch). torch_npu's contrib operators and modules
(``npu_iou``, ``ROIAlign``, ...) are not emulated.
"""

__all__: list[str] = []
