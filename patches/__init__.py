"""Start-up patches for unmodified consumers (installed as ``npu_platform.patches``).

Empty for now: the dInfer start-up hook (issue 6) lands here.
"""
