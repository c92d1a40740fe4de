#!/usr/bin/env bash
# Build .venv reproducibly from constraints.txt. Idempotent: a second run only checks the
# stamp and returns in seconds. Safe on a fresh machine with no NPU and no CANN.
#
#   scripts/setup.sh            # create or refresh .venv (vLLM 0.32 line, torch 2.13 CPU build)
#   scripts/setup.sh vllm-0.33  # create or refresh .venv-vllm033 (vLLM 0.33 line, torch 2.14)
#   NPU_PLATFORM_SETUP_FORCE=1 scripts/setup.sh   # reinstall everything
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
CACHE="$ROOT/.cache"
TORCH_NPU_VERSION=2.13.0

case "${1:-}" in
  "") VENV="$ROOT/.venv"; CONSTRAINTS=constraints.txt ;;
  vllm-0.33) VENV="$ROOT/.venv-vllm033"; CONSTRAINTS=constraints-vllm033.txt ;;
  *) echo "setup.sh: unknown argument '$1'; run it without arguments (.venv) or with vllm-0.33 (.venv-vllm033)" >&2
     exit 2 ;;
esac

pick_python() {
  if [ -n "${PYTHON:-}" ]; then echo "$PYTHON"; return; fi
  # torch 2.13.0's CPU build is provided for CPython 3.11 on these machines; prefer it.
  for cand in python3.11 python3.12 python3.10 python3; do
    if command -v "$cand" >/dev/null 2>&1; then echo "$cand"; return; fi
  done
  echo "setup.sh: no python3 found; install Python 3.10-3.12 or set PYTHON" >&2
  exit 1
}

stamp_of() {
  # setup.py and the C shim it compiles: changing them needs the editable install rebuilt.
  cat "$CONSTRAINTS" scripts/setup.sh scripts/torchvision_cpu_ops.py pyproject.toml setup.py \
    npu_platform/memory/_alloc_shim.c \
    | sha256sum | cut -d' ' -f1
}

STAMP_FILE="$VENV/.npu-platform-setup"
want=$(stamp_of)
if [ "${NPU_PLATFORM_SETUP_FORCE:-0}" != "1" ] && [ -f "$STAMP_FILE" ] \
   && [ "$(cat "$STAMP_FILE")" = "$want" ] && "$VENV/bin/python" -c "import npu_platform" 2>/dev/null; then
  echo "setup.sh: ${VENV#"$ROOT"/} is up to date"
  exit 0
fi

PY=$(pick_python)
"$PY" - <<'PYCHECK'
import sys
if not ((3, 10) <= sys.version_info[:2] <= (3, 12)):
    raise SystemExit(f"setup.sh: Python 3.10-3.12 is required, {sys.version.split()[0]} found")
PYCHECK

[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)
export PIP_PROGRESS_BAR=off
LOG="$VENV/setup-pip.log"

# Run pip quietly; on failure show its output (minus this machine's index-location noise) and stop.
pip_q() {
  if ! "${PIP[@]}" "$@" >"$LOG" 2>&1; then
    grep -v "is ignored: it is neither" "$LOG" >&2 || true
    echo "setup.sh: pip $* failed" >&2
    exit 1
  fi
}

if [ "$CONSTRAINTS" = constraints-vllm033.txt ]; then
  # The vLLM 0.33 line, for its tests only: vLLM 0.33.0 pins torch 2.14.0, of which the index
  # has only CUDA builds (they run on a machine without a GPU). No sglang here: sglang 0.5.23
  # asks for torch 2.14.1. torchvision/torchaudio are CUDA builds matching that torch.
  echo "setup.sh: installing torch 2.14, vLLM 0.33 and test tools (pinned by $CONSTRAINTS)"
  pip_q install -q -c "$CONSTRAINTS" torch==2.14.0 vllm==0.33.0 pytest pytest-xdist hypothesis psutil coverage
  IMPORTS="npu_platform, vllm, torch"
else
  echo "setup.sh: installing torch, vLLM and test tools (pinned by constraints.txt)"
  pip_q install -q -c constraints.txt torch==2.13.0 vllm==0.32.0 pytest pytest-xdist hypothesis ruff psutil coverage

  # sglang pins a CUDA torch and CUDA-only packages; take it without them, plus the packages
  # that `import sglang`, its Engine (gguf, torchvision through sglang.srt.configs) and its HTTP
  # server (soundfile) import. torchvision is vLLM's own pin (0.28.0), installed with vLLM.
  echo "setup.sh: installing sglang without its CUDA dependencies"
  pip_q install -q -c constraints.txt --no-deps sglang==0.5.23
  pip_q install -q -c constraints.txt orjson ipython gguf soundfile torchvision==0.28.0

  # vLLM pulls CUDA builds of these; they fail to load next to CPU torch. torchaudio and
  # torchcodec are not imported by either framework's paths used here. flashinfer-python raises
  # AssertionError (not ImportError) at `import flashinfer` on a CPU torch (it queries CUDA
  # device properties at import time), which breaks sglang's import guards; vLLM treats it as
  # optional (importlib.util.find_spec), so removing it breaks neither.
  pip_q uninstall -y -q torchaudio torchcodec flashinfer-python

  # The index's torchvision 0.28.0 is a CUDA build: its C++ ops cannot load next to a CPU torch
  # and its fake-kernel registrations then make `import torchvision` fail. A start-up finder
  # (scripts/torchvision_cpu_ops.py) defines the two op schemas those registrations need, only
  # when torchvision's own extension does not load.
  SITE=$("$VENV/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
  cp scripts/torchvision_cpu_ops.py "$SITE/_npu_platform_torchvision_cpu_ops.py"
  # Compiled now: every interpreter start imports it, and PYTHONDONTWRITEBYTECODE may be set.
  "$VENV/bin/python" -m py_compile "$SITE/_npu_platform_torchvision_cpu_ops.py"
  echo "import _npu_platform_torchvision_cpu_ops as _m; _m.install()" \
    > "$SITE/_npu_platform_torchvision_cpu_ops.pth"
  IMPORTS="npu_platform, vllm, sglang, torch, torchvision, gguf, soundfile"
fi

# torch_npu's data files (op schemas, ACL headers) without installing torch_npu: installing
# it without CANN makes `import torch` fail through autoload.
echo "setup.sh: unpacking torch-npu $TORCH_NPU_VERSION data files"
mkdir -p "$CACHE/wheels"
whl=$(ls "$CACHE"/wheels/torch_npu-"$TORCH_NPU_VERSION"-*.whl 2>/dev/null | head -n1 || true)
if [ -z "$whl" ]; then
  # Into a folder of this run's own, then renamed into place: scripts/test.sh builds both
  # environments at once, and neither may see the other's half-written file.
  part=$(mktemp -d "$CACHE/wheels/.download.XXXXXX")
  pip_q download -q --no-deps -d "$part" "torch-npu==$TORCH_NPU_VERSION"
  for f in "$part"/torch_npu-*.whl; do mv -f "$f" "$CACHE/wheels/"; done
  rmdir "$part"
  whl=$(ls "$CACHE"/wheels/torch_npu-"$TORCH_NPU_VERSION"-*.whl | head -n1)
fi
"$VENV/bin/python" - "$whl" "$VENV/share/npu_platform" <<'PYUNPACK'
import sys, zipfile, shutil, os
wheel, dest = sys.argv[1], sys.argv[2]
wanted = (
    "torch_npu/csrc/aten/npu_native_functions_by_codegen.yaml",
    "torch_npu/_op_plugin_docs.py",
    "torch_npu/op_plugin/meta/_meta_registrations.py",
    "torch_npu/include/acl/",
    "torch_npu/include/torch_npu/csrc/npu/NPUPluggableAllocator.h",
    "torch_npu/include/third_party/op-plugin/op_plugin/include/AtbOpsInterface.h",
    # torch_npu's Python API, read (never imported) by the emulated torch_npu's signature test.
    "torch_npu/__init__.py",
    "torch_npu/version.py",
    "torch_npu/npu/",
    "torch_npu/contrib/",
    "torch_npu/utils/",
    "torch_npu/distributed/",
)
shutil.rmtree(os.path.join(dest, "torch_npu"), ignore_errors=True)
with zipfile.ZipFile(wheel) as zf:
    members = [n for n in zf.namelist() if n.startswith(wanted)]
    zf.extractall(dest, members)
print(f"setup.sh: {len(members)} torch_npu data files in {dest}/torch_npu")
PYUNPACK

echo "setup.sh: installing npu-platform (editable)"
# One editable build at a time: it compiles into this checkout (build/, the C shim).
exec 9>"$CACHE/.editable-install.lock"
flock 9
pip_q install -q -c "$CONSTRAINTS" --no-deps -e .
flock -u 9
# Check from outside the checkout, so the import goes through the installed package.
(cd / && "$VENV/bin/python" -c "import $IMPORTS; print('setup.sh: ok, torch', torch.__version__, 'vLLM', vllm.__version__)")
echo "$want" > "$STAMP_FILE"
