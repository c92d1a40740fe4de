"""The start-up hook: installed by the .pth file, cheap when inactive, switchable, logged.

Every test runs a child interpreter of this virtual environment, whose site-packages holds
``npu_platform-startup.pth`` (``pip install -e .`` puts it there), so the hook runs exactly
as it does for users.
"""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
import sysconfig
import textwrap
import zipfile
from pathlib import Path

import pytest

from tests.fakedist import REPO_ROOT, make_dist, make_fake_cann, subprocess_env

PTH_NAME = "npu_platform-startup.pth"
#: What the .pth imports: the emulated NPU's hook, then the patches' hook (each with its
#: package, which import nothing themselves).
HOOK_MODULES = {
    "npu_platform",
    "npu_platform.emulation",
    "npu_platform.emulation.boot",
    "npu_platform.patches",
    "npu_platform.patches._boot",
}
#: torch's device-backend autoload entry point (group ``torch.backends``), which ``import
#: torch`` loads and calls in every process; with emulation off it returns at once.
AUTOLOAD_MODULE = "npu_platform.emulation.autoload"
INACTIVE_BUDGET_S = 0.005
#: What a program written for CUDA (dInfer) asks for: the default set plus ``cuda``.
CUDA_PROGRAM_PATCHES = "cuda,distributed,flash_attn,torch_memory_saver"


def pth_content() -> str:
    """PTH_CONTENT as setup.py defines it (read, not executed)."""
    tree = ast.parse((REPO_ROOT / "setup.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "PTH_CONTENT":
            return ast.literal_eval(node.value)
    raise AssertionError("setup.py defines no PTH_CONTENT")


def run_python(code: str, *args: str, site_dirs=(), **env: str | None):
    return subprocess.run(
        [sys.executable, *args, "-c", textwrap.dedent(code)],
        env=subprocess_env(site_dirs, **env),
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def run_json(code: str, *args: str, site_dirs=(), **env: str | None) -> dict:
    proc = run_python(code, *args, site_dirs=site_dirs, **env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["stderr"] = proc.stderr
    return result


# ---------------------------------------------------------------------------- installation


def test_pth_file_is_installed_in_site_packages():
    site = Path(sysconfig.get_paths()["purelib"])
    pth = site / PTH_NAME
    assert pth.is_file(), (
        f"{pth} is missing: reinstall the project (pip install --no-deps -e .) so that "
        "setup.py's build_pth command ships it"
    )
    assert pth.read_text() == pth_content()
    # site.py runs .pth files in name order: the editable finder's must come first.
    editable = sorted(p.name for p in site.glob("__editable__*npu_platform*.pth"))
    assert all(name < PTH_NAME for name in editable)


@pytest.mark.slow
def test_wheel_ships_the_pth_at_its_root(tmp_path):
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q"]
        + ["-w", str(tmp_path), str(REPO_ROOT)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert build.returncode == 0, build.stdout + build.stderr
    (wheel,) = tmp_path.glob("npu_platform-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        assert zf.read(PTH_NAME).decode() == pth_content()
        record = zf.read(next(n for n in names if n.endswith(".dist-info/RECORD"))).decode()
    assert PTH_NAME in names  # purelib root = the top of site-packages
    assert f"{PTH_NAME}," in record  # so pip uninstall removes it
    assert not any(n.startswith("patches/") for n in names)
    assert "npu_platform/patches/_boot.py" in names


# ---------------------------------------------------------------------------- inactive cost

# Times how long site.py spends on each .pth file: the cost of our hook is the time of ours.
SITE_TIMING = """
import json, site, sys, time
times = {}
original = site.addpackage
def timed(sitedir, name, known_paths):
    start = time.perf_counter()
    try:
        return original(sitedir, name, known_paths)
    finally:
        times[name] = times.get(name, 0.0) + time.perf_counter() - start
site.addpackage = timed
site.main()
finder = [type(f).__name__ for f in sys.meta_path if type(f).__name__ == "StartupFinder"]
boot = sys.modules.get("npu_platform.emulation.boot")
print(json.dumps({"pth_s": times.get("@PTH@"), "finder": finder,
                  "modules": sorted(m for m in sys.modules if m.startswith("npu_platform")),
                  "emulated_site": boot is not None and boot.SITE in sys.path}))
""".replace("@PTH@", PTH_NAME)


def pth_cost(runs: int = 7, **env: str | None) -> tuple[float, dict]:
    """min over ``runs`` fresh interpreters (-S, then site.main()) of our .pth's time."""
    best, last = float("inf"), {}
    for _ in range(runs):
        # bytecode caches stay on, as for users (subprocess_env turns them off); no coverage
        # tracer (the test command's, started by its own .pth), which users do not run
        last = run_json(
            SITE_TIMING,
            "-S",
            PYTHONDONTWRITEBYTECODE=None,
            PYTHONPATH=None,
            COVERAGE_PROCESS_START=None,
            COVERAGE_PROCESS_CONFIG=None,
            **env,
        )
        assert last["pth_s"] is not None, f"{PTH_NAME} was not processed: {last}"
        best = min(best, last["pth_s"])
    return best, last


def test_inactive_hook_costs_under_5ms():
    """The whole .pth (the emulated NPU's hook and the patches' hook) stays under 5 ms."""
    best, last = pth_cost()
    assert last["finder"] == ["StartupFinder"]
    assert set(last["modules"]) == HOOK_MODULES
    assert last["emulated_site"] is False
    assert best < INACTIVE_BUDGET_S, f"start-up hook took {best * 1e3:.2f} ms (min of 7)"
    # With emulation on, start-up does the same, plus one sys.path entry (detection and the
    # emulated torch_npu wait for the first import).
    best_active, last = pth_cost(NPU_PLATFORM_EMULATE="1")
    assert set(last["modules"]) == HOOK_MODULES
    assert last["emulated_site"] is True
    assert best_active < INACTIVE_BUDGET_S, f"{best_active * 1e3:.2f} ms"


IMPORT_TORCH_STATE = """
import json, sys, time
start = time.perf_counter()
import torch
elapsed = time.perf_counter() - start
print(json.dumps({
    "finder": [type(f).__name__ for f in sys.meta_path if type(f).__name__ == "StartupFinder"],
    "modules": sorted(m for m in sys.modules if m.startswith("npu_platform")),
    "torch_npu": sorted(m for m in sys.modules if m.partition(".")[0] == "torch_npu"),
    "cuda_devices": torch.cuda.device_count(),
    "import_torch_s": elapsed,
}))
"""


def test_inactive_import_torch_loads_nothing_beyond_the_hook():
    proc = run_python(IMPORT_TORCH_STATE, "-X", "importtime")
    assert proc.returncode == 0, proc.stderr
    state = json.loads(proc.stdout.strip().splitlines()[-1])
    imported = {
        line.rsplit("|", 1)[1].strip()
        for line in proc.stderr.splitlines()
        if line.startswith("import time:") and "|" in line
    }
    assert "torch" in imported
    # -X importtime lists import statements; torch loads its autoload entry points with
    # importlib (entry_points().load()), which it may not list.
    ours = {name for name in imported if name.startswith("npu_platform")}
    assert HOOK_MODULES <= ours <= HOOK_MODULES | {AUTOLOAD_MODULE}, sorted(ours)
    assert state["modules"] == sorted(HOOK_MODULES | {AUTOLOAD_MODULE})
    assert state["torch_npu"] == []
    assert state["finder"] == []  # decided "no NPU" at `import torch` and removed itself
    assert state["cuda_devices"] == 0


# ---------------------------------------------------------------------------- switches

PROBE = """
import json, logging, sys
logging.basicConfig(level=logging.INFO, stream=sys.stderr)
import torch
import torch.distributed as dist
def origin(name):
    try:
        module = __import__(name, fromlist=["_"])
    except ImportError as exc:
        return f"{type(exc).__name__}: {exc}"
    return module.__name__
print(json.dumps({
    "cuda_devices": torch.cuda.device_count(),
    "cuda_available": torch.cuda.is_available(),
    "transfer_to_npu": "torch_npu.contrib.transfer_to_npu" in sys.modules,
    "jit_script": torch.jit.script is torch.jit._script.script,
    "dist_patched": bool(getattr(dist.init_process_group, "__npu_platform_patched__", False)),
    "flash_attn": origin("flash_attn"),
    "bert_padding": origin("flash_attn.bert_padding"),
    "torch_memory_saver": origin("torch_memory_saver"),
    "caching_allocator": (lambda f: f() if f else None)(
        getattr(torch._C, "_cuda_cudaCachingAllocator_is_enabled", None)
    ),
}))
"""


def test_active_on_the_emulated_npu():
    """The default set: imports and backends are rewritten, torch.cuda is left alone."""
    state = run_json(PROBE, NPU_PLATFORM_EMULATE="1")
    assert state["cuda_available"] is False and state["cuda_devices"] == 0
    assert state["caching_allocator"] is None
    assert state["transfer_to_npu"] is False and state["jit_script"] is True
    assert state["dist_patched"] is True
    assert state["flash_attn"] == "npu_platform.patches.flash_attn"
    assert state["bert_padding"] == "npu_platform.patches.bert_padding"
    assert state["torch_memory_saver"] == "npu_platform.torch_memory_saver"


def test_cuda_patch_on_the_emulated_npu_is_transfer_to_npu():
    """Asked for by name (as dInfer does), ``cuda`` is torch_npu's transfer_to_npu, with its
    process-wide side effects; the other patches act as in the default set."""
    state = run_json(PROBE, NPU_PLATFORM_EMULATE="1", NPU_PLATFORM_PATCH_ONLY=CUDA_PROGRAM_PATCHES)
    assert state["cuda_available"] is True and state["cuda_devices"] == 1
    # inductor's CUDA-graph check (mode="reduce-overhead") asks this binding once
    # torch.cuda.is_available(); a torch without CUDA lacks it, the patch answers for the NPU.
    assert state["caching_allocator"] is True
    assert state["transfer_to_npu"] is True and state["jit_script"] is False
    assert state["dist_patched"] is True
    assert state["flash_attn"] == "npu_platform.patches.flash_attn"
    assert state["bert_padding"] == "npu_platform.patches.bert_padding"
    assert state["torch_memory_saver"] == "npu_platform.torch_memory_saver"


def test_opt_out_disables_everything():
    state = run_json(PROBE, NPU_PLATFORM_EMULATE="1", NPU_PLATFORM_PATCHES="0")
    assert state["cuda_devices"] == 0
    assert state["dist_patched"] is False
    assert state["flash_attn"] == "ModuleNotFoundError: No module named 'flash_attn'"
    assert state["torch_memory_saver"].startswith("ModuleNotFoundError")
    assert "npu_platform.patches" not in state["stderr"]


def test_patch_only_selects_patches():
    state = run_json(PROBE, NPU_PLATFORM_EMULATE="1", NPU_PLATFORM_PATCH_ONLY="flash_attn")
    assert state["flash_attn"] == "npu_platform.patches.flash_attn"
    assert state["cuda_devices"] == 0
    assert state["dist_patched"] is False
    assert state["torch_memory_saver"].startswith("ModuleNotFoundError")
    state = run_json(PROBE, NPU_PLATFORM_EMULATE="1", NPU_PLATFORM_PATCH_ONLY="cuda, distributed")
    assert state["cuda_devices"] == 1 and state["transfer_to_npu"] is True
    # transfer_to_npu rebinds torch.distributed.init_process_group first; ours wraps that too.
    assert state["dist_patched"] is True
    assert state["flash_attn"].startswith("ModuleNotFoundError")


@pytest.mark.parametrize(
    ("name", "value", "accepted"),
    [
        ("NPU_PLATFORM_PATCH_ONLY", "cuda,bogus", "a comma-separated subset of: cuda"),
        ("NPU_PLATFORM_PATCHES", "maybe", "1/0"),
        ("NPU_PLATFORM_EMULATE", "perhaps", "1/0"),
    ],
)
def test_bad_values_warn_and_patch_nothing(name, value, accepted):
    env = {"NPU_PLATFORM_EMULATE": "1", name: value}
    state = run_json(PROBE, **env)
    assert state["cuda_devices"] == 0
    assert state["flash_attn"].startswith("ModuleNotFoundError")
    warning = [line for line in state["stderr"].splitlines() if "not applied" in line]
    assert len(warning) == 1, state["stderr"]
    assert f"{name}={value!r}" in warning[0] and accepted in warning[0]


@pytest.mark.parametrize(
    ("only", "level", "expected"),
    [
        (None, "INFO", ["distributed", "flash_attn", "torch_memory_saver"]),
        (
            CUDA_PROGRAM_PATCHES,
            "WARNING",
            ["cuda", "distributed", "flash_attn", "torch_memory_saver"],
        ),
    ],
)
def test_each_applied_patch_is_logged_once(only, level, expected):
    """One "active" line per process, at WARNING when ``cuda`` changes torch.cuda for the whole
    program and at INFO otherwise; one INFO line per applied patch."""
    code = PROBE + textwrap.dedent(
        """
        import importlib
        for name in ("flash_attn", "torch_memory_saver"):
            sys.modules.pop(name, None)
            importlib.import_module(name)
        """
    )
    state = run_json(code, NPU_PLATFORM_EMULATE="1", NPU_PLATFORM_PATCH_ONLY=only)
    lines = [line for line in state["stderr"].splitlines() if "npu_platform.patches" in line]
    patches = sorted(m.group(1) for line in lines if (m := re.search(r"patch (\w+):", line)))
    assert patches == expected, lines
    assert all(line.startswith("INFO:") for line in lines if re.search(r"patch \w+:", line))
    active = [line for line in lines if "start-up patches active on the emulated NPU" in line]
    assert active == [
        f"{level}:npu_platform.patches:npu_platform start-up patches active on the emulated "
        f"NPU: {', '.join(expected)}"
    ], lines


# ---------------------------------------------------------------------------- one redirect

FAKE_CUDA_TMS = {
    "torch_memory_saver/__init__.py": 'FLAVOR = "fake-cuda"\n',
    "torch_memory_saver/hooks.py": 'FLAVOR = "fake-cuda hooks"\n',
}

ONE_REDIRECT = """
import importlib, json, logging, sys
logging.basicConfig(level=logging.INFO, stream=sys.stderr)

def flavor(module):
    return getattr(module, "FLAVOR", module.__name__)

def qualname(finder):
    cls = finder if isinstance(finder, type) else type(finder)
    return f"{cls.__module__}.{cls.__qualname__}"

def answering(fullname):
    found = []
    for finder in list(sys.meta_path):
        find_spec = getattr(finder, "find_spec", None)
        if find_spec is not None and find_spec(fullname, None) is not None:
            found.append(qualname(finder))
    return found

if @FIRST@ == "torch_memory_saver":
    import torch_memory_saver as first
else:
    import torch
    first = sys.modules.get("torch_memory_saver")
from npu_platform.entry_points import sglang as entry_points
platform = entry_points.platform_plugin()
if @REGISTER@:
    entry_points.register()
import torch_memory_saver as after
sys.modules.pop("torch_memory_saver")
again = importlib.import_module("torch_memory_saver")
try:
    import torch_memory_saver.hooks as hooks
    submodule = flavor(hooks)
except ImportError as exc:
    submodule = f"{type(exc).__name__}: {exc}"
print(json.dumps({
    "first": None if first is None else flavor(first),
    "platform": platform,
    "after": flavor(after),
    "again": flavor(again),
    "submodule": submodule,
    "answering": answering("torch_memory_saver"),
    "redirects": sum(qualname(f) == "@REDIRECT@" for f in sys.meta_path),
}))
"""
REDIRECT_FINDER = "npu_platform.sglang.memory_saver._TorchMemorySaverRedirect"
FACADE = "npu_platform.torch_memory_saver"


@pytest.mark.parametrize(
    ("first", "register", "env", "expected_first"),
    [
        # The start-up hook decides during the first `import torch_memory_saver`.
        ("torch_memory_saver", True, {"NPU_PLATFORM_EMULATE": "1"}, FACADE),
        # ... or at `import torch`, before sglang's entry point runs.
        ("torch", False, {"NPU_PLATFORM_EMULATE": "1"}, None),
        # Start-up patch not selected: the sglang entry point alone installs (and rebinds).
        (
            "torch_memory_saver",
            False,
            {"NPU_PLATFORM_EMULATE": "1", "NPU_PLATFORM_PATCH_ONLY": "flash_attn"},
            "fake-cuda",
        ),
        # No NPU: nothing is redirected, by either path.
        ("torch_memory_saver", False, {}, "fake-cuda"),
    ],
    ids=["emulated-tms-first", "emulated-torch-first", "emulated-patch-not-selected", "no-npu"],
)
def test_one_finder_redirects_torch_memory_saver(tmp_path, first, register, env, expected_first):
    """The start-up patch and sglang's entry points share one redirect: after both ran, one
    npu_platform object on ``sys.meta_path`` answers ``torch_memory_saver`` (ahead of the
    installed CUDA package), and the import gives npu_platform's facade; without an NPU,
    none does."""
    site = tmp_path / "site"
    make_dist(site, "torch_memory_saver", "0.0.9", files=FAKE_CUDA_TMS)
    code = (
        ONE_REDIRECT.replace("@FIRST@", repr(first))
        .replace("@REGISTER@", repr(register))
        .replace("@REDIRECT@", REDIRECT_FINDER)
    )
    state = run_json(code, site_dirs=[site], **env)
    ours = [name for name in state["answering"] if name.startswith("npu_platform")]
    log = [line for line in state["stderr"].splitlines() if "patch torch_memory_saver:" in line]
    assert state["first"] == expected_first
    if "NPU_PLATFORM_EMULATE" not in env:
        assert state["platform"] is None
        assert ours == [] and state["redirects"] == 0
        assert state["after"] == state["again"] == "fake-cuda"
        assert state["submodule"] == "fake-cuda hooks"
        assert log == []
        return
    assert state["platform"] == "npu_platform.sglang.platform.NPUPlatform"
    assert ours == [REDIRECT_FINDER] and state["redirects"] == 1, state["answering"]
    assert state["answering"][0] == REDIRECT_FINDER  # ahead of the CUDA package's finder
    assert state["after"] == state["again"] == FACADE
    assert state["submodule"].startswith("ModuleNotFoundError"), state["submodule"]
    assert "is not a package" in state["submodule"]
    selected = "NPU_PLATFORM_PATCH_ONLY" not in env
    assert len(log) == (1 if selected else 0), state["stderr"]


# ---------------------------------------------------------------------------- real NPU path

FAKE_TORCH_NPU = """
import types
import torch

class NPUGraph:
    pass

def graph(npu_graph, pool=None, stream=None, auto_dispatch_capture=False,
          capture_error_mode="global"):
    return ("npu.graph", npu_graph, pool, stream, auto_dispatch_capture, capture_error_mode)

torch.npu = types.SimpleNamespace(
    device_count=lambda: 2, is_available=lambda: True, current_device=lambda: 0,
    NPUGraph=NPUGraph, graph=graph,
)

def _autoload():
    pass
"""

FAKE_TRANSFER = """
import torch
torch.cuda.is_available = torch.npu.is_available
torch.fake_transfer_to_npu_applied = True
"""


@pytest.fixture
def fake_ascend(tmp_path) -> dict:
    """A (fake) torch_npu reporting 2 NPUs, autoloaded by torch, and (fake) CANN libraries."""
    site = tmp_path / "site"
    make_dist(
        site,
        "torch_npu",
        "2.13.0",
        files={
            "torch_npu/__init__.py": FAKE_TORCH_NPU,
            "torch_npu/contrib/__init__.py": "",
            "torch_npu/contrib/transfer_to_npu.py": FAKE_TRANSFER,
        },
        entry_points="[torch.backends]\ntorch_npu = torch_npu:_autoload\n",
    )
    cann = make_fake_cann(tmp_path / "cann")
    return {"site_dirs": [site], "LD_LIBRARY_PATH": str(cann)}


def test_real_npu_path_delegates_to_transfer_to_npu(fake_ascend):
    code = """
        import json, sys
        import torch
        import torch.distributed as dist
        try:
            dist.init_process_group("nccl", store=dist.HashStore(), rank=0, world_size=1)
        except Exception as exc:
            dist_error = f"{type(exc).__name__}: {exc}"
        import flash_attn, torch_memory_saver
        print(json.dumps({
            "transfer": getattr(torch, "fake_transfer_to_npu_applied", False),
            "graph_alias": torch.cuda.CUDAGraph is torch.npu.NPUGraph,
            "graph_call": list(torch.cuda.graph("g", "pool", "stream", "global")),
            "dist_error": dist_error,
            "flash_attn": flash_attn.__name__,
            "torch_memory_saver": torch_memory_saver.__name__,
        }))
    """
    state = run_json(code, **fake_ascend, NPU_PLATFORM_PATCH_ONLY=CUDA_PROGRAM_PATCHES)
    assert state["transfer"] is True
    assert state["graph_alias"] is True
    assert state["graph_call"] == ["npu.graph", "g", "pool", "stream", False, "global"]
    assert "hccl" in state["dist_error"], state["dist_error"]
    assert state["flash_attn"] == "npu_platform.patches.flash_attn"
    assert state["torch_memory_saver"] == "npu_platform.torch_memory_saver"


def test_real_npu_default_set_leaves_torch_cuda_alone(fake_ascend):
    code = """
        import json, sys
        import torch
        import torch.distributed as dist
        try:
            dist.init_process_group("nccl", store=dist.HashStore(), rank=0, world_size=1)
        except Exception as exc:
            dist_error = f"{type(exc).__name__}: {exc}"
        import flash_attn, torch_memory_saver
        print(json.dumps({
            "transfer": getattr(torch, "fake_transfer_to_npu_applied", False),
            "transfer_module": "torch_npu.contrib.transfer_to_npu" in sys.modules,
            "graph_alias": torch.cuda.CUDAGraph is torch.npu.NPUGraph,
            "dist_error": dist_error,
            "flash_attn": flash_attn.__name__,
            "torch_memory_saver": torch_memory_saver.__name__,
        }))
    """
    state = run_json(code, **fake_ascend)
    assert state["transfer"] is False and state["transfer_module"] is False
    assert state["graph_alias"] is False
    assert "hccl" in state["dist_error"], state["dist_error"]
    assert state["flash_attn"] == "npu_platform.patches.flash_attn"
    assert state["torch_memory_saver"] == "npu_platform.torch_memory_saver"
    assert "WARNING" not in state["stderr"]


def test_detection_that_imports_torch_does_not_deadlock(fake_ascend):
    """detect() imports torch on Ascend machines; the torch hook then runs inside it.

    The decision waits for the next watched import (here flash_attn), which also patches the
    torch that was imported meanwhile.
    """
    code = """
        import json, sys
        from npu_platform.detect import detect
        target = detect().target.value
        import torch
        before = getattr(torch, "fake_transfer_to_npu_applied", False)
        import flash_attn
        print(json.dumps({
            "target": target,
            "before": before,
            "after": getattr(torch, "fake_transfer_to_npu_applied", False),
            "graph_alias": torch.cuda.CUDAGraph is torch.npu.NPUGraph,
        }))
    """
    state = run_json(code, **fake_ascend, NPU_PLATFORM_PATCH_ONLY=CUDA_PROGRAM_PATCHES)
    assert state == {
        "target": "real",
        "before": False,
        "after": True,
        "graph_alias": True,
        "stderr": state["stderr"],
    }


# ---------------------------------------------------------------------------- vLLM / sglang


@pytest.mark.slow
def test_vllm_and_sglang_process_groups_use_hccl_on_the_emulated_npu():
    code = """
        import json, socket
        import torch

        def port():
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                return s.getsockname()[1]

        from vllm.config import VllmConfig, set_current_vllm_config
        from vllm.distributed import (get_tp_group, init_distributed_environment,
                                      initialize_model_parallel)
        init_distributed_environment(1, 0, f"tcp://127.0.0.1:{port()}", 0, "nccl")
        vllm_world = torch.distributed.get_backend()
        with set_current_vllm_config(VllmConfig()):
            initialize_model_parallel(1, 1, backend="nccl")
        vllm_tp = torch.distributed.get_backend(get_tp_group().device_group)
        torch.distributed.destroy_process_group()

        import sglang.srt.distributed as sgl
        from sglang.srt.distributed import parallel_state as sgl_ps
        sgl.init_distributed_environment(
            world_size=1, rank=0, distributed_init_method=f"tcp://127.0.0.1:{port()}",
            local_rank=0, backend="nccl")
        print(json.dumps({
            "vllm_world": vllm_world,
            "vllm_tp": vllm_tp,
            "sglang_world": torch.distributed.get_backend(),
            "sglang_reexported": sgl.initialize_model_parallel
                is sgl_ps.initialize_model_parallel,
            "sglang_patched": getattr(sgl_ps.initialize_model_parallel,
                                      "__npu_platform_patched__", False),
        }))
    """
    state = run_json(code, NPU_PLATFORM_EMULATE="1")
    assert state["vllm_world"] == state["vllm_tp"] == state["sglang_world"] == "hccl"
    assert state["sglang_reexported"] is True and state["sglang_patched"] is True


# What vLLM's and sglang's own processes see: the platform each resolves (ours, through its
# plugin entry point), torch.cuda and torch.jit.script, and whether the patches act.
FRAMEWORK_IMPORTS = {
    "vllm": "from vllm.platforms import current_platform\n"
    "import vllm.distributed.parallel_state as parallel_state\n",
    "sglang": "from sglang.srt.platforms import current_platform\n"
    "import sglang.srt.distributed.parallel_state as parallel_state\n",
}
FRAMEWORK_PROBE = """
import json, sys
import torch
@IMPORTS@
import torch.distributed as dist
import flash_attn
scripted = torch.jit.script(torch.nn.Linear(2, 2))
print(json.dumps({
    "platform": f"{type(current_platform).__module__}.{type(current_platform).__qualname__}",
    "cuda_available": torch.cuda.is_available(),
    "cuda_devices": torch.cuda.device_count(),
    "jit_script": torch.jit.script is torch.jit._script.script,
    "scripted": isinstance(scripted, torch.jit.ScriptModule),
    "transfer_to_npu": "torch_npu.contrib.transfer_to_npu" in sys.modules,
    "dist_patched": getattr(dist.init_process_group, "__npu_platform_patched__", False),
    "parallel_state_patched": getattr(parallel_state.init_distributed_environment,
                                      "__npu_platform_patched__", False),
    "flash_attn": flash_attn.__name__,
}))
"""


@pytest.mark.slow
@pytest.mark.parametrize("framework", ["vllm", "sglang"])
def test_default_patches_leave_torch_cuda_and_jit_alone_in_vllm_and_sglang(framework):
    """vLLM and sglang run their native NPU paths: in their processes the default patches act
    (backends, flash_attn) but torch.cuda still says no CUDA and torch.jit.script works."""
    code = FRAMEWORK_PROBE.replace("@IMPORTS@", FRAMEWORK_IMPORTS[framework])
    state = run_json(code, NPU_PLATFORM_EMULATE="1")
    assert state["platform"] == f"npu_platform.{framework}.platform.NPUPlatform"
    assert state["cuda_available"] is False and state["cuda_devices"] == 0
    assert state["jit_script"] is True and state["scripted"] is True
    assert state["transfer_to_npu"] is False
    assert state["dist_patched"] is True and state["parallel_state_patched"] is True
    assert state["flash_attn"] == "npu_platform.patches.flash_attn"
    assert "start-up patches active" not in state["stderr"]  # INFO: not shown by default


def test_meta_device_context_still_covers_the_redirected_factories():
    """``with torch.device("meta")`` recognises factory calls by identity against a set torch
    caches on first use. The ``cuda`` patch (transfer_to_npu) wraps the factories; the set must
    still hold torch's own functions, or models built under the context (transformers'
    ``from_pretrained``) get uninitialised tensors on the device instead of meta ones."""
    state = run_json(
        """
        import json, torch
        with torch.device("meta"):
            made = [torch.empty(2), torch.arange(3), torch.zeros(1), torch.tensor([1.0])]
        print(json.dumps({
            "devices": sorted({t.device.type for t in made}),
            "cuda_redirect": torch.zeros(1, device="cuda").device.type,
        }))
        """,
        NPU_PLATFORM_EMULATE="1",
        NPU_PLATFORM_PATCH_ONLY=CUDA_PROGRAM_PATCHES,
    )
    assert state["devices"] == ["meta"]
    assert state["cuda_redirect"] == "npu"
