"""The vLLM plugin's entry points, inertness and conformance (real vLLM 0.32, no NPU).

(a) inert: without an NPU and without emulation, installing the plugin changes nothing
    about vLLM's platform; ``import vllm`` resolves no platform; with
    ``NPU_PLATFORM_EMULATE=1`` the platform is ours.
(b) conformance: the entry points are found through importlib.metadata; every Platform
    method vLLM leaves unimplemented is implemented; the general plugin runs many times and
    registers each thing once.
"""

from __future__ import annotations

import inspect
import json
import subprocess
import sys
import textwrap
from importlib.metadata import entry_points

import pytest

from tests import vllm_scenarios

PLATFORM_GROUP = "vllm.platform_plugins"
GENERAL_GROUP = "vllm.general_plugins"

_PROBE = """
import json, sys
import vllm
import vllm.platforms as platforms
resolved_by_import = platforms._current_platform is not None
from vllm.platforms import current_platform
from vllm.plugins import load_general_plugins
load_general_plugins()
from vllm.v1.attention.backends.registry import AttentionBackendEnum
from vllm.model_executor.custom_op import op_registry_oot
print(json.dumps({
    "resolved_by_import": resolved_by_import,
    "platform": f"{type(current_platform).__module__}.{type(current_platform).__qualname__}",
    "device_type": current_platform.device_type,
    "npu_attn": "NPU_ATTN" in AttentionBackendEnum.__members__,
    "oot_ops": sorted(op_registry_oot),
    "npu_modules": sorted(m for m in sys.modules if m.startswith("npu_platform.vllm")),
}))
"""


def _probe(env: dict[str, str]) -> dict:
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE],
        check=False,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _ours(group: str):
    return [ep for ep in entry_points(group=group) if ep.value.startswith("npu_platform.")]


def test_entry_points_are_installed():
    platform = _ours(PLATFORM_GROUP)
    general = _ours(GENERAL_GROUP)
    assert [(ep.name, ep.value) for ep in platform] == [
        ("npu_platform", "npu_platform.entry_points.vllm:platform_plugin")
    ]
    assert [(ep.name, ep.value) for ep in general] == [
        ("npu_platform", "npu_platform.entry_points.vllm:register")
    ]
    assert callable(platform[0].load()) and callable(general[0].load())


def test_platform_entry_point_is_cheap_and_inert_without_npu():
    code = textwrap.dedent(
        """
        import json, sys, time
        from importlib.metadata import entry_points
        ep = [e for e in entry_points(group="vllm.platform_plugins")
              if e.name == "npu_platform"][0]
        start = time.perf_counter()
        answer = ep.load()()
        gen = [e for e in entry_points(group="vllm.general_plugins")
               if e.name == "npu_platform"][0]
        gen.load()()
        elapsed = time.perf_counter() - start
        print(json.dumps({"answer": answer, "ms": elapsed * 1000,
                          "heavy": sorted(m for m in ("torch", "vllm") if m in sys.modules)}))
        """
    )
    env = vllm_scenarios.scenario_env(emulate=False)
    proc = subprocess.run(
        [sys.executable, "-c", code],
        check=False,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["answer"] is None
    assert result["heavy"] == [], "the inert answer must not import torch or vLLM"
    assert result["ms"] < 200


@pytest.mark.slow
def test_inert_without_npu_platform_is_what_it_is_without_the_plugin():
    with_plugin = _probe(vllm_scenarios.scenario_env(emulate=False))
    # VLLM_PLUGINS is an allowlist of entry-point names: ours is left out.
    without = _probe(
        vllm_scenarios.scenario_env(
            emulate=False, VLLM_PLUGINS="lora_filesystem_resolver,lora_hf_hub_resolver"
        )
    )
    assert with_plugin["platform"] == without["platform"]
    assert with_plugin["device_type"] == without["device_type"]
    assert with_plugin["resolved_by_import"] is False
    assert with_plugin["npu_attn"] is False and with_plugin["oot_ops"] == []
    assert with_plugin["npu_modules"] == [], "nothing of npu_platform.vllm may load"


@pytest.mark.slow
def test_emulation_selects_our_platform_and_import_resolves_nothing():
    result = _probe(vllm_scenarios.scenario_env(emulate=True))
    assert result["platform"] == "npu_platform.vllm.platform.NPUPlatform"
    assert result["device_type"] == "npu"
    assert result["resolved_by_import"] is False
    assert result["npu_attn"] is True
    assert result["oot_ops"] == ["RMSNorm", "RotaryEmbedding", "SiluAndMul"]


@pytest.mark.slow
def test_emulated_platform_registrations_and_config(tmp_path):
    result = vllm_scenarios.run("plugin", "--workdir", str(tmp_path))
    assert result["platform"] == "NPUPlatform"
    assert result["resolved_by_import"] is False
    assert (result["device_name"], result["device_type"]) == ("npu", "npu")
    assert (result["dist_backend"], result["dispatch_key"]) == ("hccl", "PrivateUse1")
    # load_general_plugins() plus five more calls: each registration happened once.
    assert result["registered"] == [
        "attention:NPU_ATTN",
        "custom_op:RMSNorm",
        "custom_op:RotaryEmbedding",
        "custom_op:SiluAndMul",
        "sleep_backend:npu",
    ]
    assert result["attention_backend"] == "npu_platform.vllm.attention.NPUAttentionBackend"
    assert result["oot_ops"] == {
        "RMSNorm": "npu_platform.vllm.custom_ops.NPURMSNorm",
        "RotaryEmbedding": "npu_platform.vllm.custom_ops.NPURotaryEmbedding",
        "SiluAndMul": "npu_platform.vllm.custom_ops.NPUSiluAndMul",
    }
    assert "npu" in result["sleep_backends"]
    assert result["validate_environ"] == "ok"
    assert result["startup_patches"] == {
        "state": "active",
        "selected": ["distributed", "flash_attn", "torch_memory_saver"],
        "cuda_is_available": False,
    }
    assert result["config"] == {
        "worker_cls": "npu_platform.vllm.worker.NPUWorker",
        "custom_ops": ["all"],
        "compilation_mode": "NONE",
        "cudagraph_mode": "NONE",
        "enforce_eager": True,
        "block_size": 128,
        "device": "npu",
        "async_scheduling": False,
    }
    sizes = result["block_sizes"]
    assert {k: sizes[k] for k in ("128", "256", "512")} == {"128": 128, "256": 256, "512": 512}
    for refused in ("16", "64", "640"):
        assert f"--block-size {refused} is not supported on the NPU" in sizes[refused]
        assert "multiple of 128 tokens, at most 512" in sizes[refused]
        assert "_op_plugin_docs.py" in sizes[refused]


# --------------------------------------------------------------------------- introspection


def test_every_required_platform_method_is_overridden():
    from npu_platform.vllm.conformance import not_overridden, required_platform_methods
    from npu_platform.vllm.platform import NPUPlatform

    required = required_platform_methods()
    # The methods vLLM 0.32 leaves unimplemented, found by introspection (a newer vLLM
    # adding one makes this test list it).
    assert {"get_device_name", "set_device", "manual_seed_all", "get_punica_wrapper"} <= required
    missing = sorted(name for name in required if name not in vars(NPUPlatform))
    assert missing == [], f"NPUPlatform does not override: {missing}"
    assert not_overridden(NPUPlatform, required) == []
    assert NPUPlatform.get_device_communicator_cls() == (
        "vllm.distributed.device_communicators.base_device_communicator.DeviceCommunicatorBase"
    )


def test_platform_attributes():
    from vllm.platforms.interface import PlatformEnum

    from npu_platform.vllm.platform import NPUPlatform

    assert NPUPlatform._enum is PlatformEnum.OOT
    assert (NPUPlatform.device_name, NPUPlatform.device_type) == ("npu", "npu")
    assert NPUPlatform.dispatch_key == "PrivateUse1"
    assert NPUPlatform.ray_device_key == "NPU"
    assert NPUPlatform.device_control_env_var == "ASCEND_RT_VISIBLE_DEVICES"
    assert NPUPlatform.dist_backend == "hccl"
    assert all(not name.startswith("VLLM_") for name in NPUPlatform.additional_env_vars)


def test_attention_classes_are_concrete():
    from npu_platform.vllm.attention import (
        NPUAttentionBackend,
        NPUAttentionImpl,
        NPUAttentionMetadataBuilder,
    )

    for cls in (NPUAttentionBackend, NPUAttentionImpl, NPUAttentionMetadataBuilder):
        assert not inspect.isabstract(cls), f"{cls.__name__} leaves abstract methods"
    assert NPUAttentionBackend.get_name() == "NPU_ATTN"
    assert NPUAttentionBackend.forward_includes_kv_cache_update is False


def test_bad_variable_leaves_the_plugin_inactive_with_a_warning():
    code = (
        "from npu_platform.entry_points import vllm as e; "
        "print(repr(e.platform_plugin())); e.register()"
    )
    env = vllm_scenarios.scenario_env(emulate=False, NPU_PLATFORM_EMULATE="maybe")
    proc = subprocess.run(
        [sys.executable, "-c", code], check=False, env=env, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "None"
    assert "NPU_PLATFORM_EMULATE='maybe' is not valid" in proc.stderr


@pytest.mark.slow
def test_kv_cache_size_follows_the_memory_profile_and_speculation_is_refused(tmp_path):
    """On a 1 GiB emulated device with the default --gpu-memory-utilization (0.9), the KV
    cache is what the budget leaves after the weights and the profile run's peak. The tiny
    model's weights are a few MiB and its profile-run activations stay under 64 MiB, so the
    KV cache must be within 64 MiB below ``0.9 * total - weights`` (the former sizing, which
    counted lasting buffers twice and reserved a fixed 0.5 GiB, gave 0.5 GiB less)."""
    result = vllm_scenarios.run("kv-sizing", "--workdir", str(tmp_path))
    assert result["total"] == 1 << 30
    budget = result["utilization"] * result["total"] - result["weights"]
    assert result["weights"] > 0
    assert budget - 64 * (1 << 20) <= result["kv_cache"] <= budget, result
    refusal = result["speculative_refusal"]
    assert refusal is not None and "speculative decoding is not supported" in refusal, refusal
