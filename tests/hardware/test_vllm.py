"""vLLM on a real Ascend NPU: greedy generate against Hugging Face, sleep levels 1 and 2.

The scenarios of the emulation suite (``tests/vllm_scenarios.py``) with ``--real``: emulation
stays off, vLLM resolves the plugin's platform on the NPU that detection finds, and the engine
runs as Ascend users run it, in bfloat16 with block size 128.

* generate (as ``test_vllm_generate.test_bfloat16_runs_fused_infer_attention_and_stays_greedy``):
  8 prompts of different lengths batched with chunked prefill, 32 greedy tokens each; each
  chosen token must be within a small float32-logit margin of Hugging Face's best (bfloat16
  is not bit-exact), and every engine step builds the attention metadata once and makes one
  KV-cache write and one ``npu_fused_infer_attention_score`` call per layer.
* sleep (as ``test_vllm_sleep``): the same level 1 / level 2 sequence, with device memory
  measured by the device itself (``torch.npu.mem_get_info`` in the engine process) where the
  emulation reads RSS. Not checked on hardware: that woken level-2 weights read as zero
  (fresh device memory is undefined there, as on CUDA).

Needs a real NPU (``npu`` marker, skipped elsewhere). ``ASCEND_RT_VISIBLE_DEVICES`` is passed
on, so it picks the device.
"""

from __future__ import annotations

import itertools
import os

import pytest

from tests import vllm_scenarios
from tests.test_vllm_generate import _assert_structure

pytestmark = [pytest.mark.npu, pytest.mark.slow]

MIB = 1 << 20
#: What Ascend users run: bfloat16 (the fused attention kernel has no float32 mode) and
#: block size 128.
HARDWARE_ARGS = ("--real", "--dtype", "bfloat16", "--block-size", "128")


def _run(scenario: str, workdir, *args: str) -> dict:
    env = vllm_scenarios.scenario_env(emulate=False)
    if "ASCEND_RT_VISIBLE_DEVICES" in os.environ:
        env["ASCEND_RT_VISIBLE_DEVICES"] = os.environ["ASCEND_RT_VISIBLE_DEVICES"]
    result = vllm_scenarios.run(scenario, "--workdir", str(workdir), *HARDWARE_ARGS, *args, env=env)
    assert result["target"] == "real", result["target"]
    return result


def test_greedy_generate_stays_with_transformers(tmp_path):
    result = _run(
        "generate",
        tmp_path,
        "--kind",
        "qwen2",
        "--max-num-batched-tokens",
        "32",
        "--reference",
        "margins",
        "--trace",
    )
    assert result["platform"] == "NPUPlatform"
    assert result["device_type"] == "npu"
    assert max(result["prompt_lens"]) > 32, "some prompt must need chunked prefill"
    assert all(len(tokens) == 32 for tokens in result["got"])
    margins = list(itertools.chain.from_iterable(result["margins"]))
    assert len(margins) == 8 * 32
    # bfloat16 rounding may swap near-ties; a wrong mask, position or block costs logits
    # whole units.
    assert max(margins) < 0.5, max(margins)
    assert sum(m > 0 for m in margins) <= len(margins) // 8, margins
    _assert_structure(result, "npu_fused_infer_attention_score")


@pytest.fixture(scope="module")
def sleep_result(tmp_path_factory) -> dict:
    return _run("sleep", tmp_path_factory.mktemp("sleep"))


def _managed_bytes(stats: dict) -> int:
    return sum(stats[tag]["active_bytes"] for tag in ("weights", "kv_cache"))


def _freed(before: dict, after: dict) -> str:
    used = (before["device_used"] / MIB, after["device_used"] / MIB)
    return "device memory in use {:.1f} -> {:.1f} MiB".format(*used)


def test_sleep_uses_the_npu_backend_and_manager_memory(sleep_result):
    result = sleep_result
    assert result["backend"] == "npu"
    awake = result["stats_awake"]
    assert awake["kv_cache"]["active_bytes"] == vllm_scenarios.SLEEP_KV_CACHE_BYTES
    model = result["model_bytes"]
    assert model["unmanaged_parameters"] == [], "every weight must be pausable"
    assert awake["weights"]["active_bytes"] >= model["parameters"] > 0


def test_sleep_level1_returns_device_memory_and_keeps_outputs(sleep_result):
    result = sleep_result
    awake, asleep, woken = result["mem_awake"], result["mem_level1"], result["mem_woken1"]
    stats = result["stats_level1"]
    managed = _managed_bytes(result["stats_awake"])
    assert stats["weights"]["active_bytes"] == stats["kv_cache"]["active_bytes"] == 0
    assert stats["kv_cache"]["backup_bytes"] == 0
    parameters = result["model_bytes"]["parameters"]
    assert parameters <= stats["weights"]["backup_bytes"] < parameters + MIB
    freed = awake["device_used"] - asleep["device_used"]
    assert freed >= 0.99 * managed, (_freed(awake, asleep), managed)
    taken = woken["device_used"] - asleep["device_used"]
    assert taken >= 0.99 * managed, (_freed(asleep, woken), managed)
    assert result["after_level1"] == result["before"]


def test_sleep_level2_drops_weights_without_backup_and_reload_restores(sleep_result):
    result = sleep_result
    awake, asleep = result["mem_awake2"], result["mem_level2"]
    stats = result["stats_level2"]
    managed = _managed_bytes(result["stats_awake"])
    assert stats["weights"]["active_bytes"] == stats["kv_cache"]["active_bytes"] == 0
    assert stats["weights"]["backup_bytes"] == 0, "level 2 must not copy the weights to host"
    freed = awake["device_used"] - asleep["device_used"]
    assert freed >= 0.99 * managed, (_freed(awake, asleep), managed)

    weights_only = result["stats_weights_only"]
    assert weights_only["weights"]["paused_bytes"] == 0
    assert weights_only["kv_cache"]["active_bytes"] == 0, "kv_cache must stay asleep"
    assert result["zero_after_reload"] is False
    assert result["model_bytes_reloaded"]["unmanaged_parameters"] == []
    assert result["after_level2"] == result["before"]


def test_sleep_reloaded_weights_still_sleep(sleep_result):
    result = sleep_result
    awake, asleep = result["mem_awake3"], result["mem_level1_again"]
    managed = _managed_bytes(result["stats_woken2"])
    freed = awake["device_used"] - asleep["device_used"]
    assert freed >= 0.99 * managed, (_freed(awake, asleep), managed)
    assert result["stats_level1_again"]["weights"]["active_bytes"] == 0
    assert result["after_level1_again"] == result["before"]
