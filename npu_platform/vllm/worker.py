"""The NPU worker: vLLM's GPU worker with its device handling done through the facade.

Like vLLM's own XPU and CPU workers this is a thin subclass of
``vllm.v1.worker.gpu_worker.Worker``. It overrides what is CUDA-specific there:

* device selection, memory accounting and seeding use :mod:`npu_platform.device`;
* memory pools: the GPU worker tags allocations (``weights``, ``kv_cache``, ``runtime``,
  ``workspace``) with CUDA's CuMem allocator; here every tag goes to
  :func:`npu_platform.vllm.sleep.memory_pool`, which is the sleep/wake memory manager when
  sleep mode is on and a no-op otherwise;
* sleep and wake-up do what vLLM's GPU worker does (level-2 buffers of the model,
  ``sleep_preserve_parameter_names``, the device communicators' suspend hook under
  ``enable_nccl_comm_suspend``, and on vLLM 0.33 a KV connector's unregister/restore hooks
  around the KV cache's sleep; draft models do not exist here, as the platform refuses
  speculative decoding), with the facade for synchronisation and memory info
  and our sleep-mode backend (``--sleep-mode-backend npu``, chosen automatically) for the
  memory itself.
"""

from __future__ import annotations

import contextlib
import gc
import logging
from typing import TYPE_CHECKING

import torch
from vllm.distributed.kv_transfer import get_kv_transfer_group, has_kv_transfer_group
from vllm.distributed.parallel_state import resume_device_comms, suspend_device_comms
from vllm.platforms import current_platform
from vllm.utils.torch_utils import set_random_seed
from vllm.v1.worker.gpu_worker import Worker, init_worker_distributed_environment
from vllm.v1.worker.worker_base import CompilationTimes

from npu_platform import device as npu_device
from npu_platform import ops
from npu_platform.vllm import sleep

if TYPE_CHECKING:
    from vllm.config import VllmConfig

    from npu_platform.vllm.model_runner import NPUModelRunner

logger = logging.getLogger("vllm.npu_platform")

_GIB = 1 << 30


def _kv_connector_hook(name: str) -> None:
    """Call the KV connector's ``name`` hook, when a connector is configured and has it.

    vLLM 0.33's GPU worker has the connector drop its KV-cache registrations before the
    memory sleeps (``unregister_kv_caches``) and redo them once the KV cache is back
    (``restore_kv_caches``); vLLM 0.32's connectors have neither hook.
    """
    if has_kv_transfer_group():
        hook = getattr(get_kv_transfer_group(), name, None)
        if hook is not None:
            hook()


class NPUWorker(Worker):
    """A vLLM worker on one Ascend NPU."""

    def __init__(
        self,
        vllm_config: VllmConfig,
        local_rank: int,
        rank: int,
        distributed_init_method: str,
        is_driver_worker: bool = False,
    ) -> None:
        super().__init__(vllm_config, local_rank, rank, distributed_init_method, is_driver_worker)
        # Our runner derives from vLLM's V1 GPU model runner.
        self.use_v2_model_runner = False
        self.init_free_memory = 0
        self.total_memory = 0

    # ------------------------------------------------------------------ device
    def _local_device_index(self) -> int:
        parallel = self.parallel_config
        local_rank = self.local_rank
        if (
            parallel.distributed_executor_backend not in ("ray", "external_launcher")
            and parallel.data_parallel_backend != "ray"
            and parallel.nnodes_within_dp == 1
        ):
            dp_local_rank = parallel.data_parallel_rank_local
            if dp_local_rank is None:
                dp_local_rank = parallel.data_parallel_index
            replica = (
                parallel.pipeline_parallel_size
                * parallel.prefill_context_parallel_size
                * parallel.tensor_parallel_size
            )
            local_rank += dp_local_rank * replica
        self.local_rank = local_rank
        return current_platform.logical_device_id_to_visible_device_id(local_rank)

    def init_device(self) -> None:
        index = self._local_device_index()
        npu_device.set_device(index)
        self.device = npu_device.torch_device(index)
        current_platform.check_if_supports_dtype(self.model_config.dtype)

        init_worker_distributed_environment(
            self.vllm_config,
            self.rank,
            self.distributed_init_method,
            self.local_rank,
            current_platform.dist_backend,
        )
        set_random_seed(self.model_config.seed)

        # The attention kernels' compressed causal mask is created once per device; make it
        # here, outside inference mode, so it is an ordinary tensor.
        ops.compressed_causal_mask(self.device)

        gc.collect()
        npu_device.empty_cache()
        self.init_free_memory, self.total_memory = npu_device.mem_get_info(index)
        logger.debug(
            "NPU worker rank %d on %s: %.2f GiB free of %.2f GiB",
            self.rank,
            current_platform.get_device_name(index),
            self.init_free_memory / _GIB,
            self.total_memory / _GIB,
        )
        self._init_workspace_and_model_runner()

    def _make_model_runner(self) -> NPUModelRunner:
        from npu_platform.vllm.model_runner import NPUModelRunner

        return NPUModelRunner(self.vllm_config, self.device)

    # ------------------------------------------------------------------ memory
    def _maybe_get_memory_pool_context(self, tag: str) -> contextlib.AbstractContextManager:
        return sleep.memory_pool(tag, self.vllm_config)

    @contextlib.contextmanager
    def _scoped_allocator_max_split(self, max_split_size_mb: int):
        # A CUDA caching-allocator setting; nothing to scope on the NPU.
        yield

    @torch.inference_mode()
    def determine_available_memory(self) -> int:
        """Bytes for the KV cache: the configured amount, or what profiling leaves free."""
        explicit = self.cache_config.kv_cache_memory_bytes
        if explicit:
            logger.info("KV cache: %.3f GiB as configured.", explicit / _GIB)
            return int(explicit)

        # As vLLM does on CUDA: the peak of torch's allocations during a profile run (weights,
        # lasting buffers and the largest activations), plus what the device holds outside
        # torch's allocator (runtime, communicators), must fit in the utilisation budget.
        npu_device.synchronize()
        gc.collect()
        npu_device.empty_cache()
        npu_device.reset_peak_memory_stats()
        self.model_runner.profile_run()
        npu_device.synchronize()
        peak = npu_device.max_memory_allocated()
        free_after, total = npu_device.mem_get_info()
        non_torch = max((total - free_after) - npu_device.memory_reserved(), 0)
        requested = int(total * self.cache_config.gpu_memory_utilization)
        available = requested - peak - non_torch
        logger.info(
            "Memory profile: peak %.3f GiB in torch, %.3f GiB outside torch, budget %.3f GiB "
            "of %.3f GiB.",
            peak / _GIB,
            non_torch / _GIB,
            requested / _GIB,
            total / _GIB,
        )
        if available <= 0:
            raise ValueError(
                f"No memory left for the KV cache: the profile run peaked at "
                f"{peak / _GIB:.2f} GiB (plus {non_torch / _GIB:.2f} GiB outside torch) of "
                f"{total / _GIB:.2f} GiB, and --gpu-memory-utilization "
                f"{self.cache_config.gpu_memory_utilization} allows "
                f"{requested / _GIB:.2f} GiB. Raise --gpu-memory-utilization or set "
                "--kv-cache-memory-bytes."
            )
        logger.info("KV cache: %.3f GiB available after profiling.", available / _GIB)
        return available

    # ------------------------------------------------------------------ sleep mode
    def sleep(self, level: int = 1) -> None:
        if level not in (1, 2):
            raise ValueError(f"sleep level must be 1 or 2, got {level}")
        npu_device.synchronize()
        free_before = npu_device.mem_get_info()[0]
        if level == 2:
            model = self.model_runner.model
            self._save_sleep_parameters(model)
            self._sleep_saved_buffers = {
                name: buffer.cpu().clone() for name, buffer in model.named_buffers()
            }
        _kv_connector_hook("unregister_kv_caches")
        self.sleep_mode_backend.suspend(level)
        if self.vllm_config.model_config.enable_nccl_comm_suspend:
            # The device communicators' suspend hook (a no-op for HCCL groups, whose memory
            # torch_npu's ProcessGroupHCCL owns), called as vLLM's GPU worker calls it.
            suspend_device_comms()
        npu_device.synchronize()
        free_after, total = npu_device.mem_get_info()
        logger.info(
            "Sleep (level %d) freed %.2f GiB; %.2f GiB still in use.",
            level,
            max(free_after - free_before, 0) / _GIB,
            (total - free_after) / _GIB,
        )

    def wake_up(self, tags: list[str] | None = None) -> None:
        self.sleep_mode_backend.resume(tags)
        if tags is None or "kv_cache" in tags:
            _kv_connector_hook("restore_kv_caches")
        if self.vllm_config.model_config.enable_nccl_comm_suspend:
            resume_device_comms()
        wake_weights = tags is None or "weights" in tags
        if wake_weights and self._sleep_saved_parameters:
            self._restore_sleep_parameters(self.model_runner.model)
        if wake_weights and self._sleep_saved_buffers:
            model = self.model_runner.model
            for name, buffer in model.named_buffers():
                if name in self._sleep_saved_buffers:
                    buffer.data.copy_(self._sleep_saved_buffers[name].data)
            self._sleep_saved_buffers = {}
        npu_device.synchronize()

    def compile_or_warm_up_model(self) -> CompilationTimes:
        """Eager execution: nothing to compile, capture or JIT-warm. Run the sampler once
        at the largest batch (as the GPU worker does) so its buffers exist up front."""
        from vllm.config import CUDAGraphMode
        from vllm.distributed.parallel_state import get_pp_group

        if get_pp_group().is_last_rank:
            max_num_reqs = min(
                self.scheduler_config.max_num_seqs,
                self.scheduler_config.max_num_batched_tokens,
            )
            hidden_states, last_hidden_states = self.model_runner._dummy_run(
                num_tokens=max_num_reqs,
                skip_eplb=True,
                cudagraph_runtime_mode=CUDAGraphMode.NONE,
            )
            if self.model_runner.is_pooling_model:
                self.model_runner._dummy_pooler_run(hidden_states)
            else:
                self.model_runner._dummy_sampler_run(hidden_states=last_hidden_states)
        set_random_seed(self.model_config.seed, self.parallel_config.data_parallel_index)
        return CompilationTimes(
            language_model=self.compilation_config.compilation_time,
            encoder=self.compilation_config.encoder_compilation_time,
        )
