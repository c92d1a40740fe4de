"""Finding the CANN runtime libraries without loading them.

Used by detection (to answer "none" before ``import torch`` can trip over torch_npu's
autoload) and by the doctor, which also reads the installed CANN release from its version
files (:func:`find_version`). Standard library only.
"""

from __future__ import annotations

import os

CANN_LIBRARIES = ("libascendcl.so", "libhccl.so")
DEFAULT_ASCEND_ROOT = "/usr/local/Ascend"
_LD_CACHE = "/etc/ld.so.cache"


def search_dirs(environ: dict[str, str] | None = None) -> list[str]:
    """Folders the dynamic loader or a CANN install would use, in the order we look."""
    env = os.environ if environ is None else environ
    dirs: list[str] = []
    for entry in env.get("LD_LIBRARY_PATH", "").split(os.pathsep):
        if entry:
            dirs.append(entry)
    for var in ("ASCEND_HOME_PATH", "ASCEND_TOOLKIT_HOME"):
        root = env.get(var)
        if root:
            dirs += [os.path.join(root, "lib64"), os.path.join(root, "lib")]
    dirs += [
        os.path.join(DEFAULT_ASCEND_ROOT, "ascend-toolkit", "latest", "lib64"),
        os.path.join(DEFAULT_ASCEND_ROOT, "cann", "lib64"),
        os.path.join(DEFAULT_ASCEND_ROOT, "driver", "lib64"),
    ]
    seen: set[str] = set()
    return [d for d in dirs if not (d in seen or seen.add(d))]


def _in_ld_cache(name: str) -> str | None:
    try:
        with open(_LD_CACHE, "rb") as fh:
            data = fh.read()
    except OSError:
        return None
    return f"{_LD_CACHE} (system library cache)" if name.encode() in data else None


def find_library(name: str, environ: dict[str, str] | None = None) -> str | None:
    """Where ``name`` would be found, or ``None``; looks at files only, loads nothing."""
    for folder in search_dirs(environ):
        path = os.path.join(folder, name)
        if os.path.exists(path):
            return path
    return _in_ld_cache(name)


def find_cann(environ: dict[str, str] | None = None) -> dict[str, str | None]:
    """Map each CANN library we need to where it is, or ``None`` when missing."""
    return {lib: find_library(lib, environ) for lib in CANN_LIBRARIES}


def library_file(name: str, environ: dict[str, str] | None = None) -> str | None:
    """The file ``name`` would be loaded from, or ``None``; loads nothing.

    Like :func:`find_library`, but a library known only to the system library cache is
    resolved to its path: ``/etc/ld.so.cache`` stores each entry's full path as a
    NUL-terminated string, so the path is the string that ends in ``/<name>``.
    """
    for folder in search_dirs(environ):
        path = os.path.join(folder, name)
        if os.path.isfile(path):
            return path
    try:
        with open(_LD_CACHE, "rb") as fh:
            data = fh.read()
    except OSError:
        return None
    needle = b"/" + name.encode() + b"\x00"
    start = data.find(needle)
    while start >= 0:
        begin = data.rfind(b"\x00", 0, start) + 1
        path = data[begin : start + len(needle) - 1].decode(errors="replace")
        if path.startswith("/") and os.path.isfile(path):
            return path
        start = data.find(needle, start + 1)
    return None


# --------------------------------------------------------------------------- version

#: Where a CANN install records its release, relative to the install's root (the folder
#: ``set_env.sh`` exports as ``ASCEND_HOME_PATH`` / ``ASCEND_TOOLKIT_HOME``), in the order
#: they are read, with the format of each:
#:
#: * ``<arch>-linux/ascend_toolkit_install.info``: ``key=value`` lines; ``version=8.3.RC2``.
#: * ``version.cfg`` (CANN 8.x and older): ``runtime_running_version=[7.6.0.1.220:8.0.0]``,
#:   the inner build number, then the release after the colon.
#: * ``<component>/version.info``: ``Version=7.6.0.1.220`` (the component's own number,
#:   which need not be the release) and, from CANN 8, ``version_dir=8.0.0`` (the release).
VERSION_FILES = (
    "{arch}-linux/ascend_toolkit_install.info",
    "version.cfg",
    "compiler/version.info",
    "runtime/version.info",
    "share/info/runtime/version.info",
    "opp/version.info",
)
#: Install roots tried after the environment's and the one holding libascendcl.so.
DEFAULT_TOOLKIT_ROOTS = (
    os.path.join(DEFAULT_ASCEND_ROOT, "ascend-toolkit", "latest"),
    os.path.join(DEFAULT_ASCEND_ROOT, "cann"),
    os.path.join(DEFAULT_ASCEND_ROOT, "latest"),
)


class CannVersion:
    """The CANN release found (``version`` ``None`` when none was), where it was read and
    every file looked at, in order.

    A plain class, not a dataclass: detection imports this module on its cheap path, and
    ``dataclasses`` pulls in ``inspect`` and friends (about 10 ms).
    """

    __slots__ = ("kind", "looked", "roots", "source", "version")

    def __init__(
        self,
        version: str | None,
        source: str | None = None,
        kind: str | None = None,
        roots: tuple[str, ...] = (),
        looked: tuple[str, ...] = (),
    ) -> None:
        self.version = version
        self.source = source
        #: ``"release"``, or ``"component"`` when only a component's own ``Version=`` was found.
        self.kind = kind
        #: The install roots tried (:func:`toolkit_roots`) and the files looked at, in order.
        self.roots = tuple(roots)
        self.looked = tuple(looked)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, CannVersion):
            return NotImplemented
        return self.as_dict() == other.as_dict()

    def __hash__(self) -> int:
        return hash((self.version, self.source, self.kind, self.roots, self.looked))

    def __repr__(self) -> str:
        return f"CannVersion({self.version!r}, source={self.source!r}, kind={self.kind!r})"

    def as_dict(self) -> dict[str, object]:
        return {
            "version": self.version,
            "source": self.source,
            "kind": self.kind,
            "roots": list(self.roots),
            "looked": list(self.looked),
        }


def toolkit_roots(environ: dict[str, str] | None = None) -> list[str]:
    """Folders that may be a CANN install's root, in the order they are tried:
    ``ASCEND_HOME_PATH``, ``ASCEND_TOOLKIT_HOME``, the install holding ``libascendcl.so``
    (the parent of its ``lib64``, and above an ``<arch>-linux`` level), then
    :data:`DEFAULT_TOOLKIT_ROOTS`."""
    env = os.environ if environ is None else environ
    roots = [env[var] for var in ("ASCEND_HOME_PATH", "ASCEND_TOOLKIT_HOME") if env.get(var)]
    library = library_file(CANN_LIBRARIES[0], environ)
    if library is not None:
        root = os.path.dirname(os.path.dirname(library))
        roots.append(root)
        if os.path.basename(root).endswith("-linux"):
            roots.append(os.path.dirname(root))
    roots += DEFAULT_TOOLKIT_ROOTS
    seen: set[str] = set()
    return [r for r in roots if not (r in seen or seen.add(r))]


def _key_values(path: str) -> dict[str, str] | None:
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            lines = fh.read(1 << 16).splitlines()
    except OSError:
        return None
    values: dict[str, str] = {}
    for line in lines:
        key, sep, value = line.partition("=")
        if sep and not key.lstrip().startswith("#"):
            values.setdefault(key.strip(), value.strip().strip('"'))
    return values


def parse_version_file(path: str) -> tuple[str, str] | None:
    """(version, kind) from one of :data:`VERSION_FILES`, or ``None`` when it holds none.

    ``kind`` is ``"release"`` or ``"component"`` (see :class:`CannVersion`).
    """
    values = _key_values(path)
    if not values:
        return None
    name = os.path.basename(path)
    if name.endswith("install.info"):
        version = values.get("version")
        return (version, "release") if version else None
    if name == "version.cfg":
        keys = ["runtime_running_version"] + sorted(k for k in values if k.endswith("_version"))
        for key in keys:
            inner = values.get(key, "").strip("[]")
            release = inner.rpartition(":")[2].strip()
            if release:
                return release, "release"
        return None
    if values.get("version_dir"):
        return values["version_dir"], "release"
    version = values.get("Version") or values.get("version")
    return (version, "component") if version else None


def host_arch() -> str:
    """The ``<arch>`` of CANN's ``<arch>-linux`` folders (``x86_64``, ``aarch64``)."""
    import platform  # here, not at the top: detection imports this module on a hot path

    return platform.machine() or "x86_64"


def find_version(environ: dict[str, str] | None = None) -> CannVersion:
    """The installed CANN release, read from its version files (see :data:`VERSION_FILES`)
    under :func:`toolkit_roots`; a release beats a component's own number."""
    looked: list[str] = []
    component: CannVersion | None = None
    arch = host_arch()
    roots = tuple(toolkit_roots(environ))
    for root in roots:
        for pattern in VERSION_FILES:
            path = os.path.join(root, pattern.format(arch=arch))
            looked.append(path)
            if not os.path.isfile(path):
                continue
            parsed = parse_version_file(path)
            if parsed is None:
                continue
            version, kind = parsed
            if kind == "release":
                return CannVersion(version, path, kind, roots, tuple(looked))
            if component is None:
                component = CannVersion(version, path, kind)
    if component is not None:
        return CannVersion(
            component.version, component.source, component.kind, roots, tuple(looked)
        )
    return CannVersion(None, None, None, roots, tuple(looked))
