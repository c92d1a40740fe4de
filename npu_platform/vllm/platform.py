"""vLLM's ``Platform`` for the Ascend NPU (torch device type ``npu``, HCCL).

vLLM loads it through :func:`npu_platform.entry_points.vllm.platform_plugin` whenever
detection finds an NPU; on the emulated NPU it is the same class, on the emulated device.

Every device call goes through :mod:`npu_platform.device`. vLLM forwards attributes it does
not find on the platform to ``torch.<device_type>`` (``Platform.__getattr__``); the device
queries vLLM makes that way (``current_device``, ``device_count``, ``synchronize``,
streams, events) are defined here explicitly so they reach the facade instead.

Execution is eager only: no torch.compile and no graph capture (``CompilationMode.NONE``,
``CUDAGraphMode.NONE``, ``enforce_eager``). Custom ops are all enabled
(``custom_ops=["all"]``) so RMSNorm, rotary embedding and SiluAndMul run through the op
layer.
"""

from __future__ import annotations

import inspect
import logging
import os
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import torch
from vllm.platforms.interface import Platform, PlatformEnum

from npu_platform import device as npu_device
from npu_platform import env as npu_env

if TYPE_CHECKING:
    from torch.distributed import PrefixStore, ProcessGroup
    from vllm.config import VllmConfig
    from vllm.v1.attention.backends.registry import AttentionBackendEnum
    from vllm.v1.attention.selector import AttentionSelectorConfig

logger = logging.getLogger("vllm.npu_platform")

#: Name under which our attention backend is registered with vLLM (``--attention-backend``).
ATTENTION_BACKEND_NAME = "NPU_ATTN"
ATTENTION_BACKEND_PATH = "npu_platform.vllm.attention.NPUAttentionBackend"
#: Name under which our sleep-mode backend is registered (``--sleep-mode-backend``).
SLEEP_BACKEND_NAME = "npu"
WORKER_CLS = "npu_platform.vllm.worker.NPUWorker"
COMMUNICATOR_CLS = (
    "vllm.distributed.device_communicators.base_device_communicator.DeviceCommunicatorBase"
)
#: Default KV-cache block size (tokens) when the user did not choose one: the size the
#: fused attention kernel is documented and proven with (see ``attention.py``).
DEFAULT_BLOCK_SIZE = 128


def check_block_size(block_size: int) -> None:
    """Refuse, at start-up, a KV-cache block size the NPU attention kernel rejects."""
    from npu_platform.vllm.attention import (
        KERNEL_BLOCK_MULTIPLE,
        MAX_KERNEL_BLOCK_SIZE,
        NPUAttentionBackend,
    )

    if not NPUAttentionBackend.supports_block_size(block_size):
        raise ValueError(
            f"--block-size {block_size} is not supported on the NPU: "
            "npu_fused_infer_attention_score pages the KV cache in blocks of a multiple of "
            f"{KERNEL_BLOCK_MULTIPLE} tokens, at most {MAX_KERNEL_BLOCK_SIZE} (torch_npu "
            f"_op_plugin_docs.py, page attention). Use --block-size {DEFAULT_BLOCK_SIZE} "
            "(the default) or leave it unset."
        )


class NPUPlatform(Platform):
    """Huawei Ascend NPU (torch_npu, HCCL)."""

    _enum = PlatformEnum.OOT
    device_name: str = "npu"
    device_type: str = "npu"
    dispatch_key: str = "PrivateUse1"
    ray_device_key: str = "NPU"
    device_control_env_var: str = "ASCEND_RT_VISIBLE_DEVICES"
    dist_backend: str = "hccl"
    # Helpers vLLM compiles on their own (outside the model) run eagerly.
    simple_compile_backend: str = "eager"
    supported_quantization: list[str] = []
    # Our variables travel to Ray workers with the rest of the environment.
    additional_env_vars: list[str] = list(npu_env.VARIABLES)

    # ------------------------------------------------------------------ dtypes
    @property
    def supported_dtypes(self) -> list[torch.dtype]:
        return [torch.bfloat16, torch.float16, torch.float32]

    @classmethod
    def check_if_supports_dtype(cls, dtype: torch.dtype) -> None:
        if dtype not in (torch.bfloat16, torch.float16, torch.float32):
            raise ValueError(
                f"{dtype} is not supported on {cls.get_device_name()}; "
                "use --dtype bfloat16, float16 or float32."
            )

    # ------------------------------------------------------------------ device queries
    @classmethod
    def get_device_name(cls, device_id: int = 0) -> str:
        return npu_device.get_device_name(device_id)

    @classmethod
    def get_device_uuid(cls, device_id: int = 0) -> str:
        # torch_npu exposes no device UUID; the host and the physical index identify it.
        physical = cls.device_id_to_physical_device_id(device_id)
        return f"npu-{os.uname().nodename}-{physical}"

    @classmethod
    def get_device_total_memory(cls, device_id: int = 0) -> int:
        return int(npu_device.mem_get_info(device_id)[1])

    @classmethod
    def get_current_memory_usage(cls, device: torch.types.Device | None = None) -> float:
        index = None
        if isinstance(device, torch.device):
            index = device.index
        elif isinstance(device, int):
            index = device
        free, total = npu_device.mem_get_info(index)
        return float(total - free)

    @classmethod
    def get_all_gpu_pci_bus_ids(cls) -> dict[int, str]:
        raise NotImplementedError(
            "VLLM_GPU_NIC_PCIE_MAPPING is not supported on the Ascend NPU platform; "
            "use HCCL's own NIC selection (HCCL_SOCKET_IFNAME, hccn.conf) instead."
        )

    @classmethod
    def num_compute_units(cls, device_id: int = 0) -> int:
        return npu_device.num_compute_units(device_id)

    @classmethod
    def set_device(cls, device: torch.device) -> None:
        npu_device.set_device(device)

    @classmethod
    def manual_seed_all(cls, seed: int) -> None:
        npu_device.manual_seed_all(seed)

    @classmethod
    def current_device(cls) -> int:
        return npu_device.current_device()

    @classmethod
    def device_count(cls) -> int:
        return npu_device.device_count()

    @classmethod
    def synchronize(cls, device: Any = None) -> None:
        index = device.index if isinstance(device, torch.device) else device
        npu_device.synchronize(index)

    @classmethod
    def empty_cache(cls) -> None:
        npu_device.empty_cache()

    @classmethod
    def mem_get_info(cls, device: Any = None) -> tuple[int, int]:
        index = device.index if isinstance(device, torch.device) else device
        return npu_device.mem_get_info(index)

    @classmethod
    def Stream(cls, *args: Any, **kwargs: Any) -> Any:  # noqa: N802 - torch.npu.Stream
        return npu_device.Stream(*args, **kwargs)

    @classmethod
    def Event(cls, *args: Any, **kwargs: Any) -> Any:  # noqa: N802 - torch.npu.Event
        return npu_device.Event(*args, **kwargs)

    @classmethod
    def current_stream(cls, device: Any = None) -> Any:
        index = device.index if isinstance(device, torch.device) else device
        return npu_device.current_stream(index)

    @classmethod
    def stream(cls, s: Any) -> Any:
        return npu_device.stream(s)

    @classmethod
    def inference_mode(cls):
        return torch.inference_mode(mode=True)

    @classmethod
    def is_pin_memory_available(cls) -> bool:
        # torch_npu pins host memory through ACL (aclrtMallocHost).
        return True

    def is_sleep_mode_available(self) -> bool:
        from npu_platform.vllm import sleep

        return sleep.available()

    def is_cumem_allocator_available(self) -> bool:
        return False

    # ------------------------------------------------------------------ kernels / ops
    @classmethod
    def import_kernels(cls) -> None:
        # There are no vLLM C kernels here (vLLM is built with VLLM_TARGET_DEVICE=empty);
        # every kernel comes from npu_platform.ops.
        return None

    @classmethod
    def register_triton_kernel_overrides(cls) -> None:
        # vLLM core launches a Triton kernel for KV-cache slot mapping; we run a PyTorch one.
        from npu_platform.vllm import kernels

        kernels.register()

    @classmethod
    def get_attn_backend_cls(
        cls,
        selected_backend: AttentionBackendEnum,
        attn_selector_config: AttentionSelectorConfig,
        num_heads: int | None = None,
    ) -> str:
        from npu_platform.vllm.attention import NPUAttentionBackend

        if selected_backend is not None and selected_backend.name != ATTENTION_BACKEND_NAME:
            raise ValueError(
                f"attention backend {selected_backend.name} is not available on "
                f"{cls.get_device_name()}; use --attention-backend {ATTENTION_BACKEND_NAME} "
                "or leave it unset."
            )
        # Pass the selector's fields that this vLLM's validate_configuration knows (the two
        # grow independently between releases).
        accepted = inspect.signature(NPUAttentionBackend.validate_configuration).parameters
        fields = {k: v for k, v in attn_selector_config._asdict().items() if k in accepted}
        reasons = NPUAttentionBackend.validate_configuration(device_capability=None, **fields)
        if reasons:
            raise ValueError(
                f"the {ATTENTION_BACKEND_NAME} attention backend cannot run this model: "
                f"{'; '.join(reasons)} ({attn_selector_config!r})."
            )
        logger.info("Using the %s attention backend.", ATTENTION_BACKEND_NAME)
        return ATTENTION_BACKEND_PATH

    @classmethod
    def get_punica_wrapper(cls) -> str:
        # The pure-PyTorch LoRA kernels; nothing NPU-specific yet.
        return "vllm.lora.punica_wrapper.punica_cpu.PunicaWrapperCPU"

    @classmethod
    def get_device_communicator_cls(cls) -> str:
        return COMMUNICATOR_CLS

    @classmethod
    def opaque_attention_op(cls) -> bool:
        # Eager execution: the attention layer calls our backend directly.
        return False

    @classmethod
    def support_static_graph_mode(cls) -> bool:
        return False

    @classmethod
    def support_hybrid_kv_cache(cls) -> bool:
        return False

    @classmethod
    def check_runner_kv_caches_multi_layer(cls) -> None:
        # Our runner is vLLM's GPU model runner, whose KV-cache binding handles several
        # attention layers per layer index.
        return None

    @classmethod
    def stateless_init_device_torch_dist_pg(
        cls,
        backend: str,
        prefix_store: PrefixStore,
        group_rank: int,
        group_size: int,
        timeout: timedelta,
    ) -> ProcessGroup:
        if backend == "gloo":
            from vllm.distributed.utils import init_gloo_process_group

            return init_gloo_process_group(
                prefix_store=prefix_store,
                group_rank=group_rank,
                group_size=group_size,
                timeout=timeout,
            )
        from npu_platform.vllm.communicator import new_hccl_process_group

        return new_hccl_process_group(prefix_store, group_rank, group_size, timeout)

    # ------------------------------------------------------------------ configuration
    @classmethod
    def pre_register_and_update(cls, parser: Any = None) -> None:
        # Runs before argument parsing: make --attention-backend NPU_ATTN valid there.
        from npu_platform.vllm.plugin import register_all

        register_all()

    @classmethod
    def apply_config_platform_defaults(cls, vllm_config: VllmConfig) -> None:
        from vllm.config import CompilationMode

        compilation = vllm_config.compilation_config
        if compilation.mode is None:
            compilation.mode = CompilationMode.NONE

    @classmethod
    def check_and_update_config(cls, vllm_config: VllmConfig) -> None:
        from vllm.config import CompilationMode, CUDAGraphMode

        if vllm_config.speculative_config is not None:
            raise ValueError(
                "speculative decoding is not supported on the NPU platform yet: its attention "
                "backend has no multi-token verification path and its sleep mode does not "
                "cover draft models. Remove --speculative-config."
            )
        parallel = vllm_config.parallel_config
        if parallel.worker_cls == "auto":
            parallel.worker_cls = WORKER_CLS
        parallel.disable_custom_all_reduce = True
        if getattr(parallel, "enable_dbo", False):
            logger.warning("Dual-batch overlap is not supported on the NPU; disabled.")
            parallel.enable_dbo = False

        # Eager only: no torch.compile, no graph capture.
        compilation = vllm_config.compilation_config
        if compilation.mode not in (None, CompilationMode.NONE):
            logger.warning(
                "torch.compile is not used on the NPU platform; running eagerly "
                "(compilation mode %s -> NONE).",
                compilation.mode,
            )
        compilation.mode = CompilationMode.NONE
        compilation.cudagraph_mode = CUDAGraphMode.NONE
        compilation.cudagraph_capture_sizes = []
        compilation.max_cudagraph_capture_size = 0
        # Every custom op on: they are what routes RMSNorm, RoPE and SiluAndMul to
        # npu_platform.ops. Keep the user's +op/-op directives.
        custom_ops = [op for op in compilation.custom_ops if op not in ("all", "none")]
        compilation.custom_ops = ["all", *custom_ops]

        model_config = vllm_config.model_config
        if model_config is not None:
            model_config.enforce_eager = True
            if model_config.enable_sleep_mode and model_config.sleep_mode_backend == "cumem":
                model_config.sleep_mode_backend = SLEEP_BACKEND_NAME

        cache_config = vllm_config.cache_config
        if cache_config is not None:
            if not cache_config.user_specified_block_size:
                cache_config.block_size = DEFAULT_BLOCK_SIZE
            else:
                check_block_size(cache_config.block_size)

        # The output copy runs on the main stream; no async scheduling overlap.
        scheduler = vllm_config.scheduler_config
        if scheduler is not None:
            scheduler.async_scheduling = False

        # A process forked after the NPU runtime started (or after torch started its thread
        # pools) hangs at its first device call: start workers with spawn, as vLLM does for
        # XPU and for CUDA once CUDA is initialised. An explicit user choice is kept.
        if "VLLM_WORKER_MULTIPROC_METHOD" not in os.environ:
            os.environ["VLLM_WORKER_MULTIPROC_METHOD"] = "spawn"

        # The V2 model runner needs Triton kernels; ours derives from the V1 runner.
        os.environ.setdefault("VLLM_USE_V2_MODEL_RUNNER", "0")

        # vLLM's engine imports humming (CUDA kernels for quantized linear layers), whose
        # import starts two background Python processes that prebuild its nvrtc compiler and
        # CUDA launcher. Neither can be built without CUDA, so on the NPU they only spend a
        # core for several seconds per engine and worker process. An explicit choice is kept.
        os.environ.setdefault("HUMMING_DISABLE_PARALLEL_BUILD", "1")

    @classmethod
    def validate_environ(cls, hard_fail: bool) -> None:
        # Our own variables are NPU_PLATFORM_* (never VLLM_*), so vLLM's check of unknown
        # VLLM_* names never trips on them; check ours with our own rules too.
        super().validate_environ(hard_fail)
        for warning in npu_env.validate():
            logger.warning(warning)

    # vLLM 0.33 asks the platform which KV-cache config builder to use, passing the
    # VllmConfig; ours is vLLM's own. vLLM 0.32 has no such hook (and never calls it).
    @classmethod
    def get_kv_cache_config_builder_cls(cls, vllm_config: VllmConfig) -> str | None:
        base = getattr(super(), "get_kv_cache_config_builder_cls", None)
        return base(vllm_config) if base is not None else None
