"""(d) vLLM sleep mode on the emulated NPU: memory really returned, outputs unchanged.

One engine, started as users start it (its engine core in a spawned process, whose RSS is
read through ``collective_rpc``), with sleep mode on: a tiny Llama widened to about 48 MiB of
float32 weights and a 256 MiB KV cache. The memory manager's per-tag byte counts are compared
with the engine process's ``/proc/self/status``:

* on the emulated NPU, device memory is the emulated ACL runtime's memfd pages (mapped
  resident, ``RssShmem``) and host
  backups are anonymous memory (``RssAnon``); both are part of ``VmRSS``;
* level 1 must release at least 99% of the weights' and KV cache's device memory; VmRSS
  drops by that minus the host copy of the weights (which, in emulation, lives in the same
  RAM), and that copy is the weights' size;
* level 2 keeps no host copy of the weights (manager stats), so VmRSS itself drops by at
  least 99% of the weights and the KV cache;
* after ``wake_up()`` (level 1) and after vLLM's level-2 sequence (``wake_up(["weights"])``,
  ``collective_rpc("reload_weights")``, ``wake_up(["kv_cache"])``) greedy outputs are
  identical to those before sleeping; between the weights' wake-up and the reload the
  parameters are all zero (the level-2 sleep really dropped them).
"""

from __future__ import annotations

import pytest

from tests import vllm_scenarios

MIB = 1 << 20


def _device_bytes(stats: dict) -> int:
    return sum(stats[tag]["active_bytes"] for tag in ("weights", "kv_cache"))


@pytest.fixture(scope="module")
def result(tmp_path_factory) -> dict:
    return vllm_scenarios.run("sleep", "--workdir", str(tmp_path_factory.mktemp("sleep")))


@pytest.mark.slow
def test_engine_uses_our_sleep_backend_and_manager_memory(result):
    assert result["backend"] == "npu"
    awake = result["stats_awake"]
    assert awake["kv_cache"]["active_bytes"] == vllm_scenarios.SLEEP_KV_CACHE_BYTES
    model = result["model_bytes"]
    assert model["parameters"] == result["checkpoint_bytes"] >= 32 * MIB
    assert model["unmanaged_parameters"] == [], "every weight must be pausable"
    # Each allocation is rounded up to 2 MiB in emulation: the manager holds at least the
    # parameters' bytes.
    assert awake["weights"]["active_bytes"] >= model["parameters"]


@pytest.mark.slow
def test_level1_returns_the_device_memory_and_keeps_outputs(result):
    awake, asleep, woken = result["mem_awake"], result["mem_level1"], result["mem_woken1"]
    stats = result["stats_level1"]
    device = _device_bytes(result["stats_awake"])
    backup = stats["weights"]["backup_bytes"]
    assert stats["weights"]["active_bytes"] == stats["kv_cache"]["active_bytes"] == 0
    assert stats["kv_cache"]["backup_bytes"] == 0
    # The host copy of the weights holds exactly the parameters (not the 2 MiB padding).
    assert result["model_bytes"]["parameters"] <= backup < result["model_bytes"]["parameters"] + MIB

    assert awake["RssShmem"] - asleep["RssShmem"] >= 0.99 * device
    assert awake["VmRSS"] - asleep["VmRSS"] >= 0.99 * device - backup
    assert asleep["RssAnon"] - awake["RssAnon"] <= backup + 4 * MIB
    assert woken["VmRSS"] - asleep["VmRSS"] >= 0.99 * (device - backup), "wake-up maps it again"
    assert result["after_level1"] == result["before"]


@pytest.mark.slow
def test_level2_drops_the_weights_without_a_backup_and_reload_restores_them(result):
    awake, asleep = result["mem_awake2"], result["mem_level2"]
    stats = result["stats_level2"]
    device = _device_bytes(result["stats_awake"])
    assert stats["weights"]["active_bytes"] == stats["kv_cache"]["active_bytes"] == 0
    assert stats["weights"]["backup_bytes"] == 0, "level 2 must not copy the weights to host"
    assert awake["VmRSS"] - asleep["VmRSS"] >= 0.99 * device
    assert asleep["RssAnon"] - awake["RssAnon"] <= 4 * MIB

    weights_only = result["stats_weights_only"]
    assert weights_only["weights"]["paused_bytes"] == 0
    assert weights_only["kv_cache"]["active_bytes"] == 0, "kv_cache must stay asleep"
    assert result["zero_after_weights_wake"] is True, "woken weights must be fresh memory"
    assert result["zero_after_reload"] is False
    assert result["model_bytes_reloaded"]["unmanaged_parameters"] == []
    assert result["after_level2"] == result["before"]


@pytest.mark.slow
def test_reloaded_weights_still_sleep(result):
    awake, asleep = result["mem_awake3"], result["mem_level1_again"]
    device = _device_bytes(result["stats_woken2"])
    assert awake["RssShmem"] - asleep["RssShmem"] >= 0.99 * device
    assert result["stats_level1_again"]["weights"]["active_bytes"] == 0
    assert result["after_level1_again"] == result["before"]


#: Bounds for 100 sleep/wake cycles, measured after the 10th cycle (allocator warm-up) and
#: after the last. Device memory: every sleep returns what the previous wake-up took, so
#: nothing may be left over (0 bytes). Host memory: the engine process's RSS may move with
#: Python's and glibc's allocators; 16 MiB over 90 cycles is far below one weights backup of
#: a leak per cycle (the tiny model's weights are ~3 MiB, so a leak of even one backup per
#: cycle would add over 250 MiB).
DEVICE_GROWTH_BOUND = 0
HOST_GROWTH_BOUND = 16 * MIB


@pytest.mark.slow
def test_100_sleep_wake_cycles_do_not_grow_memory(tmp_path):
    result = vllm_scenarios.run("sleep-cycles", "--workdir", str(tmp_path), "--cycles", "100")
    memory = result["memory"]
    assert len(memory) == 100
    assert result["mismatches"] == [], "outputs after a wake-up differ from the first run"
    settled, last = memory[9], memory[-1]
    assert last["device_used"] - settled["device_used"] <= DEVICE_GROWTH_BOUND, (
        settled,
        last,
    )
    # Against the engine before any sleep: only small tensors that the first cycles create
    # once (tens of KiB measured) may remain.
    assert last["device_used"] - result["memory_before"]["device_used"] <= MIB
    assert last["rss"] - settled["rss"] <= HOST_GROWTH_BOUND, (settled, last)
