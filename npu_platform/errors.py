"""Exception types shared by every layer of npu_platform.

Each error names what went wrong and what to do about it; library code never exits.
"""

from __future__ import annotations


class NPUPlatformError(Exception):
    """Base class of every error raised by npu_platform."""


class ConfigError(NPUPlatformError, ValueError):
    """An ``NPU_PLATFORM_*`` environment variable holds a value we do not accept."""


class EnvironmentProblem(NPUPlatformError, RuntimeError):
    """The installed software stack cannot work (missing CANN, version mismatch, ...)."""
