"""``npu-platform doctor``: can this Python environment run vLLM / sglang on an Ascend NPU?

The doctor inspects the installed software stack and prints one verdict per check, each with
a level (``ok``, ``info``, ``warn``, ``error``), a title, a detail and, where one exists, a
fix. It never imports torch, torch_npu, vLLM or sglang to learn their versions (importing
torch with a broken torch_npu fails, and the doctor must still answer): versions come from
the installed distributions' metadata. The only heavy import happens inside
:func:`npu_platform.detect.detect`, and only when torch_npu and the CANN libraries are both
present, i.e. when a real NPU is plausible. CANN is inspected through files only: its
release from the install's version files (:func:`npu_platform.cann.find_version`), and
whether ``libascendcl.so`` exports the calls the ACL memory driver needs from its ELF
dynamic symbol table (:mod:`npu_platform.elf`), without loading it. The supported framework
ranges are :data:`npu_platform.versions.SUPPORTED`.

The stack "cannot work" when any verdict is an ``error``; detection answering ``none`` (no
real NPU and no emulation) is such an error. :attr:`Report.exit_code` is then 1, else 0.
"""

from __future__ import annotations

import ctypes
import importlib.metadata
import importlib.util
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import textwrap
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import IO

import npu_platform
from npu_platform import cann, elf, env
from npu_platform.errors import ConfigError
from npu_platform.versions import SUPPORTED, installed_version, support
from npu_platform.versions import parse as parse_version

LEVELS = ("ok", "info", "warn", "error")

#: Distributions whose versions the doctor reports (report key -> distribution name).
DISTRIBUTIONS = {
    "torch": "torch",
    "torch_npu": "torch_npu",
    "vllm": "vllm",
    "sglang": "sglang",
    "torch_memory_saver": "torch_memory_saver",
}

#: Byte strings that betray which runtime a shared object was linked against.
ASCEND_MARKERS = (b"libascendcl", b"aclrt")
CUDA_MARKERS = (b"libcuda", b"cudart", b"cuMem")

#: The shim's entry points besides torch_route.ALLOC_FN / FREE_FN (see _alloc_shim.c).
SHIM_CALLBACK_SYMBOLS = ("npu_platform_set_callbacks", "npu_platform_has_callbacks")

NPU_SMI_TIMEOUT_S = 20
_SET_ENV_CANDIDATES = (
    os.path.join(cann.DEFAULT_ASCEND_ROOT, "ascend-toolkit", "set_env.sh"),
    os.path.join(cann.DEFAULT_ASCEND_ROOT, "cann", "set_env.sh"),
    os.path.join("~", "Ascend", "ascend-toolkit", "set_env.sh"),
)
_BUS_ID = re.compile(r"[0-9A-Fa-f]{4,8}:[0-9A-Fa-f]{2}:[0-9A-Fa-f]{2}\.[0-7]")
_ID_AND_NAME = re.compile(r"(\d+)\s+(\S.*)")


@dataclass(frozen=True)
class Verdict:
    """The outcome of one check."""

    check: str  # stable identifier, e.g. "torch-npu", "vllm", "autoload"
    level: str  # one of LEVELS
    title: str
    detail: str
    fix: str | None = None

    def __post_init__(self) -> None:
        if self.level not in LEVELS:
            raise ValueError(f"verdict level {self.level!r} is not one of {LEVELS}")

    def as_dict(self) -> dict[str, object]:
        return {
            "check": self.check,
            "level": self.level,
            "title": self.title,
            "detail": self.detail,
            "fix": self.fix,
        }


@dataclass
class Report:
    """Everything the doctor found; :meth:`as_dict` is the ``--json`` output."""

    detect: dict[str, object]
    versions: dict[str, str | None]
    cann: dict[str, object]
    devices: dict[str, object]
    torch_memory_saver: dict[str, object]
    environment: dict[str, object]
    verdicts: list[Verdict] = field(default_factory=list)
    alloc_shim: dict[str, object] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not any(v.level == "error" for v in self.verdicts)

    @property
    def exit_code(self) -> int:
        return 0 if self.ok else 1

    def as_dict(self) -> dict[str, object]:
        return {
            "ok": self.ok,
            "detect": self.detect,
            "versions": self.versions,
            "cann": self.cann,
            "devices": self.devices,
            "torch_memory_saver": self.torch_memory_saver,
            "alloc_shim": self.alloc_shim,
            "environment": self.environment,
            "verdicts": [v.as_dict() for v in self.verdicts],
        }


# --------------------------------------------------------------------------- versions


#: Installed version of a distribution, or ``None`` (see :mod:`npu_platform.versions`).
dist_version = installed_version


def collect_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {
        "python": platform.python_version(),
        "npu-platform": npu_platform.__version__,
    }
    for key, dist in DISTRIBUTIONS.items():
        versions[key] = dist_version(dist)
    return versions


def check_torch_pair(torch_version: str | None, torch_npu_version: str | None) -> Verdict:
    """torch and torch_npu must agree in major.minor (local suffixes such as ``+cpu`` ignored)."""
    if torch_version is None:
        return Verdict(
            "torch-npu",
            "error",
            "torch is not installed",
            "vLLM, sglang and the NPU backend all need torch.",
            "Install torch (for example `pip install torch`), then a torch_npu of the same "
            "major.minor version.",
        )
    if torch_npu_version is None:
        return Verdict(
            "torch-npu",
            "info",
            "torch_npu is not installed",
            f"torch {torch_version} is installed without torch_npu. A real Ascend NPU needs "
            "torch_npu; the emulated NPU (NPU_PLATFORM_EMULATE=1) works without it.",
            None,
        )
    tv, nv = parse_version(torch_version), parse_version(torch_npu_version)
    if tv is None or nv is None:
        bad = torch_version if tv is None else torch_npu_version
        return Verdict(
            "torch-npu",
            "warn",
            "cannot compare the torch and torch_npu versions",
            f"{bad!r} is not a valid version (torch {torch_version}, torch_npu "
            f"{torch_npu_version}).",
            None,
        )
    t_mm, n_mm = tv.release[:2], nv.release[:2]
    shown = ".".join(map(str, t_mm))
    if t_mm == n_mm:
        return Verdict(
            "torch-npu",
            "ok",
            f"torch and torch_npu match ({shown})",
            f"torch {torch_version}, torch_npu {torch_npu_version}.",
        )
    return Verdict(
        "torch-npu",
        "error",
        "torch and torch_npu versions do not match",
        f"torch {torch_version} is {shown}.x but torch_npu {torch_npu_version} is "
        f"{'.'.join(map(str, n_mm))}.x; torch_npu only works with the torch major.minor it "
        "was built for.",
        f"Install torch_npu {shown}.x (for example `pip install 'torch_npu=={shown}.*'`), or "
        f"install the torch version matching torch_npu {torch_npu_version}.",
    )


def check_framework(name: str, version: str | None) -> Verdict:
    """Is ``name`` (a key of :data:`SUPPORTED`) inside its supported range?"""
    spec = SUPPORTED[name]
    if version is None:
        return Verdict(
            name,
            "info",
            f"{name} is not installed",
            f"npu-platform supports {name}{spec}; install it to serve with {name}.",
        )
    status = support(name, version)
    if status.supported is None:
        return Verdict(
            name,
            "warn",
            f"{name} version {version!r} cannot be parsed",
            f"npu-platform supports {name}{spec}; it cannot tell whether {version!r} is inside.",
        )
    if status.supported:
        return Verdict(
            name,
            "ok",
            f"{name} {version} is supported",
            f"Inside the supported range {name}{spec}.",
        )
    return Verdict(
        name,
        "error",
        f"{name} {version} is not supported",
        f"npu-platform supports {name}{spec}, the versions it is tested with; its patches and "
        f"hooks are written against those versions and may not apply to {version}.",
        f"Install a supported version: pip install '{status.requirement}'.",
    )


# --------------------------------------------------------------------------- CANN


def _set_env_script() -> str | None:
    for candidate in _SET_ENV_CANDIDATES:
        path = os.path.expanduser(candidate)
        if os.path.isfile(path):
            return path
    return None


def _source_hint() -> str:
    """How to put CANN on the library path, as a phrase to start or end a sentence."""
    script = _set_env_script()
    if script:
        return f"source {script}"
    return f"install the CANN toolkit and source its set_env.sh (usually {_SET_ENV_CANDIDATES[0]})"


def _capitalise(text: str) -> str:
    return text[:1].upper() + text[1:]


def collect_cann() -> dict[str, object]:
    libraries = cann.find_cann()
    return {
        "found": all(libraries.values()),
        "libraries": libraries,
        "version": cann.find_version().as_dict(),
        "ASCEND_HOME_PATH": os.environ.get("ASCEND_HOME_PATH"),
        "LD_LIBRARY_PATH": os.environ.get("LD_LIBRARY_PATH"),
        "default_root": cann.DEFAULT_ASCEND_ROOT,
        "default_root_exists": os.path.isdir(cann.DEFAULT_ASCEND_ROOT),
        "set_env_script": _set_env_script(),
        "search_dirs": cann.search_dirs(),
    }


def check_cann(cann_info: dict[str, object], torch_npu_installed: bool) -> Verdict:
    libraries: dict[str, str | None] = cann_info["libraries"]  # type: ignore[assignment]
    missing = [lib for lib, where in libraries.items() if where is None]
    if not missing:
        where = "; ".join(f"{lib} at {path}" for lib, path in libraries.items())
        return Verdict("cann", "ok", "CANN runtime libraries found", where + ".")
    found = [f"{lib} at {path}" for lib, path in libraries.items() if path is not None]
    looked = (
        "Looked in LD_LIBRARY_PATH, ASCEND_HOME_PATH/ASCEND_TOOLKIT_HOME (lib64, lib), "
        f"{cann.DEFAULT_ASCEND_ROOT} and the system library cache."
    )
    detail = f"Not found: {', '.join(missing)}." + (f" Found: {'; '.join(found)}." if found else "")
    if not torch_npu_installed and not found:
        return Verdict(
            "cann",
            "info",
            "CANN runtime libraries not found",
            f"{detail} {looked} CANN is needed only for a real Ascend NPU.",
        )
    return Verdict(
        "cann",
        "warn",
        "CANN runtime libraries missing" if not found else "CANN install is incomplete",
        f"{detail} {looked}",
        f"{_capitalise(_source_hint())} in the shell that starts vLLM/sglang.",
    )


def check_cann_version(cann_info: dict[str, object], torch_npu_installed: bool) -> Verdict:
    """The CANN release, from the install's version files (see :func:`cann.find_version`)."""
    info: dict[str, object] = cann_info["version"]  # type: ignore[assignment]
    version, source = info["version"], info["source"]
    if version is not None:
        if info["kind"] == "component":
            component = os.path.basename(os.path.dirname(str(source)))
            return Verdict(
                "cann-version",
                "ok",
                f"CANN {version} (the {component} component's number)",
                f"Read from {source}. No release number (version_dir=, version.cfg, "
                "ascend_toolkit_install.info) was found, so this is the component's own "
                "version, which can differ from the CANN release.",
            )
        return Verdict("cann-version", "ok", f"CANN {version}", f"Read from {source}.")
    libraries: dict[str, str | None] = cann_info["libraries"]  # type: ignore[assignment]
    needed = torch_npu_installed or any(libraries.values())
    roots: list[str] = info["roots"]  # type: ignore[assignment]
    files = ", ".join(pattern.format(arch="<arch>") for pattern in cann.VERSION_FILES)
    return Verdict(
        "cann-version",
        "warn" if needed else "info",
        "CANN version unknown",
        f"No CANN version file was found: looked for {files} under {', '.join(roots)}."
        + ("" if needed else " CANN is needed only for a real Ascend NPU."),
        f"{_capitalise(_source_hint())} (it sets ASCEND_HOME_PATH to the CANN install), or "
        "set ASCEND_HOME_PATH to the folder that holds version.cfg or "
        "<arch>-linux/ascend_toolkit_install.info."
        if needed
        else None,
    )


def inspect_acl_vm(library: str | None) -> dict[str, object]:
    """Which of the calls the ACL memory driver needs ``library`` exports (read from its
    dynamic symbol table; the library is not loaded: loading CANN's runtime has side
    effects)."""
    from npu_platform.memory.drivers.acl import SIGNATURES

    needed = sorted(SIGNATURES)
    info: dict[str, object] = {"library": library, "needed": needed, "missing": None, "error": None}
    if library is None:
        return info
    try:
        exported = elf.exported_symbols(library)
    except (OSError, elf.ElfError) as exc:
        info["error"] = str(exc) if isinstance(exc, elf.ElfError) else f"{exc.strerror or exc}"
        return info
    info["missing"] = [name for name in needed if name not in exported]
    return info


def check_acl_vm(info: dict[str, object]) -> Verdict:
    library, missing = info["library"], info["missing"]
    if library is None:
        return Verdict(
            "acl-vm",
            "info",
            "ACL virtual-memory API not checked",
            "libascendcl.so was not found (see the CANN check above).",
        )
    if info["error"] is not None:
        return Verdict(
            "acl-vm",
            "warn",
            "cannot read the symbols of libascendcl.so",
            f"{library}: {info['error']}",
            f"Check that {library} is CANN's libascendcl.so; reinstall CANN if the file is "
            "damaged.",
        )
    needed: list[str] = info["needed"]  # type: ignore[assignment]
    if not missing:
        return Verdict(
            "acl-vm",
            "ok",
            "libascendcl.so exports the ACL virtual-memory API",
            f"{library} exports all {len(needed)} calls the ACL memory driver uses (read "
            "from its dynamic symbol table, without loading it).",
        )
    return Verdict(
        "acl-vm",
        "warn",
        "libascendcl.so lacks the ACL virtual-memory API",
        f"{library} does not export {', '.join(missing)} (read from its dynamic symbol "
        "table), which npu-platform's ACL memory driver calls. vLLM sleep mode, sglang's "
        "memory saver and torch_memory_saver regions cannot work on the NPU; inference "
        "itself is not affected.",
        "Install CANN 7.0 or newer (the virtual-memory calls aclrtReserveMemAddress, "
        "aclrtMallocPhysical and aclrtMapMem arrived in 7.0) and source its set_env.sh.",
    )


def inspect_alloc_shim(path: str | os.PathLike[str] | None = None) -> dict[str, object]:
    """Whether the allocator shim (default: :func:`torch_route.shim_path`) exists and loads
    with its entry points. It is npu-platform's own plain C library, so it is loaded."""
    from npu_platform.memory import torch_route

    shim = str(torch_route.shim_path() if path is None else path)
    symbols = [torch_route.ALLOC_FN, torch_route.FREE_FN, *SHIM_CALLBACK_SYMBOLS]
    info: dict[str, object] = {
        "path": shim,
        "exists": os.path.isfile(shim),
        "symbols": symbols,
        "missing": None,
        "error": None,
    }
    if not info["exists"]:
        return info
    try:
        lib = ctypes.CDLL(shim)
    except OSError as exc:
        info["error"] = str(exc)
        return info
    info["missing"] = [name for name in symbols if not hasattr(lib, name)]
    return info


def check_alloc_shim(info: dict[str, object], on_npu: bool) -> Verdict:
    path, symbols = info["path"], info["symbols"]
    shown = ", ".join(symbols)  # type: ignore[arg-type]
    if info["exists"] and info["error"] is None and not info["missing"]:
        return Verdict("alloc-shim", "ok", "allocator shim loads", f"{path} exports {shown}.")
    if not info["exists"]:
        title, detail = "allocator shim is missing", f"{path} does not exist."
    elif info["error"] is not None:
        title, detail = (
            "allocator shim cannot be loaded",
            f"Loading {path} failed: {info['error']}.",
        )
    else:
        missing = ", ".join(info["missing"])  # type: ignore[arg-type]
        title, detail = "allocator shim lacks entry points", f"{path} does not export {missing}."
    detail += (
        " torch's pluggable allocator calls it for tensors created inside memory-saver "
        "regions (vLLM sleep mode, sglang's memory saver), so those fail on the NPU."
    )
    return Verdict(
        "alloc-shim",
        "warn" if on_npu else "info",
        title,
        detail,
        "Install a C compiler (gcc) and reinstall npu-platform (`pip install "
        "--force-reinstall --no-deps npu-platform`, or `pip install -e .` in a checkout): "
        "the build compiles npu_platform/memory/_alloc_shim.c into it.",
    )


def torch_backend_autoload_enabled() -> bool:
    """torch's own rule: autoload unless TORCH_DEVICE_BACKEND_AUTOLOAD is set to anything
    but ``"1"``."""
    return os.environ.get("TORCH_DEVICE_BACKEND_AUTOLOAD", "1") == "1"


def torch_npu_autoload_entry_points() -> list[str]:
    """``torch.backends`` entry points that would import torch_npu during ``import torch``."""
    try:
        eps: Iterable[importlib.metadata.EntryPoint] = importlib.metadata.entry_points(
            group="torch.backends"
        )
    except Exception:
        return []
    return [
        f"{ep.name} = {ep.value}"
        for ep in eps
        if ep.value.split(":")[0].split(".")[0] == "torch_npu"
    ]


def check_autoload(
    torch_npu_version: str | None, cann_info: dict[str, object], entry_points: list[str]
) -> Verdict | None:
    """The trap: torch_npu installed, CANN missing, and torch autoloading torch_npu."""
    if torch_npu_version is None or cann_info["found"]:
        return None
    libraries: dict[str, str | None] = cann_info["libraries"]  # type: ignore[assignment]
    missing = ", ".join(lib for lib, where in libraries.items() if where is None)
    value = os.environ.get("TORCH_DEVICE_BACKEND_AUTOLOAD")
    if not entry_points:
        return Verdict(
            "autoload",
            "warn",
            "torch_npu is installed but cannot load without CANN",
            f"torch_npu {torch_npu_version} needs {missing}, which were not found, so "
            "`import torch_npu` fails. This torch_npu registers no torch.backends entry "
            "point, so `import torch` itself still works.",
            f"{_capitalise(_source_hint())}, or uninstall torch_npu.",
        )
    if torch_backend_autoload_enabled():
        return Verdict(
            "autoload",
            "error",
            "`import torch` fails: torch autoloads torch_npu, which cannot load without CANN",
            f"torch_npu {torch_npu_version} registers the torch.backends entry point "
            f"({'; '.join(entry_points)}), so every `import torch` (vLLM, sglang, even the "
            f"emulated NPU) imports torch_npu, and that fails because {missing} "
            "were not found.",
            f"{_capitalise(_source_hint())} so the CANN libraries are found; "
            "or, without an NPU, export TORCH_DEVICE_BACKEND_AUTOLOAD=0 (or uninstall "
            "torch_npu) so `import torch` skips torch_npu.",
        )
    return Verdict(
        "autoload",
        "warn",
        "torch_npu is installed but CANN is missing (autoload is off)",
        f"TORCH_DEVICE_BACKEND_AUTOLOAD={value} keeps `import torch` from loading torch_npu, "
        f"so torch works; but torch_npu cannot load without {missing}, so a real NPU cannot "
        "be used.",
        f"For a real NPU, {_source_hint()}. The emulated NPU (NPU_PLATFORM_EMULATE=1) works as is.",
    )


# --------------------------------------------------------------------------- devices


def parse_npu_smi(text: str) -> dict[str, object]:
    """Parse ``npu-smi info``: the NPU rows (id, name, health) and their chip rows.

    Each NPU row reads ``| <npu> <name> | <health> | ...`` and is followed by one row per
    chip, ``| <chip> [<phy-id>] | <bus-id> | ...``. The process table after the device table
    has neither shape and is skipped. ``count`` is the number of chips (what torch_npu
    counts as devices), or the number of NPUs when no chip row was recognised.
    """
    npus: list[dict[str, object]] = []
    chips: list[dict[str, object]] = []
    current: dict[str, object] | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line.startswith("|"):
            continue
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        if len(cells) < 2:
            continue
        head, second = cells[0], cells[1]
        if _BUS_ID.fullmatch(second):
            if current is not None and head.split() and head.split()[0].isdigit():
                chips.append(
                    {
                        "npu": current["npu"],
                        "chip": int(head.split()[0]),
                        "name": current["name"],
                        "health": current["health"],
                        "bus_id": second,
                    }
                )
            continue
        match = _ID_AND_NAME.fullmatch(head)
        if match and not match.group(2).isdigit() and second and not second.isdigit():
            current = {"npu": int(match.group(1)), "name": match.group(2), "health": second}
            npus.append(current)
    return {"count": len(chips) if chips else len(npus), "npus": npus, "chips": chips}


def collect_devices(detection: dict[str, object]) -> tuple[dict[str, object], Verdict]:
    npu_smi = shutil.which("npu-smi")
    target = detection.get("target")
    detected = detection.get("device_count") or 0
    if npu_smi is None:
        info: dict[str, object] = {
            "source": "detect",
            "count": detected,
            "npu_smi": None,
            "error": None,
            "npus": [],
            "chips": [],
        }
        what = {
            "real": "torch_npu reports",
            "emulated": "the emulated NPU provides",
        }.get(str(target), "detection found")
        return info, Verdict(
            "devices",
            "info",
            f"{detected} device(s) (npu-smi not on PATH)",
            f"npu-smi is not on PATH, so the count comes from detection: {what} {detected} "
            "device(s).",
        )
    try:
        proc = subprocess.run(
            [npu_smi, "info"],
            capture_output=True,
            text=True,
            timeout=NPU_SMI_TIMEOUT_S,
            check=False,
        )
        output = proc.stdout
        failure = None if proc.returncode == 0 else f"exit status {proc.returncode}"
        if failure and proc.stderr.strip():
            failure += f": {proc.stderr.strip()[-500:]}"
    except (OSError, subprocess.SubprocessError) as exc:
        output = ""
        failure = f"{type(exc).__name__}: {exc}"
    parsed = parse_npu_smi(output)
    info = {"source": "npu-smi", "npu_smi": npu_smi, "error": failure, **parsed}
    count = parsed["count"]
    if failure:
        return info, Verdict(
            "devices",
            "warn",
            "`npu-smi info` failed",
            f"{npu_smi} info: {failure}.",
            "Check the Ascend driver installation (`npu-smi info` should list the NPUs).",
        )
    if not count:
        return info, Verdict(
            "devices",
            "warn",
            "npu-smi lists no NPU",
            f"{npu_smi} info printed no device row.",
            "Check the Ascend driver and that this container was given the /dev/davinci* devices.",
        )
    names = sorted(
        {str(chip["name"]) for chip in parsed["chips"]}
        or {str(npu["name"]) for npu in parsed["npus"]}
    )
    detail = f"npu-smi lists {count} device(s) ({', '.join(names)})."
    if target == "real" and detected != count:
        detail += (
            f" torch_npu sees {detected}; ASCEND_RT_VISIBLE_DEVICES="
            f"{os.environ.get('ASCEND_RT_VISIBLE_DEVICES', '(unset)')} may restrict it."
        )
    return info, Verdict("devices", "ok", f"{count} NPU device(s) found by npu-smi", detail)


# --------------------------------------------------------------------------- detection


def check_config() -> list[Verdict]:
    """``NPU_PLATFORM_*`` settings: a bad value is an error, an unknown name a warning."""
    try:
        unknown = env.validate()
    except ConfigError as exc:
        return [
            Verdict(
                "config",
                "error",
                "bad NPU_PLATFORM_* setting",
                str(exc),
                "Fix or unset the variable named above.",
            )
        ]
    return [
        Verdict("config", "warn", "unknown NPU_PLATFORM_* variable", message) for message in unknown
    ]


def run_detect() -> tuple[dict[str, object], Verdict | None]:
    """``detect(refresh=True)`` as a dict; never raises."""
    from npu_platform import detect as detect_mod

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            detection = detect_mod.detect(refresh=True)
    except ConfigError as exc:
        # reported by check_config(); detection cannot decide with a bad setting
        return {"target": None, "reason": str(exc), "device_count": 0}, None
    except Exception as exc:
        return {"target": None, "reason": f"{type(exc).__name__}: {exc}", "device_count": 0}, (
            Verdict(
                "detect",
                "error",
                "NPU detection crashed",
                f"{type(exc).__name__}: {exc}",
            )
        )
    result = detection.as_dict()
    target = detection.target.value
    if target == "real":
        verdict = Verdict(
            "detect",
            "ok",
            f"real Ascend NPU ({detection.device_count} device(s))",
            detection.reason,
        )
    elif target == "emulated":
        verdict = Verdict(
            "detect",
            "ok",
            f"emulated NPU ({detection.device_count} device(s), CPU-backed)",
            detection.reason,
        )
    else:
        verdict = Verdict(
            "detect",
            "error",
            "no usable NPU",
            detection.reason,
            "Install CANN and a torch_npu matching torch for a real Ascend NPU, or set "
            "NPU_PLATFORM_EMULATE=1 to use the emulated NPU.",
        )
    return result, verdict


# --------------------------------------------------------------------------- torch_memory_saver


def _is_shared_object(name: str) -> bool:
    return name.endswith(".so") or ".so." in name


def classify_shared_object(data: bytes) -> str:
    """``"ascend"``, ``"cuda"`` or ``"unknown"`` from the strings inside a shared object."""
    if any(marker in data for marker in ASCEND_MARKERS):
        return "ascend"
    if any(marker in data for marker in CUDA_MARKERS):
        return "cuda"
    return "unknown"


def _memory_saver_shared_objects(dist: importlib.metadata.Distribution) -> list[str]:
    paths: list[str] = []
    files = dist.files
    if files is not None:
        paths = [str(f.locate()) for f in files if _is_shared_object(f.name)]
    else:  # no RECORD: look inside the package folder, found without importing it
        try:
            spec = importlib.util.find_spec("torch_memory_saver")
        except (ImportError, ValueError):
            spec = None
        for folder in (spec.submodule_search_locations or []) if spec else []:
            for root, _dirs, names in os.walk(folder):
                paths += [os.path.join(root, n) for n in names if _is_shared_object(n)]
    return sorted(paths)


def inspect_torch_memory_saver() -> dict[str, object]:
    """Which build of torch_memory_saver is installed: ``cuda``, ``ascend`` or ``unknown``."""
    try:
        dist = importlib.metadata.distribution("torch_memory_saver")
    except importlib.metadata.PackageNotFoundError:
        return {"installed": False, "version": None, "build": None, "shared_objects": {}}
    kinds: dict[str, str] = {}
    for path in _memory_saver_shared_objects(dist):
        try:
            with open(path, "rb") as fh:
                kinds[path] = classify_shared_object(fh.read())
        except OSError as exc:
            kinds[path] = f"unreadable ({exc.strerror or exc})"
    values = set(kinds.values())
    build = "ascend" if "ascend" in values else "cuda" if "cuda" in values else "unknown"
    return {
        "installed": True,
        "version": dist.version,
        "build": build,
        "shared_objects": kinds,
    }


def check_torch_memory_saver(info: dict[str, object], on_npu: bool) -> Verdict:
    if not info["installed"]:
        return Verdict(
            "torch-memory-saver",
            "info",
            "torch_memory_saver is not installed",
            "Not needed: npu-platform provides npu_platform.torch_memory_saver for sglang's "
            "memory saver on the NPU.",
        )
    version, build = info["version"], info["build"]
    if build == "ascend":
        return Verdict(
            "torch-memory-saver",
            "ok",
            f"torch_memory_saver {version} is the Ascend build",
            "Its shared objects reference the Ascend runtime (libascendcl).",
        )
    if build == "cuda":
        cuda_sos = [os.path.basename(p) for p, k in info["shared_objects"].items() if k == "cuda"]  # type: ignore[union-attr]
        detail = (
            f"torch_memory_saver {version} is the CUDA-only build: its shared object(s) "
            f"{', '.join(cuda_sos)} reference the CUDA runtime (libcuda/cudart/cuMem)."
        )
        if on_npu:
            return Verdict(
                "torch-memory-saver",
                "warn",
                "torch_memory_saver is the CUDA-only build",
                detail + " It cannot work on an Ascend NPU.",
                "npu-platform provides its own facade, npu_platform.torch_memory_saver; "
                "uninstall the CUDA build (`pip uninstall torch_memory_saver`) or install the "
                "Ascend port from sgl-kernel-npu.",
            )
        return Verdict(
            "torch-memory-saver", "info", "torch_memory_saver is the CUDA-only build", detail
        )
    return Verdict(
        "torch-memory-saver",
        "info",
        f"torch_memory_saver {version}: build not recognised",
        "None of its shared objects references libascendcl or the CUDA runtime.",
    )


# --------------------------------------------------------------------------- report


def _environment() -> dict[str, object]:
    names = sorted(n for n in os.environ if n.startswith(env.PREFIX))
    names += ["TORCH_DEVICE_BACKEND_AUTOLOAD", "ASCEND_RT_VISIBLE_DEVICES"]
    values: dict[str, object] = {name: os.environ.get(name) for name in names}
    values["torch_backend_autoload"] = torch_backend_autoload_enabled()
    return values


def run_checks() -> Report:
    """Inspect this process's environment (``os.environ``, ``sys.path``, ``PATH``)."""
    versions = collect_versions()
    verdicts = check_config()
    detection, detect_verdict = run_detect()
    if detect_verdict is not None:
        verdicts.append(detect_verdict)
    devices, devices_verdict = collect_devices(detection)
    verdicts.append(devices_verdict)

    cann_info = collect_cann()
    torch_npu_installed = versions["torch_npu"] is not None
    verdicts.append(check_cann(cann_info, torch_npu_installed))
    verdicts.append(check_cann_version(cann_info, torch_npu_installed))
    libraries: dict[str, str | None] = cann_info["libraries"]  # type: ignore[assignment]
    acl = cann.CANN_LIBRARIES[0]
    acl_library = cann.library_file(acl) if libraries[acl] else None
    cann_info["acl_vm"] = inspect_acl_vm(acl_library)
    verdicts.append(check_acl_vm(cann_info["acl_vm"]))  # type: ignore[arg-type]
    entry_points = torch_npu_autoload_entry_points() if versions["torch_npu"] else []
    cann_info["torch_npu_autoload_entry_points"] = entry_points
    autoload = check_autoload(versions["torch_npu"], cann_info, entry_points)
    if autoload is not None:
        verdicts.append(autoload)

    verdicts.append(check_torch_pair(versions["torch"], versions["torch_npu"]))
    for name in SUPPORTED:
        verdicts.append(check_framework(name, versions.get(name)))

    on_npu = detection.get("target") in ("real", "emulated")
    shim = inspect_alloc_shim()
    verdicts.append(check_alloc_shim(shim, on_npu))

    saver = inspect_torch_memory_saver()
    verdicts.append(check_torch_memory_saver(saver, on_npu))

    return Report(
        detect=detection,
        versions=versions,
        cann=cann_info,
        devices=devices,
        torch_memory_saver=saver,
        environment=_environment(),
        verdicts=verdicts,
        alloc_shim=shim,
    )


_TAGS = {"ok": "  ok ", "info": " info", "warn": " WARN", "error": "ERROR"}


def render_text(report: Report, width: int = 100) -> str:
    """The human-readable report."""
    out: list[str] = [f"npu-platform doctor (npu-platform {npu_platform.__version__})", ""]

    def row(key: str, value: object) -> None:
        out.append(f"  {key:<20} {value}")

    out.append("Versions")
    for key, value in report.versions.items():
        row(key, value if value is not None else "not installed")
    out.append("")
    out.append("CANN")
    for lib, where in report.cann["libraries"].items():  # type: ignore[union-attr]
        row(lib, where or "not found")
    version: dict[str, object] = report.cann["version"]  # type: ignore[assignment]
    row("version", version["version"] or "unknown")
    for key in ("ASCEND_HOME_PATH", "LD_LIBRARY_PATH"):
        row(key, report.cann[key] if report.cann[key] is not None else "(unset)")
    root = report.cann["default_root"]
    row(str(root), "present" if report.cann["default_root_exists"] else "absent")
    out.append("")
    out.append("Detection")
    row("target", report.detect["target"] or "undecided")
    row("devices", f"{report.devices['count']} (from {report.devices['source']})")

    def wrap(text: str, first: str, rest: int) -> None:
        out.extend(
            textwrap.wrap(
                text,
                width,
                initial_indent=first,
                subsequent_indent=" " * rest,
                break_long_words=False,
                break_on_hyphens=False,
            )
        )

    wrap(str(report.detect["reason"]), f"  {'reason':<20} ", 23)
    out.append("")
    out.append("Checks")
    for v in report.verdicts:
        wrap(v.title, f"  [{_TAGS[v.level]}] ", 10)
        wrap(v.detail, " " * 10, 10)
        if v.fix:
            wrap(v.fix, " " * 10 + "fix: ", 15)
    out.append("")
    counts = {level: sum(v.level == level for v in report.verdicts) for level in LEVELS}
    summary = f"{counts['error']} error(s), {counts['warn']} warning(s)"
    if report.ok:
        out.append(f"Result: the stack can work ({summary}).")
    else:
        out.append(f"Result: the stack cannot work ({summary}).")
    return "\n".join(out) + "\n"


def main(*, as_json: bool = False, stream: IO[str] | None = None) -> int:
    """Run the checks, print the report to ``stream`` (stdout), return the exit status."""
    report = run_checks()
    out = sys.stdout if stream is None else stream
    if as_json:
        out.write(json.dumps(report.as_dict(), indent=2) + "\n")
    else:
        out.write(render_text(report))
    out.flush()
    return report.exit_code
