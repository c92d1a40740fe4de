"""torch's device-backend autoload entry point for the emulated NPU.

torch calls every entry point of the group ``torch.backends`` at the end of ``import torch``
(the way it loads the real ``torch_npu``, registered there as ``torch_npu:_autoload``). This
one is registered as ``npu_platform = npu_platform.emulation.autoload:autoload``.

With ``NPU_PLATFORM_EMULATE`` off it returns at once and imports nothing. With it on, it makes
sure the emulated packages are on ``sys.path`` (the start-up hook normally did that already)
and imports ``torch_npu``, which registers the ``npu`` device and ``torch.npu``.
"""

from __future__ import annotations


def autoload() -> None:
    """Import the emulated ``torch_npu`` when ``NPU_PLATFORM_EMULATE`` is on; else nothing."""
    from npu_platform.emulation import boot

    try:
        if not boot.enabled():
            return
    except ValueError:
        return  # a bad value: off (detection and doctor name it); `import torch` must work
    boot.install(force=True)
    import torch_npu  # noqa: F401  (the emulated package: registers the npu device)
