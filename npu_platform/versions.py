"""The framework versions npu-platform supports, and the versions installed.

The one table of supported ranges, used by ``npu-platform doctor`` and by the vLLM entry
point (which stays out of the way of a vLLM outside its range). A range says exactly which
releases were tested: it is widened when a new release has been tested, not before.

Bottom layer: the standard library and ``packaging`` only. Installed versions come from the
distributions' metadata (:mod:`importlib.metadata`), never from importing the framework, so
asking is cheap and works even when the framework cannot be imported.
"""

from __future__ import annotations

import importlib.metadata
from dataclasses import dataclass

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import InvalidVersion, Version

__all__ = ["SUPPORTED", "Support", "installed_version", "parse", "support"]

#: Framework versions npu-platform supports (PEP 440 specifiers): the tested releases.
#: Pre-releases and local builds inside a range count as supported.
SUPPORTED: dict[str, str] = {"vllm": ">=0.32.0,<0.34", "sglang": ">=0.5.23,<0.6"}


def installed_version(distribution: str) -> str | None:
    """Installed version of ``distribution`` (the first one on ``sys.path``), or ``None``
    when it is not installed or its metadata cannot be read."""
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None
    except Exception:  # unreadable metadata is "not usable", not a crash
        return None


def parse(version: str) -> Version | None:
    """``version`` as a PEP 440 version, or ``None`` when it is not one."""
    try:
        return Version(version)
    except InvalidVersion:
        return None


def specifier(name: str) -> SpecifierSet:
    """The supported range of ``name`` (a key of :data:`SUPPORTED`)."""
    try:
        spec = SUPPORTED[name]
    except KeyError:
        raise ValueError(
            f"no supported range is recorded for {name!r}; known: {', '.join(sorted(SUPPORTED))}"
        ) from None
    try:
        return SpecifierSet(spec)
    except InvalidSpecifier:  # a bad constant is a bug here, not in the user's stack
        raise ValueError(f"SUPPORTED[{name!r}] = {spec!r} is not a valid specifier") from None


@dataclass(frozen=True)
class Support:
    """Whether the installed ``name`` is inside its supported range ``spec``.

    ``supported`` is ``None`` when that cannot be told: ``name`` is not installed
    (``installed`` is ``None``) or its version is not a PEP 440 version.
    """

    name: str
    installed: str | None
    spec: str
    supported: bool | None

    @property
    def requirement(self) -> str:
        """``name`` and its range as pip takes them, e.g. ``vllm>=0.32.0,<0.34``."""
        return f"{self.name}{self.spec}"


def support(name: str, version: str | None = None) -> Support:
    """:class:`Support` of ``name`` at ``version`` (default: the installed version)."""
    specifiers = specifier(name)
    installed = installed_version(name) if version is None else version
    parsed = parse(installed) if installed is not None else None
    supported = None if parsed is None else specifiers.contains(parsed, prereleases=True)
    return Support(name, installed, SUPPORTED[name], supported)
