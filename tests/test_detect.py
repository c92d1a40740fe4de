"""The detection matrix, its cost, and the NPU_PLATFORM_* variables.

Each situation is built for real (environment, fake torch_npu distributions, fake CANN
library files) and detection runs in a child interpreter, because a decision that imports
torch_npu cannot be undone in this one.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from npu_platform import env
from npu_platform.errors import ConfigError
from tests.fakedist import make_fake_cann, make_fake_torch_npu, subprocess_env

# Detection in a child interpreter, timed from `import npu_platform.detect` to the answer (the
# start-up .pth hooks have run before: they run in every process). "cpu_ms" is the child's CPU
# time over that span, "ms" the wall time, "imported" the modules it loaded.
PROBE = """
import json, sys, time
before = set(sys.modules)
t0, c0 = time.perf_counter(), time.process_time()
from npu_platform.detect import detect
d = detect()
elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
print(json.dumps({
    **d.as_dict(),
    "ms": elapsed * 1000,
    "cpu_ms": cpu * 1000,
    "torch": "torch" in sys.modules,
    "imported": sorted(set(sys.modules) - before),
}))
"""


def probe(environ: dict[str, str]) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", PROBE], env=environ, capture_output=True, text=True, check=False
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_none_without_torch_npu_is_cheap_and_never_imports_torch():
    """The "no" answer costs under 10 ms, measured as the child's CPU time.

    Wall time on a busy machine adds the time spent waiting for a core (measured at a load of
    5 on 2 cores: about twice the CPU time, and uneven from run to run), which is not what
    detection costs. The measured children run with PYTHONDONTWRITEBYTECODE=1, so a module
    edited since its .pyc was written would be compiled in every run (about 10 ms for
    detection's modules); one warm-up run that may write byte-code comes first.
    """
    probe(subprocess_env(PYTHONDONTWRITEBYTECODE=None))
    runs = [probe(subprocess_env()) for _ in range(5)]
    for result in runs:
        assert result["target"] == "none"
        assert "torch_npu is not installed" in result["reason"]
        assert "NPU_PLATFORM_EMULATE=1" in result["reason"]
        assert result["torch"] is False
        assert not any(name.split(".")[0] == "torch" for name in result["imported"])
    fastest = min(runs, key=lambda r: r["cpu_ms"])
    assert fastest["cpu_ms"] < 10.0, (
        f"detection took {fastest['cpu_ms']:.2f} ms of CPU ({fastest['ms']:.2f} ms wall), the "
        f"budget is 10 ms; it imported {', '.join(fastest['imported'])}"
    )


def test_emulation_is_opt_in():
    result = probe(subprocess_env(NPU_PLATFORM_EMULATE="1"))
    assert result["target"] == "emulated"
    assert result["device_count"] == 1
    assert "NPU_PLATFORM_EMULATE=1" in result["reason"]
    result = probe(subprocess_env(NPU_PLATFORM_EMULATE="yes", NPU_PLATFORM_EMULATE_DEVICES="4"))
    assert (result["target"], result["device_count"]) == ("emulated", 4)
    assert probe(subprocess_env(NPU_PLATFORM_EMULATE="0"))["target"] == "none"


SWITCHED_OFF = """
import json, os, sys
import torch  # the device-backend autoload imports the emulated torch_npu
from npu_platform.detect import detect

out = {"loaded": sys.modules["torch_npu"].__file__, "on": detect().as_dict()}
os.environ["NPU_PLATFORM_EMULATE"] = "0"
out["zero"] = detect(refresh=True).as_dict()
del os.environ["NPU_PLATFORM_EMULATE"]
out["unset"] = detect(refresh=True).as_dict()
print(json.dumps(out))
"""


def test_emulated_torch_npu_left_loaded_after_switching_off_is_not_an_npu():
    out = subprocess.run(
        [sys.executable, "-c", SWITCHED_OFF],
        env=subprocess_env(NPU_PLATFORM_EMULATE="1"),
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert "npu_platform/emulation/site/torch_npu" in result["loaded"]
    assert (result["on"]["target"], result["on"]["device_count"]) == ("emulated", 1)
    for off in ("zero", "unset"):
        decision = result[off]
        assert (decision["target"], decision["device_count"]) == ("none", 0), decision
        assert "the emulated torch_npu is loaded in this process" in decision["reason"]
        assert "NPU_PLATFORM_EMULATE is off" in decision["reason"]


def test_torch_npu_without_cann_answers_none_with_the_trap(tmp_path):
    site = tmp_path / "site"
    make_fake_torch_npu(
        site, import_error="libhccl.so: cannot open shared object file: No such file or directory"
    )
    environ = subprocess_env([site])
    # The trap is real: with this torch_npu installed, `import torch` itself fails.
    broken = subprocess.run(
        [sys.executable, "-c", "import torch"],
        env=environ,
        capture_output=True,
        text=True,
        check=False,
    )
    assert broken.returncode != 0
    assert "libhccl.so" in broken.stderr

    result = probe(environ)
    assert result["target"] == "none"
    assert result["torch"] is False, "detection must not trip over the autoload trap"
    assert "libascendcl.so, libhccl.so were not found" in result["reason"]
    assert "`import torch` itself fails" in result["reason"]
    assert "TORCH_DEVICE_BACKEND_AUTOLOAD=0" in result["reason"]

    quiet = probe(subprocess_env([site], TORCH_DEVICE_BACKEND_AUTOLOAD="0"))
    assert quiet["target"] == "none"
    assert "itself fails" not in quiet["reason"]


def test_cann_present_but_torch_npu_import_fails(tmp_path):
    site, lib = tmp_path / "site", tmp_path / "cann" / "lib64"
    make_fake_torch_npu(site, import_error="libascend_hal.so: cannot open shared object file")
    make_fake_cann(lib)
    result = probe(subprocess_env([site], ASCEND_HOME_PATH=str(tmp_path / "cann")))
    assert result["target"] == "none"
    assert "importing it failed" in result["reason"]
    assert "libascend_hal.so" in result["reason"]


@pytest.mark.parametrize(("count", "target"), [(2, "real"), (0, "none")])
def test_real_npu_needs_a_device(tmp_path, count, target):
    site, lib = tmp_path / "site", tmp_path / "lib"
    make_fake_torch_npu(site, device_count=count)
    make_fake_cann(lib)
    result = probe(subprocess_env([site], LD_LIBRARY_PATH=str(lib)))
    assert result["target"] == target
    assert result["device_count"] == count
    if count:
        assert "torch_npu reports 2 Ascend NPU device(s)" in result["reason"]
    else:
        assert "reports no NPU device" in result["reason"]


@pytest.mark.parametrize(
    ("name", "value", "accepted"),
    [
        ("NPU_PLATFORM_EMULATE", "maybe", "1/0"),
        ("NPU_PLATFORM_EMULATE_DEVICES", "0", "an integer >= 1"),
        ("NPU_PLATFORM_EMULATE_DEVICES", "two", "an integer >= 1"),
    ],
)
def test_bad_values_name_the_variable(name, value, accepted):
    environ = {"NPU_PLATFORM_EMULATE": "1", name: value}
    with pytest.raises(ConfigError) as info:
        env.validate(environ)
    message = str(info.value)
    assert f"{name}={value!r}" in message
    assert accepted in message
    out = subprocess.run(
        [sys.executable, "-c", PROBE],
        env=subprocess_env(**environ),
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode != 0
    assert "ConfigError" in out.stderr and name in out.stderr


def test_unknown_variable_gets_a_suggestion():
    warnings = env.validate({"NPU_PLATFORM_EMULTE": "1"})
    assert len(warnings) == 1
    assert "NPU_PLATFORM_EMULTE is not a variable" in warnings[0]
    assert "Did you mean NPU_PLATFORM_EMULATE?" in warnings[0]


def test_no_variable_of_ours_starts_with_vllm():
    assert env.VARIABLES
    for name in env.VARIABLES:
        assert name.startswith("NPU_PLATFORM_")
        assert not name.startswith("VLLM_")
