"""sglang platform resolution with the plugin installed, in child interpreters.

Each scenario runs real sglang 0.5.23 in a fresh interpreter and prints a JSON report:
without an NPU, sglang resolves exactly what it resolves with our plugins excluded
(``SGLANG_PLUGINS`` allowlist); with the real-NPU condition (a fake ``torch_npu`` reporting
two devices plus fake CANN libraries, see ``tests/fakedist.py``) and on the emulated NPU
(``NPU_PLATFORM_EMULATE=1``: the emulated torch_npu, so ``torch.npu`` exists and sglang's
``is_npu()`` is True) it resolves our platform, and sglang's memory-saver adapter is backed
by npu_platform even with a CUDA ``torch_memory_saver`` installed. Scenarios that are
compared run concurrently.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.fakedist import (
    REPO_ROOT,
    make_dist,
    make_fake_cann,
    make_fake_torch_npu,
    subprocess_env,
)

OUR_PLATFORM = "npu_platform.sglang.platform.NPUPlatform"
SGLANG_NPU_PLATFORM = "sglang.srt.platforms.npu.NPUSRTPlatform"
EXCLUDE_OURS = "some_other_plugin"  # an SGLANG_PLUGINS allowlist without npu_platform
#: sglang as if npu-platform were not installed: our sglang plugins excluded and the
#: start-up hook (npu_platform-startup.pth, which also redirects torch_memory_saver) off.
WITHOUT_NPU_PLATFORM = {"SGLANG_PLUGINS": EXCLUDE_OURS, "NPU_PLATFORM_PATCHES": "0"}

FAKE_CUDA_TMS = '''\
"""Fake CUDA torch_memory_saver (tests/test_sglang_platform.py)."""
import contextlib

FLAVOR = "fake-cuda"


class TorchMemorySaver:
    enabled = True
    hook_mode = "preload"

    def region(self, tag="default", enable_cpu_backup=False):
        return contextlib.nullcontext()

    def cuda_graph(self, **kwargs):
        return contextlib.nullcontext()

    def pause(self, tag=None):
        pass

    def resume(self, tag=None):
        pass


torch_memory_saver = TorchMemorySaver()


@contextlib.contextmanager
def configure_subprocess():
    yield
'''

# Shared prologue: resolve sglang's platform and import its adapter, report both.
PROLOGUE = """\
import json, sys
report = {}
def name(obj):
    cls = obj if isinstance(obj, type) else type(obj)
    return cls.__module__ + "." + cls.__qualname__
import sglang.srt.platforms as platforms
report["platform"] = name(platforms.current_platform)
import sglang.srt.utils.torch_memory_saver_adapter as adapter
report["tms_file"] = getattr(adapter.torch_memory_saver, "__file__", None)
report["tms_name"] = adapter.torch_memory_saver.__name__
report["our_modules"] = sorted(m for m in sys.modules if m.startswith("npu_platform.sglang"))
report["finder"] = any(type(f).__module__ == "npu_platform.sglang.memory_saver"
                       for f in sys.meta_path)
"""

REAL_NPU_EXTRA = """\
import functools, os
from sglang.srt.plugins import load_plugins
from sglang.srt.plugins.hook_registry import HookRegistry
from npu_platform.sglang import memory_saver
cp = platforms.current_platform
from sglang.srt.platforms.npu import NPUSRTPlatform
report["subclass_of_npu"] = isinstance(cp, NPUSRTPlatform)
report["attention"] = cp.get_default_attention_backend()
report["is_npu"] = cp.is_npu()
report["out_of_tree"] = cp.is_out_of_tree()
a = adapter.TorchMemorySaverAdapter.create(enable=True)
report["adapter_backed"] = memory_saver.adapter_backed_by_manager(a)
report["import_tms_is_facade"] = __import__("torch_memory_saver") is sys.modules[
    "npu_platform.torch_memory_saver"]
# sglang's NPU graph backend passes the graph positionally: unpatched, that is a TypeError.
try:
    functools.partial(a.cuda_graph, tag="cuda_graph")(object(), pool=None, stream=None,
                                                      auto_dispatch_capture=True)
    report["positional_cuda_graph_before"] = "accepted"
except TypeError:
    report["positional_cuda_graph_before"] = "TypeError"
load_plugins()
report["hook_applied"] = memory_saver.CUDA_GRAPH_TARGET in HookRegistry._patched
fn = adapter._TorchMemorySaverAdapterReal.cuda_graph
report["cuda_graph_wraps"] = getattr(fn, "__wrapped__", None) is not None
# Server-argument defaults through sglang's own recorder.
from sglang.srt.server_args import ServerArgs
from sglang.srt.arg_groups.overrides import record_foreign_defaults, resolving_view
sa = ServerArgs(model_path="dummy", enable_memory_saver=True)
record_foreign_defaults(sa, "platform:npu", cp.apply_server_args_defaults)
report["declared"] = sa._resolved_overrides
report["device"] = resolving_view(sa).device
sa = ServerArgs(model_path="dummy", device="npu", enable_memory_saver=True)
record_foreign_defaults(sa, "platform:npu", cp.apply_server_args_defaults)
report["declared_for_device_npu"] = getattr(sa, "_resolved_overrides", [])
# SGLANG_PLATFORM selects us by entry-point name; sglang's CPU-engine opt-in still wins.
os.environ["SGLANG_PLATFORM"] = "npu_platform"
report["selected"] = name(platforms._resolve_platform())
del os.environ["SGLANG_PLATFORM"]
os.environ["SGLANG_USE_CPU_ENGINE"] = "1"
report["cpu_engine"] = name(platforms._resolve_platform())
"""

# The emulated NPU as sglang sees it: torch_npu (the emulation's), sglang's is_npu(), tensors.
EMULATED_EXTRA = """\
import torch
from sglang.srt.utils import is_npu as sglang_is_npu
report["torch_npu_file"] = getattr(sys.modules.get("torch_npu"), "__file__", None)
report["torch_has_npu"] = hasattr(torch, "npu")
report["sglang_is_npu"] = sglang_is_npu()
device_type = platforms.current_platform.device_type
report["tensor_device"] = torch.ones(2, device=device_type).device.type
"""

# Neither emulation nor torch_npu: what sglang sees of an NPU.
NO_NPU_EXTRA = """\
import importlib.util
from sglang.srt.utils import is_npu as sglang_is_npu
report["torch_npu_findable"] = importlib.util.find_spec("torch_npu") is not None
report["torch_npu_loaded"] = "torch_npu" in sys.modules
report["torch_has_npu"] = hasattr(sys.modules["torch"], "npu")
report["sglang_is_npu"] = sglang_is_npu()
"""

# Asking for our platform by name where there is no NPU: sglang's own clear error.
INERT_EXTRA = """\
import os
os.environ["SGLANG_PLATFORM"] = "npu_platform"
try:
    platforms._resolve_platform()
    report["selected_without_npu"] = "resolved"
except RuntimeError as exc:
    report["selected_without_npu"] = str(exc)
"""

EPILOGUE = 'print("REPORT " + json.dumps(report))\n'


def _start(script: str, env: dict[str, str], cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", script],
        env=env,
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _report(proc: subprocess.Popen[str]) -> dict:
    out, _ = proc.communicate(timeout=240)
    lines = [line for line in out.splitlines() if line.startswith("REPORT ")]
    assert proc.returncode == 0 and lines, f"child failed (rc={proc.returncode}):\n{out[-4000:]}"
    return json.loads(lines[-1][len("REPORT ") :])


def _run_all(scripts_envs: list[tuple[str, dict[str, str]]], cwd: Path) -> list[dict]:
    procs = [_start(script, env, cwd) for script, env in scripts_envs]
    return [_report(p) for p in procs]


@pytest.fixture(scope="module")
def fake_sites(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("sglang_sites")
    cuda_tms = root / "cuda_tms"
    make_dist(
        cuda_tms,
        "torch_memory_saver",
        "0.0.9",
        files={
            "torch_memory_saver/__init__.py": FAKE_CUDA_TMS,
            "torch_memory_saver_hook_mode_preload.abi3.so": b"\x7fELF\x00libcudart.so.12\x00",
        },
    )
    npu = root / "torch_npu"
    make_fake_torch_npu(npu, device_count=2)
    cann = make_fake_cann(root / "cann" / "lib64")
    return {"root": root, "cuda_tms": cuda_tms, "torch_npu": npu, "cann": cann}


def test_entry_points_return_none_cheaply_without_npu(tmp_path: Path) -> None:
    script = textwrap.dedent(
        """\
        import json, sys
        from npu_platform.entry_points import sglang as ep
        result = {"platform": ep.platform_plugin(), "register": ep.register()}
        result["torch"] = "torch" in sys.modules
        result["sglang"] = any(m == "sglang" or m.startswith("sglang.") for m in sys.modules)
        result["ours"] = sorted(m for m in sys.modules if m.startswith("npu_platform.sglang"))
        result["meta_path"] = [type(f).__module__ for f in sys.meta_path]
        print(json.dumps(result))
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script],
        env=subprocess_env(),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["platform"] is None
    assert result["register"] is None
    assert result["torch"] is False, "the no-NPU answer must not import torch"
    assert result["sglang"] is False
    assert result["ours"] == []
    assert "npu_platform.sglang.memory_saver" not in result["meta_path"]


def test_inert_without_npu_resolves_what_sglang_resolves_alone(
    fake_sites: dict[str, Path], tmp_path: Path
) -> None:
    """No NPU, a CUDA torch_memory_saver installed: identical with and without our plugin."""
    sites = [fake_sites["cuda_tms"]]
    with_plugin, without_plugin = _run_all(
        [
            (PROLOGUE + INERT_EXTRA + EPILOGUE, subprocess_env(sites)),
            (PROLOGUE + EPILOGUE, subprocess_env(sites, **WITHOUT_NPU_PLATFORM)),
        ],
        tmp_path,
    )
    assert with_plugin["platform"] == without_plugin["platform"]
    assert with_plugin["platform"] != OUR_PLATFORM
    # The CUDA memory saver stays the one sglang imports.
    cuda_file = str(fake_sites["cuda_tms"] / "torch_memory_saver" / "__init__.py")
    assert with_plugin["tms_file"] == without_plugin["tms_file"] == cuda_file
    assert with_plugin["tms_name"] == "torch_memory_saver"
    # Our entry point ran but installed nothing.
    assert with_plugin["finder"] is False
    assert with_plugin["our_modules"] == []
    assert "activate() returned None" in with_plugin["selected_without_npu"]


def test_real_npu_resolves_our_platform_and_memory_saver(
    fake_sites: dict[str, Path], tmp_path: Path
) -> None:
    """The real-NPU condition (fake torch_npu with 2 devices, fake CANN) plus a CUDA
    torch_memory_saver: ours is resolved; with ours excluded, sglang's in-tree NPU platform
    and the CUDA memory saver are what sglang would use."""
    sites = [fake_sites["cuda_tms"], fake_sites["torch_npu"]]
    npu_env = {"LD_LIBRARY_PATH": str(fake_sites["cann"])}
    ours, with_startup_hook, without = _run_all(
        [
            # Our sglang plugins alone (start-up hook off): they must be enough.
            (
                PROLOGUE + REAL_NPU_EXTRA + EPILOGUE,
                subprocess_env(sites, NPU_PLATFORM_PATCHES="0", **npu_env),
            ),
            # Everything npu-platform installs, as users have it.
            (PROLOGUE + EPILOGUE, subprocess_env(sites, **npu_env)),
            (PROLOGUE + EPILOGUE, subprocess_env(sites, **WITHOUT_NPU_PLATFORM, **npu_env)),
        ],
        tmp_path,
    )
    assert with_startup_hook["platform"] == OUR_PLATFORM
    assert with_startup_hook["tms_name"] == "npu_platform.torch_memory_saver"

    # Without our plugin: sglang's fallback NPU platform and the CUDA torch_memory_saver.
    assert without["platform"] == SGLANG_NPU_PLATFORM
    assert without["tms_name"] == "torch_memory_saver"
    assert without["our_modules"] == []

    # With it: our platform, still in-tree NPU to sglang.
    assert ours["platform"] == OUR_PLATFORM
    assert ours["subclass_of_npu"] is True
    assert ours["attention"] == "ascend"
    assert ours["is_npu"] is True
    assert ours["out_of_tree"] is False
    assert ours["selected"] == OUR_PLATFORM
    assert ours["cpu_engine"] == "sglang.srt.platforms.cpu.CpuSRTPlatform"

    # sglang's adapter is backed by npu_platform, not the CUDA package on the path.
    assert ours["tms_name"] == "npu_platform.torch_memory_saver"
    assert ours["finder"] is True
    assert ours["import_tms_is_facade"] is True
    assert ours["adapter_backed"] is True

    # The graph-capture call shape of sglang's NPU backend needs our hook.
    assert ours["positional_cuda_graph_before"] == "TypeError"
    assert ours["hook_applied"] is True
    assert ours["cuda_graph_wraps"] is True

    # apply_server_args_defaults ran through sglang's recorder and was accepted.
    assert ours["device"] == "npu"
    assert ["platform:npu", {"device": "npu"}] in ours["declared"]
    assert ours["declared_for_device_npu"] == []  # --device npu: nothing to default


def test_emulated_npu_resolves_our_platform(fake_sites: dict[str, Path], tmp_path: Path) -> None:
    """With NPU_PLATFORM_EMULATE=1, sglang's own ``current_platform`` is our NPUPlatform (an
    ``NPUSRTPlatform``), as on a real NPU, with or without the start-up hook; without
    emulation and without torch_npu it is what sglang resolves with our plugin excluded."""
    sites = [fake_sites["cuda_tms"]]
    emulated = {"NPU_PLATFORM_EMULATE": "1"}
    ours, as_installed, without_npu, without_npu_or_plugin = _run_all(
        [
            # Our sglang plugins alone (start-up hook off), with every real-NPU check.
            (
                PROLOGUE + EMULATED_EXTRA + REAL_NPU_EXTRA + EPILOGUE,
                subprocess_env(sites, NPU_PLATFORM_PATCHES="0", **emulated),
            ),
            # Everything npu-platform installs, as users have it.
            (PROLOGUE + EMULATED_EXTRA + EPILOGUE, subprocess_env(sites, **emulated)),
            (PROLOGUE + NO_NPU_EXTRA + EPILOGUE, subprocess_env(sites)),
            (PROLOGUE + NO_NPU_EXTRA + EPILOGUE, subprocess_env(sites, **WITHOUT_NPU_PLATFORM)),
        ],
        tmp_path,
    )
    emulated_torch_npu = str(REPO_ROOT / "npu_platform/emulation/site/torch_npu/__init__.py")
    for report in (ours, as_installed):
        # sglang's own resolution, on the emulated torch_npu.
        assert report["platform"] == OUR_PLATFORM
        assert report["torch_npu_file"] == emulated_torch_npu
        assert report["torch_has_npu"] is True
        assert report["sglang_is_npu"] is True
        assert report["tensor_device"] == "npu"
        # sglang's adapter is backed by npu_platform, not the CUDA package on the path.
        assert report["tms_name"] == "npu_platform.torch_memory_saver"
        assert report["finder"] is True

    # Everything the real-NPU condition gives, the emulated NPU gives too.
    assert ours["subclass_of_npu"] is True
    assert ours["attention"] == "ascend"
    assert ours["is_npu"] is True
    assert ours["out_of_tree"] is False
    assert ours["selected"] == OUR_PLATFORM
    assert ours["cpu_engine"] == "sglang.srt.platforms.cpu.CpuSRTPlatform"
    assert ours["import_tms_is_facade"] is True
    assert ours["adapter_backed"] is True
    assert ours["positional_cuda_graph_before"] == "TypeError"
    assert ours["hook_applied"] is True
    assert ours["cuda_graph_wraps"] is True
    assert ours["device"] == "npu"
    assert ["platform:npu", {"device": "npu"}] in ours["declared"]

    # No emulation, no torch_npu: no NPU anywhere, and our plugin changes nothing.
    for report in (without_npu, without_npu_or_plugin):
        assert report["torch_npu_findable"] is False
        assert report["torch_npu_loaded"] is False
        assert report["torch_has_npu"] is False
        assert report["sglang_is_npu"] is False
    assert without_npu["platform"] == without_npu_or_plugin["platform"]
    assert without_npu["platform"] != OUR_PLATFORM
    assert without_npu["tms_file"] == without_npu_or_plugin["tms_file"]
    assert without_npu["tms_name"] == "torch_memory_saver"
    assert without_npu["finder"] is False
    assert without_npu["our_modules"] == []


DEFERRED = """\
import json, sys
from npu_platform.sglang import memory_saver as ms
r = {"installed": ms.install(defer_detection=True)}
r["torch_imported"] = "torch" in sys.modules
import torch_memory_saver
r["module"] = getattr(torch_memory_saver, "FLAVOR", torch_memory_saver.__name__)
print(json.dumps(r))
"""

REBIND = """\
import json, sys
import torch_memory_saver as first
from npu_platform.sglang import memory_saver as ms
r = {"first": getattr(first, "FLAVOR", first.__name__), "installed": ms.install()}
now = sys.modules["torch_memory_saver"]
r["module"] = getattr(now, "FLAVOR", now.__name__)
print(json.dumps(r))
"""


@pytest.mark.parametrize("emulate", [False, True], ids=["no-npu", "emulated"])
def test_start_up_hook_modes(fake_sites: dict[str, Path], tmp_path: Path, emulate: bool) -> None:
    """install(defer_detection=True), for a start-up hook in every process: no torch import,
    and the CUDA torch_memory_saver stays where there is no NPU. install() after a CUDA
    torch_memory_saver was imported rebinds it on an NPU only."""
    # The start-up hook (which calls the same install()) is off, to see ours alone.
    env = subprocess_env(
        [fake_sites["cuda_tms"]],
        NPU_PLATFORM_PATCHES="0",
        **({"NPU_PLATFORM_EMULATE": "1"} if emulate else {}),
    )
    results = []
    for script in (DEFERRED, REBIND):
        out = subprocess.run(
            [sys.executable, "-c", script],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert out.returncode == 0, out.stderr
        results.append(json.loads(out.stdout.strip().splitlines()[-1]))
    deferred, rebind = results
    expected = "npu_platform.torch_memory_saver" if emulate else "fake-cuda"
    assert deferred == {"installed": True, "torch_imported": False, "module": expected}
    assert rebind == {"first": "fake-cuda", "installed": emulate, "module": expected}


CHOICE = """\
import json, logging, sys
records = []
class Keep(logging.Handler):
    def emit(self, record):
        records.append((record.levelname, record.getMessage()))
log = logging.getLogger("npu_platform.sglang")
log.addHandler(Keep())
log.setLevel(logging.DEBUG)
from npu_platform.sglang import memory_saver as ms
r = {}
try:
    ms.install()
    import torch_memory_saver as first
    del sys.modules["torch_memory_saver"]
    import torch_memory_saver as second  # a second import decides again, logs nothing new
    r["module"] = getattr(second, "FLAVOR", second.__name__)
    r["same"] = getattr(first, "FLAVOR", first.__name__) == r["module"]
except Exception as exc:
    r["error"] = type(exc).__name__ + ": " + str(exc)
r["log"] = [m for m in records if "torch_memory_saver is" in m[1]]
print(json.dumps(r))
"""


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        (None, "npu_platform.torch_memory_saver"),
        ("npu_platform", "npu_platform.torch_memory_saver"),
        ("installed", "fake-cuda"),
        ("cuda", None),
    ],
    ids=["default", "npu_platform", "installed", "bad-value"],
)
def test_memory_saver_choice_is_deliberate_logged_once_and_overridable(
    fake_sites: dict[str, Path], tmp_path: Path, choice: str | None, expected: str | None
) -> None:
    """On an NPU with another torch_memory_saver installed, npu-platform's is chosen unless
    NPU_PLATFORM_TORCH_MEMORY_SAVER=installed; the choice is logged once per process."""
    extra = {"NPU_PLATFORM_EMULATE": "1", "NPU_PLATFORM_PATCHES": "0"}
    if choice is not None:
        extra["NPU_PLATFORM_TORCH_MEMORY_SAVER"] = choice
    out = subprocess.run(
        [sys.executable, "-c", CHOICE],
        env=subprocess_env([fake_sites["cuda_tms"]], **extra),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    r = json.loads(out.stdout.strip().splitlines()[-1])
    cuda_file = str(fake_sites["cuda_tms"] / "torch_memory_saver" / "__init__.py")
    if expected is None:
        assert "NPU_PLATFORM_TORCH_MEMORY_SAVER='cuda' is not valid" in r["error"]
        assert "npu_platform, installed" in r["error"]
        return
    assert r["module"] == expected and r["same"] is True
    assert len(r["log"]) == 1, r["log"]
    level, message = r["log"][0]
    assert level == "INFO" and cuda_file in message
    if expected == "fake-cuda":
        assert "installed package" in message
    else:
        assert "is not used on this NPU (set NPU_PLATFORM_TORCH_MEMORY_SAVER=installed" in message
