"""``NPUPlatform``'s class methods called directly, in this process: the device queries vLLM
reaches through the platform (on the emulated NPU, compared with the device facade and with
tensors allocated there), its refusals (dtype, attention backend, GPU PCI ids), the
configuration it imposes on a real ``VllmConfig`` and the stateless process groups it builds.
"""

from __future__ import annotations

import datetime
import os

import pytest
import torch

from npu_platform import device
from npu_platform.vllm.platform import ATTENTION_BACKEND_PATH, DEFAULT_BLOCK_SIZE, NPUPlatform

MIB = 1 << 20


@pytest.fixture
def unspecified_platform(monkeypatch):
    """vLLM's current platform pinned to its neutral one for the test, so building a
    ``VllmConfig`` here neither resolves nor applies a platform for the whole process."""
    import vllm.platforms
    from vllm.platforms.interface import UnspecifiedPlatform

    monkeypatch.setattr(vllm.platforms, "_current_platform", UnspecifiedPlatform())


# --------------------------------------------------------------------------- dtypes


def test_dtype_support():
    for dtype in (torch.bfloat16, torch.float16, torch.float32):
        NPUPlatform.check_if_supports_dtype(dtype)
    assert NPUPlatform().supported_dtypes == [torch.bfloat16, torch.float16, torch.float32]


def test_unsupported_dtype_is_refused_with_the_choices(emulated):
    with pytest.raises(ValueError) as info:
        NPUPlatform.check_if_supports_dtype(torch.float64)
    assert str(info.value) == (
        "torch.float64 is not supported on Ascend910B2; use --dtype bfloat16, float16 or float32."
    )


# --------------------------------------------------------------------------- device queries


def test_memory_queries_follow_allocations(emulated):
    index = device.current_device()
    npu = torch.device("npu", index)
    NPUPlatform.empty_cache()
    free, total = NPUPlatform.mem_get_info(npu)
    assert (free, total) == NPUPlatform.mem_get_info(index) == device.mem_get_info(index)
    assert NPUPlatform.get_device_total_memory(index) == total
    used = NPUPlatform.get_current_memory_usage(npu)
    assert used == NPUPlatform.get_current_memory_usage(index)
    assert used == NPUPlatform.get_current_memory_usage() == float(total - free)

    block = torch.empty(8 * MIB, dtype=torch.uint8, device=npu)
    assert NPUPlatform.get_current_memory_usage(npu) - used == 8 * MIB
    assert NPUPlatform.mem_get_info()[0] == free - 8 * MIB
    del block
    NPUPlatform.empty_cache()
    assert NPUPlatform.get_current_memory_usage(npu) == used


def test_device_selection_and_count(emulated):
    count = NPUPlatform.device_count()
    assert count == device.device_count() >= 1
    last = torch.device("npu", count - 1)
    before = NPUPlatform.current_device()
    try:
        NPUPlatform.set_device(last)
        assert NPUPlatform.current_device() == count - 1
        assert torch.empty(1, device="npu").device == last
    finally:
        NPUPlatform.set_device(torch.device("npu", before))
    assert NPUPlatform.current_device() == before


def test_streams_events_and_synchronize(emulated):
    npu = torch.device("npu", NPUPlatform.current_device())
    default = NPUPlatform.current_stream(npu)
    assert default == NPUPlatform.current_stream() == device.current_stream()
    side = NPUPlatform.Stream()
    assert side != default
    with NPUPlatform.stream(side):
        assert NPUPlatform.current_stream() == side
        start = NPUPlatform.Event(enable_timing=True)
        end = NPUPlatform.Event(enable_timing=True)
        start.record()
        product = torch.ones(32, 32, device=npu) @ torch.ones(32, 32, device=npu)
        end.record()
    assert NPUPlatform.current_stream() == default
    NPUPlatform.synchronize(npu)
    NPUPlatform.synchronize()
    assert end.query()
    assert start.elapsed_time(end) >= 0.0
    assert torch.equal(product.cpu(), torch.full((32, 32), 32.0))


def test_inference_mode_and_allocator_answers():
    with NPUPlatform.inference_mode():
        assert torch.is_inference_mode_enabled()
        made = torch.ones(2)
    assert made.is_inference()
    assert not torch.is_inference_mode_enabled()
    platform = NPUPlatform()
    assert platform.is_cumem_allocator_available() is False
    assert NPUPlatform.is_pin_memory_available() is True


def test_gpu_pci_bus_ids_are_refused_with_the_hccl_alternative():
    with pytest.raises(NotImplementedError) as info:
        NPUPlatform.get_all_gpu_pci_bus_ids()
    message = str(info.value)
    assert "VLLM_GPU_NIC_PCIE_MAPPING is not supported on the Ascend NPU platform" in message
    assert "HCCL_SOCKET_IFNAME" in message


# --------------------------------------------------------------------------- attention


def _selector(head_size: int = 128, block_size: int = 128):
    from vllm.v1.attention.selector import AttentionSelectorConfig

    return AttentionSelectorConfig(
        head_size=head_size, dtype=torch.bfloat16, kv_cache_dtype="auto", block_size=block_size
    )


def test_attention_backend_selection_and_refusals(emulated, vllm_plugin_log):
    from vllm.v1.attention.backends.registry import AttentionBackendEnum

    assert NPUPlatform.get_attn_backend_cls(None, _selector()) == ATTENTION_BACKEND_PATH
    assert ("INFO", "Using the NPU_ATTN attention backend.") in vllm_plugin_log

    with pytest.raises(ValueError) as info:
        NPUPlatform.get_attn_backend_cls(AttentionBackendEnum.FLASH_ATTN, _selector())
    assert str(info.value) == (
        "attention backend FLASH_ATTN is not available on Ascend910B2; use "
        "--attention-backend NPU_ATTN or leave it unset."
    )

    with pytest.raises(ValueError) as info:
        NPUPlatform.get_attn_backend_cls(None, _selector(head_size=512))
    message = str(info.value)
    assert message.startswith("the NPU_ATTN attention backend cannot run this model: ")
    assert "head_size not supported" in message
    assert "head_size=512" in message, "the selector is quoted"


# --------------------------------------------------------------------------- configuration


def _config():
    from vllm.config import DeviceConfig, VllmConfig

    return VllmConfig(device_config=DeviceConfig(device="cpu"))


@pytest.fixture
def worker_env(monkeypatch):
    """The variables check_and_update_config sets, unset now and restored afterwards."""
    for name in (
        "VLLM_WORKER_MULTIPROC_METHOD",
        "VLLM_USE_V2_MODEL_RUNNER",
        "HUMMING_DISABLE_PARALLEL_BUILD",
    ):
        monkeypatch.setenv(name, "placeholder")
        monkeypatch.delenv(name)
    return monkeypatch


def test_config_is_made_eager_with_npu_defaults(unspecified_platform, worker_env, vllm_plugin_log):
    from vllm.config import CompilationMode, CUDAGraphMode

    config = _config()
    config.parallel_config.enable_dbo = True
    config.compilation_config.mode = CompilationMode.VLLM_COMPILE
    config.compilation_config.custom_ops = ["none", "+rms_norm", "-silu_and_mul"]
    assert config.model_config is None

    NPUPlatform.check_and_update_config(config)

    assert config.parallel_config.worker_cls == "npu_platform.vllm.worker.NPUWorker"
    assert config.parallel_config.disable_custom_all_reduce is True
    assert config.parallel_config.enable_dbo is False
    compilation = config.compilation_config
    assert compilation.mode == CompilationMode.NONE
    assert compilation.cudagraph_mode == CUDAGraphMode.NONE
    assert compilation.cudagraph_capture_sizes == []
    assert compilation.max_cudagraph_capture_size == 0
    assert compilation.custom_ops == ["all", "+rms_norm", "-silu_and_mul"]
    assert config.cache_config.block_size == DEFAULT_BLOCK_SIZE
    assert config.scheduler_config.async_scheduling is False
    assert os.environ["VLLM_WORKER_MULTIPROC_METHOD"] == "spawn"
    assert os.environ["VLLM_USE_V2_MODEL_RUNNER"] == "0"
    assert os.environ["HUMMING_DISABLE_PARALLEL_BUILD"] == "1"
    warnings = [message for level, message in vllm_plugin_log if level == "WARNING"]
    assert "Dual-batch overlap is not supported on the NPU; disabled." in warnings
    assert any(
        "torch.compile is not used on the NPU platform; running eagerly" in w for w in warnings
    )


def test_config_keeps_user_choices_it_can_run(unspecified_platform, worker_env):
    config = _config()
    config.parallel_config.worker_cls = "my.Worker"
    config.cache_config.block_size = 256
    config.cache_config.user_specified_block_size = True
    worker_env.setenv("VLLM_WORKER_MULTIPROC_METHOD", "fork")
    worker_env.setenv("VLLM_USE_V2_MODEL_RUNNER", "1")
    worker_env.setenv("HUMMING_DISABLE_PARALLEL_BUILD", "0")

    NPUPlatform.check_and_update_config(config)

    assert config.parallel_config.worker_cls == "my.Worker"
    assert config.cache_config.block_size == 256
    assert os.environ["VLLM_WORKER_MULTIPROC_METHOD"] == "fork"
    assert os.environ["VLLM_USE_V2_MODEL_RUNNER"] == "1"
    assert os.environ["HUMMING_DISABLE_PARALLEL_BUILD"] == "0"


def test_config_refuses_a_block_size_the_kernel_rejects(unspecified_platform, worker_env):
    config = _config()
    config.cache_config.block_size = 64
    config.cache_config.user_specified_block_size = True
    with pytest.raises(ValueError) as info:
        NPUPlatform.check_and_update_config(config)
    message = str(info.value)
    assert message.startswith("--block-size 64 is not supported on the NPU")
    assert "Use --block-size 128 (the default) or leave it unset." in message


def test_compilation_default_is_none(unspecified_platform):
    from vllm.config import CompilationMode

    config = _config()
    config.compilation_config.mode = None
    NPUPlatform.apply_config_platform_defaults(config)
    assert config.compilation_config.mode == CompilationMode.NONE
    config.compilation_config.mode = CompilationMode.VLLM_COMPILE
    NPUPlatform.apply_config_platform_defaults(config)
    assert config.compilation_config.mode == CompilationMode.VLLM_COMPILE, "only a default"


def test_environment_check_warns_about_unknown_npu_platform_variables(monkeypatch, vllm_plugin_log):
    monkeypatch.setenv("NPU_PLATFORM_EMULATE_DEVICE", "2")
    NPUPlatform.validate_environ(False)
    warnings = [message for level, message in vllm_plugin_log if level == "WARNING"]
    assert any(
        w.startswith("NPU_PLATFORM_EMULATE_DEVICE is not a variable npu-platform knows")
        and "Did you mean NPU_PLATFORM_EMULATE_DEVICES?" in w
        for w in warnings
    ), warnings


# --------------------------------------------------------------------------- process groups


def test_stateless_gloo_group(tmp_path):
    """The gloo stateless group vLLM asks the platform for (world of one, in this process)."""
    import torch.distributed as dist

    store = dist.PrefixStore("stateless/", dist.FileStore(str(tmp_path / "store"), 1))
    group = NPUPlatform.stateless_init_device_torch_dist_pg(
        "gloo", store, 0, 1, datetime.timedelta(seconds=30)
    )
    assert (group.rank(), group.size()) == (0, 1)
    assert group._get_backend(torch.device("cpu")).name() == "gloo"
    values = torch.arange(4.0)
    group.allreduce(values).wait()
    assert values.tolist() == [0.0, 1.0, 2.0, 3.0]
