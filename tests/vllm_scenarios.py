"""Scenarios the vLLM tests run in a fresh interpreter, one per subprocess.

vLLM keeps process-wide state (its resolved platform, the custom-op registry, the global
config) and the emulated NPU patches ``torch.accelerator`` for the worker's benefit, so the
end-to-end tests start vLLM in a subprocess (``python tests/vllm_scenarios.py SCENARIO
ARGS``) and read one JSON object from the line marked ``SCENARIO-RESULT``. vLLM runs as users
run it: its engine core in a spawned process (the default multiprocessing), after torch work
in the parent (the Hugging Face reference); what happens in the engine is read back with
``LLM.collective_rpc``.

Scenario ``generate``: build a tiny model, run HF greedy ``generate`` per prompt as the
reference, run ``LLM.generate`` through the plugin on the emulated NPU (all prompts in one
batch), optionally a second pass whose prompts extend the first pass's (prefix-cache hits),
optionally a traced single-prompt pass recording the order of attention metadata builds and
torch_npu op calls, and report everything.

``--real`` (the hardware tests, ``tests/hardware``): the scenario runs on the real Ascend NPU
that detection finds; it does not turn the emulated NPU on (call it with
``scenario_env(emulate=False)``), records the detected target, and, in ``sleep``, also reads
the device's own memory count (``torch.npu.mem_get_info``) in the engine process. Without it
every scenario runs on the emulated NPU, which it switches on itself.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
#: Marks the result line on stdout (vLLM's worker processes log to stdout as well).
RESULT_PREFIX = "SCENARIO-RESULT "
sys.path.insert(0, str(HERE))


def scenario_env(emulate: bool = True, **extra: str) -> dict[str, str]:
    """A clean environment for a scenario subprocess.

    Our own and vLLM's variables from the calling environment are dropped, so the start-up
    patches run at their default (on, whenever the NPU is real or emulated), as users get
    them.
    """
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("NPU_PLATFORM_", "VLLM_")) and k != "ASCEND_RT_VISIBLE_DEVICES"
    }
    env["TOKENIZERS_PARALLELISM"] = "false"
    # The scenarios read state out of the engine process with collective_rpc(function),
    # which vLLM sends with pickle only when this is set (a test instrument, not a setting
    # of the engine under test).
    env["VLLM_ALLOW_INSECURE_SERIALIZATION"] = "1"
    if emulate:
        env["NPU_PLATFORM_EMULATE"] = "1"
    env.update(extra)
    return env


def run(scenario: str, *args: str, env: dict[str, str] | None = None, timeout: int = 900) -> dict:
    """Run ``scenario`` in a fresh interpreter and return its JSON result."""
    import subprocess

    proc = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), scenario, *args],
        check=False,
        env=scenario_env() if env is None else env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith(RESULT_PREFIX)]
    if proc.returncode != 0 or not lines:
        raise AssertionError(
            f"scenario {scenario} {' '.join(args)} failed (exit {proc.returncode}):\n"
            f"{proc.stderr[-6000:]}"
        )
    return json.loads(lines[-1][len(RESULT_PREFIX) :])


def _select_npu(args: argparse.Namespace, devices: int | None = None) -> None:
    """Switch this process (and the engine processes it starts) to the emulated NPU, with
    ``devices`` emulated devices if given; with ``--real`` leave it off, for the real NPU."""
    if args.real:
        return
    os.environ["NPU_PLATFORM_EMULATE"] = "1"
    if devices is not None:
        os.environ["NPU_PLATFORM_EMULATE_DEVICES"] = str(devices)


def _record_target(args: argparse.Namespace, result: dict) -> None:
    """With ``--real``: what detection found (the hardware tests require ``real``)."""
    if args.real:
        from npu_platform.detect import detect

        result["target"] = detect().target.value


def _shape(args: argparse.Namespace) -> dict[str, int]:
    """Model overrides: hidden size, query heads (head size = hidden / heads), weight spread."""
    return {
        "hidden_size": args.hidden_size,
        "num_attention_heads": args.heads,
        "initializer_range": args.init_range,
    }


def _block_size(args: argparse.Namespace) -> dict[str, int]:
    """``block_size`` only when the test chose one: otherwise the platform's default."""
    return {} if args.block_size is None else {"block_size": args.block_size}


def _tokenizer(model_dir: Path):
    import tiny_models

    return tiny_models.load_tokenizer(model_dir)


def hf_margins(model_dir: Path, prompts: list[list[int]], outputs: list[list[int]]):
    """For each generated token: (float32 max logit) - (logit of the chosen token)."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
    margins = []
    with torch.no_grad():
        for ids, gen in zip(prompts, outputs, strict=True):
            seq = torch.tensor([ids + gen])
            logits = model(seq).logits[0, len(ids) - 1 : len(ids) - 1 + len(gen)]
            logits[:, 2] = float("-inf")  # EOS is masked by min_tokens
            chosen = logits.gather(1, torch.tensor(gen).unsqueeze(1)).squeeze(1)
            margins.append((logits.max(dim=1).values - chosen).tolist())
    return margins


class Tracer:
    """Records attention metadata builds and torch_npu op calls, in order (in the worker)."""

    def __init__(self) -> None:
        self.events: list[str] = []
        self.active = False

    def install(self) -> None:
        from npu_platform import ops
        from npu_platform.vllm import attention

        original_call = ops._call
        original_build = attention.NPUAttentionMetadataBuilder.build
        tracer = self

        def call(op, *args, **kwargs):
            if tracer.active:
                tracer.events.append(op)
            return original_call(op, *args, **kwargs)

        def build(self, *args, **kwargs):
            if tracer.active:
                tracer.events.append("BUILD")
            return original_build(self, *args, **kwargs)

        ops._call = call
        attention.NPUAttentionMetadataBuilder.build = build


def _trace_install(worker) -> bool:
    """(collective_rpc) Install a tracer in the worker's process (kept on the worker)."""
    if getattr(worker, "_scenario_tracer", None) is None:
        worker._scenario_tracer = Tracer()
        worker._scenario_tracer.install()
    return True


def _trace_switch(worker, on: bool) -> list[str]:
    """(collective_rpc) Start or stop tracing; the events so far."""
    tracer = worker._scenario_tracer
    tracer.active = on
    if on:
        tracer.events.clear()
    return list(tracer.events)


def _oot_ops(worker) -> list[str]:
    """(collective_rpc) The custom ops the worker's process registered out of tree."""
    from vllm.model_executor.custom_op import op_registry_oot

    return sorted(op_registry_oot)


def _humming(worker) -> dict:
    """(collective_rpc) Whether vLLM imported humming in the worker's process, and whether
    that import was told not to start its CUDA prebuild processes."""
    return {
        "imported": "humming" in sys.modules,
        "parallel_build": os.environ.get("HUMMING_DISABLE_PARALLEL_BUILD"),
    }


def generate(args: argparse.Namespace) -> dict:
    _select_npu(args)
    import tiny_models

    model_dir = (
        Path(args.workdir) / f"{args.kind}-h{args.hidden_size}-n{args.heads}-i{args.init_range}"
    )
    if not (model_dir / "config.json").exists():
        tiny_models.build_model(args.kind, model_dir, seed=args.seed, **_shape(args))
    tok = _tokenizer(model_dir)
    texts = tiny_models.prompts(
        args.num_prompts, seed=args.seed, min_len=args.min_len, max_len=args.max_len
    )
    prompts = [tok(t).input_ids for t in texts]
    result: dict = {"prompt_lens": [len(p) for p in prompts]}
    _record_target(args, result)

    second: list[list[int]] = []
    if args.prefix_pass:
        # Each second-pass prompt is a first-pass prompt plus new words: its first blocks
        # are in the prefix cache by then.
        extra = [tok(t).input_ids for t in tiny_models.prompts(args.num_prompts, seed=99)]
        second = [p + e[: 3 + i] for i, (p, e) in enumerate(zip(prompts, extra, strict=True))]

    if args.reference in ("exact", "near-tie"):
        result["ref"] = tiny_models.hf_greedy(model_dir, prompts, args.new_tokens, args.dtype)
        if second:
            result["ref_prefix"] = tiny_models.hf_greedy(
                model_dir, second, args.new_tokens, args.dtype
            )

    from vllm import LLM, SamplingParams
    from vllm.platforms import current_platform

    kwargs = {}
    if args.max_num_batched_tokens:
        kwargs["max_num_batched_tokens"] = args.max_num_batched_tokens
        kwargs["enable_chunked_prefill"] = True
    started = time.perf_counter()
    llm = LLM(
        model=str(model_dir),
        dtype=args.dtype,
        max_model_len=256,
        max_num_seqs=args.num_prompts,
        kv_cache_memory_bytes=16 << 20,
        enable_prefix_caching=True,
        seed=args.seed,
        **_block_size(args),
        **kwargs,
    )
    result["init_s"] = time.perf_counter() - started
    result["block_size"] = llm.llm_engine.vllm_config.cache_config.block_size
    result["platform"] = type(current_platform).__name__
    result["device_type"] = current_platform.device_type
    params = SamplingParams(temperature=0.0, max_tokens=args.new_tokens, min_tokens=args.new_tokens)

    def run(batch):
        outs = llm.generate([{"prompt_token_ids": p} for p in batch], params, use_tqdm=False)
        return [list(o.outputs[0].token_ids) for o in outs], [o.num_cached_tokens for o in outs]

    started = time.perf_counter()
    result["got"], result["cached"] = run(prompts)
    result["generate_s"] = time.perf_counter() - started
    if second:
        result["got_prefix"], result["cached_prefix"] = run(second)
    if args.reference == "margins":
        result["margins"] = hf_margins(model_dir, prompts, result["got"])
    if args.reference == "near-tie":
        result["agreement"] = tiny_models.greedy_agreement(
            model_dir, prompts, result["got"], result["ref"], args.dtype
        )
        if second:
            result["agreement_prefix"] = tiny_models.greedy_agreement(
                model_dir, second, result["got_prefix"], result["ref_prefix"], args.dtype
            )
    if args.trace:
        trace_prompt = tiny_models.prompts(1, seed=7)[0]
        llm.collective_rpc(_trace_install)
        llm.collective_rpc(_trace_switch, args=(True,))
        traced, _ = run([tok(trace_prompt).input_ids])
        result["trace"] = llm.collective_rpc(_trace_switch, args=(False,))[0]
        result["trace_new_tokens"] = len(traced[0])
        result["oot_ops"] = llm.collective_rpc(_oot_ops)[0]
        result["humming"] = llm.collective_rpc(_humming)[0]
    return result


#: The sleep scenario's model: the tiny Llama with a wide MLP and 4 layers, about 48 MiB of
#: float32 weights, so that what sleep frees stands out in the process's RSS.
SLEEP_MODEL = {"intermediate_size": 16384, "num_hidden_layers": 4}
SLEEP_KV_CACHE_BYTES = 256 << 20


def _memory_status(worker=None) -> dict[str, int]:
    """(collective_rpc) VmRSS and its anonymous and shared-memory parts, in bytes, of the
    process running the worker (``/proc/self/status``).

    On the emulated NPU the memory manager's device memory is the emulated ACL runtime's
    memfd pages (shared memory) and its host backups are anonymous memory.
    """
    import gc

    gc.collect()
    out = {}
    with open("/proc/self/status") as fh:
        for line in fh:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "RssAnon", "RssShmem"):
                out[key] = int(value.split()[0]) * 1024
    return out


def _model_bytes(worker) -> dict:
    """(collective_rpc) Bytes of the model's parameters and buffers on the worker, and the
    parameters whose memory is not the sleep/wake memory manager's."""
    from npu_platform.memory.errors import UnknownAllocation
    from npu_platform.vllm import sleep as npu_sleep

    manager = npu_sleep.saver().manager
    model = worker.model_runner.model
    unmanaged = []
    for name, param in model.named_parameters():
        try:
            manager.info(param.data_ptr())
        except UnknownAllocation:
            unmanaged.append(name)
    return {
        "parameters": sum(p.numel() * p.element_size() for p in model.parameters()),
        "buffers": sum(b.numel() * b.element_size() for b in model.buffers()),
        "unmanaged_parameters": unmanaged,
    }


def _parameters_all_zero(worker) -> bool:
    """(collective_rpc) Whether every parameter of the worker's model is zero."""
    return all(int(p.count_nonzero()) == 0 for p in worker.model_runner.model.parameters())


def _memory_stats(worker) -> dict:
    """(collective_rpc) The memory manager's per-tag byte counts in the worker's process."""
    from npu_platform.vllm import sleep as npu_sleep

    return npu_sleep.memory_stats()


def sleep(args: argparse.Namespace) -> dict:
    """Sleep level 1, then level 2 with vLLM's reload path, around identical generations.

    Records the memory manager's per-tag byte counts and the engine process's RSS before and
    after each step.
    """
    _select_npu(args)
    import tiny_models

    model_dir = Path(args.workdir) / "sleep-llama"
    if not (model_dir / "config.json").exists():
        tiny_models.build_model("llama", model_dir, seed=args.seed, **SLEEP_MODEL)
    tok = _tokenizer(model_dir)
    prompts = [tok(t).input_ids for t in tiny_models.prompts(4, seed=args.seed)]

    from vllm import LLM, SamplingParams

    llm = LLM(
        model=str(model_dir),
        dtype=args.dtype,
        **_block_size(args),
        max_model_len=256,
        kv_cache_memory_bytes=SLEEP_KV_CACHE_BYTES,
        enable_sleep_mode=True,
        seed=args.seed,
    )
    params = SamplingParams(temperature=0.0, max_tokens=16, min_tokens=16)

    def run() -> list[list[int]]:
        outs = llm.generate([{"prompt_token_ids": p} for p in prompts], params, use_tqdm=False)
        return [list(o.outputs[0].token_ids) for o in outs]

    def mem() -> dict:
        status = llm.collective_rpc(_memory_status)[0]
        if args.real:  # the device's own count: RSS does not hold device memory there
            status["device_used"] = llm.collective_rpc(_device_used)[0]
        return status

    def stats() -> dict:
        return llm.collective_rpc(_memory_stats)[0]

    result: dict = {"backend": llm.llm_engine.vllm_config.model_config.sleep_mode_backend}
    _record_target(args, result)
    result["checkpoint_bytes"] = tiny_models.weight_bytes(model_dir)
    result["model_bytes"] = llm.collective_rpc(_model_bytes)[0]
    result["before"] = run()
    result["stats_awake"] = stats()

    result["mem_awake"] = mem()
    llm.sleep(level=1)
    result["mem_level1"] = mem()
    result["stats_level1"] = stats()
    llm.wake_up()
    result["mem_woken1"] = mem()
    result["after_level1"] = run()

    result["mem_awake2"] = mem()
    llm.sleep(level=2)
    result["mem_level2"] = mem()
    result["stats_level2"] = stats()
    # vLLM's level-2 sequence: weights memory first, reload in place, then the KV cache.
    llm.wake_up(tags=["weights"])
    result["stats_weights_only"] = stats()
    result["zero_after_weights_wake"] = llm.collective_rpc(_parameters_all_zero)[0]
    llm.collective_rpc("reload_weights")
    result["zero_after_reload"] = llm.collective_rpc(_parameters_all_zero)[0]
    result["model_bytes_reloaded"] = llm.collective_rpc(_model_bytes)[0]
    result["stats_reloaded"] = stats()
    llm.wake_up(tags=["kv_cache"])
    result["mem_woken2"] = mem()
    result["stats_woken2"] = stats()
    result["after_level2"] = run()

    # The reloaded weights are still the manager's: level 1 again frees them all.
    result["mem_awake3"] = mem()
    llm.sleep(level=1)
    result["mem_level1_again"] = mem()
    result["stats_level1_again"] = stats()
    llm.wake_up()
    result["after_level1_again"] = run()
    return result


def _device_used(worker=None) -> int:
    """(collective_rpc) Device memory in use, by the device's own count (``mem_get_info``)."""
    import torch

    torch.npu.synchronize()
    free, total = torch.npu.mem_get_info()
    return total - free


def _device_and_host_memory(worker) -> dict[str, int]:
    """(collective_rpc) Device memory in use (the device's own count, ``mem_get_info``) and
    the engine process's resident host memory."""
    import torch

    free, total = torch.npu.mem_get_info()
    status = _memory_status()
    return {"device_used": total - free, "rss": status["VmRSS"], "anon": status["RssAnon"]}


def sleep_cycles(args: argparse.Namespace) -> dict:
    """``--cycles`` sleep/wake cycles, alternating level 1 and level 2 (with vLLM's reload
    sequence), a generation after each wake-up; device and host memory after each cycle."""
    _select_npu(args)
    import tiny_models

    model_dir = Path(args.workdir) / "llama"
    if not (model_dir / "config.json").exists():
        tiny_models.build_model("llama", model_dir, seed=args.seed)
    tok = _tokenizer(model_dir)
    prompts = [tok(t).input_ids for t in tiny_models.prompts(2, seed=args.seed)]

    from vllm import LLM, SamplingParams

    llm = LLM(
        model=str(model_dir),
        dtype=args.dtype,
        max_model_len=256,
        kv_cache_memory_bytes=32 << 20,
        enable_sleep_mode=True,
        # The GPU worker's communicator suspend/resume hook, as users may switch it on.
        enable_nccl_comm_suspend=True,
        seed=args.seed,
    )
    params = SamplingParams(temperature=0.0, max_tokens=4, min_tokens=4)

    def run() -> list[list[int]]:
        outs = llm.generate([{"prompt_token_ids": p} for p in prompts], params, use_tqdm=False)
        return [list(o.outputs[0].token_ids) for o in outs]

    result: dict = {"before": run(), "memory": [], "mismatches": []}
    result["memory_before"] = llm.collective_rpc(_device_and_host_memory)[0]
    for cycle in range(args.cycles):
        level = 1 + cycle % 2
        llm.sleep(level=level)
        if level == 1:
            llm.wake_up()
        else:
            llm.wake_up(tags=["weights"])
            llm.collective_rpc("reload_weights")
            llm.wake_up(tags=["kv_cache"])
        got = run()
        if got != result["before"]:
            result["mismatches"].append(cycle)
        result["memory"].append(llm.collective_rpc(_device_and_host_memory)[0])
    return result


def _kv_cache_and_weights(worker) -> dict[str, int]:
    """(collective_rpc) The device's total memory, the KV cache's bytes (its tensors'
    storages) and the model's parameter bytes, in the worker."""
    import torch

    storages = {}
    for tensor in worker.model_runner.kv_caches:
        storage = tensor.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
    model = worker.model_runner.model
    return {
        "total": torch.npu.mem_get_info()[1],
        "kv_cache": sum(storages.values()),
        "weights": sum(p.numel() * p.element_size() for p in model.parameters()),
    }


def kv_sizing(args: argparse.Namespace) -> dict:
    """The KV cache vLLM gets from the platform's memory profile, on a 1 GiB device with
    the default --gpu-memory-utilization; and the refusal of speculative decoding."""
    _select_npu(args)
    os.environ["NPU_PLATFORM_EMULATE_DEVICE_MEMORY"] = str(1 << 30)
    import tiny_models

    model_dir = Path(args.workdir) / args.kind
    if not (model_dir / "config.json").exists():
        tiny_models.build_model(args.kind, model_dir, seed=args.seed)
    from vllm import LLM
    from vllm.engine.arg_utils import EngineArgs

    result: dict = {}
    try:
        EngineArgs(
            model=str(model_dir),
            max_model_len=256,
            speculative_config={"method": "ngram", "num_speculative_tokens": 2},
        ).create_engine_config()
        result["speculative_refusal"] = None
    except Exception as exc:
        result["speculative_refusal"] = f"{type(exc).__name__}: {exc}"

    llm = LLM(model=str(model_dir), dtype=args.dtype, max_model_len=256, seed=args.seed)
    result.update(llm.collective_rpc(_kv_cache_and_weights)[0])
    result["utilization"] = llm.llm_engine.vllm_config.cache_config.gpu_memory_utilization
    return result


def tensor_parallel(args: argparse.Namespace) -> dict:
    """Tensor parallelism 2 on two emulated NPUs (gloo), against HF greedy generate."""
    _select_npu(args, devices=2)
    import tiny_models

    model_dir = Path(args.workdir) / args.kind
    if not (model_dir / "config.json").exists():
        tiny_models.build_model(args.kind, model_dir, seed=args.seed)
    tok = _tokenizer(model_dir)
    prompts = [tok(t).input_ids for t in tiny_models.prompts(args.num_prompts, seed=args.seed)]
    result: dict = {"ref": tiny_models.hf_greedy(model_dir, prompts, args.new_tokens, args.dtype)}

    from vllm import LLM, SamplingParams

    llm = LLM(
        model=str(model_dir),
        dtype=args.dtype,
        **_block_size(args),
        max_model_len=256,
        kv_cache_memory_bytes=16 << 20,
        tensor_parallel_size=2,
        max_num_batched_tokens=32,
        seed=args.seed,
    )
    params = SamplingParams(temperature=0.0, max_tokens=args.new_tokens, min_tokens=args.new_tokens)
    outs = llm.generate([{"prompt_token_ids": p} for p in prompts], params, use_tqdm=False)
    result["got"] = [list(o.outputs[0].token_ids) for o in outs]
    return result


def plugin(args: argparse.Namespace) -> dict:
    """The emulated platform's registrations and the engine config it produces."""
    _select_npu(args)

    import tiny_models
    import vllm.platforms as vllm_platforms
    from npu_platform.entry_points import vllm as entry

    result: dict = {"resolved_by_import": vllm_platforms._current_platform is not None}
    from vllm.platforms import current_platform

    result["platform"] = type(current_platform).__name__
    result["device_name"] = current_platform.device_name
    result["device_type"] = current_platform.device_type
    result["dist_backend"] = current_platform.dist_backend
    result["dispatch_key"] = current_platform.dispatch_key

    from vllm.plugins import load_general_plugins

    from npu_platform.vllm import plugin as npu_plugin

    load_general_plugins()
    for _ in range(5):
        entry.register()
    result["registered"] = list(npu_plugin.registered)

    from vllm.device_allocator.sleep_mode_backend import SleepModeBackendFactory
    from vllm.model_executor.custom_op import op_registry_oot
    from vllm.v1.attention.backends.registry import AttentionBackendEnum

    result["attention_backend"] = AttentionBackendEnum["NPU_ATTN"].get_path()
    result["oot_ops"] = {k: f"{v.__module__}.{v.__qualname__}" for k, v in op_registry_oot.items()}
    result["sleep_backends"] = sorted(SleepModeBackendFactory._registry)

    current_platform.validate_environ(hard_fail=True)
    result["validate_environ"] = "ok"

    # The start-up patches are at their default here (on): they ran, and left what vLLM
    # probes alone.
    import torch
    from npu_platform.patches import _boot

    finder = _boot.finder()
    result["startup_patches"] = {
        "state": None if finder is None else finder.state,
        "selected": [] if finder is None else sorted(finder.selected),
        "cuda_is_available": torch.cuda.is_available(),
    }

    model_dir = Path(args.workdir) / args.kind
    if not (model_dir / "config.json").exists():
        tiny_models.build_model(args.kind, model_dir, seed=args.seed)
    from vllm.engine.arg_utils import EngineArgs

    config = EngineArgs(model=str(model_dir), max_model_len=256).create_engine_config()
    result["config"] = {
        "worker_cls": config.parallel_config.worker_cls,
        "custom_ops": list(config.compilation_config.custom_ops),
        "compilation_mode": config.compilation_config.mode.name,
        "cudagraph_mode": config.compilation_config.cudagraph_mode.name,
        "enforce_eager": config.model_config.enforce_eager,
        "block_size": config.cache_config.block_size,
        "device": str(config.device_config.device),
        "async_scheduling": config.scheduler_config.async_scheduling,
    }
    # Block sizes the attention kernel takes are kept; the others are refused here, at
    # start-up, before any engine process exists.
    result["block_sizes"] = {}
    for size in (16, 64, 128, 256, 512, 640):
        try:
            built = EngineArgs(
                model=str(model_dir), max_model_len=256, block_size=size
            ).create_engine_config()
            result["block_sizes"][size] = built.cache_config.block_size
        except Exception as exc:
            result["block_sizes"][size] = f"{type(exc).__name__}: {exc}"
    return result


SCENARIOS = {
    "generate": generate,
    "kv-sizing": kv_sizing,
    "plugin": plugin,
    "sleep": sleep,
    "sleep-cycles": sleep_cycles,
    "tensor-parallel": tensor_parallel,
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("scenario", choices=sorted(SCENARIOS))
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--kind", default="llama")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--block-size", type=int, default=None)
    parser.add_argument("--hidden-size", type=int, default=64)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--init-range", type=float, default=0.2)
    parser.add_argument("--min-len", type=int, default=3)
    parser.add_argument("--max-len", type=int, default=40)
    parser.add_argument("--max-num-batched-tokens", type=int, default=0)
    parser.add_argument("--num-prompts", type=int, default=8)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cycles", type=int, default=100)
    parser.add_argument("--prefix-pass", action="store_true")
    parser.add_argument("--trace", action="store_true")
    parser.add_argument(
        "--real", action="store_true", help="run on the real NPU: leave emulation off"
    )
    parser.add_argument(
        "--reference", choices=["exact", "near-tie", "margins", "none"], default="exact"
    )
    args = parser.parse_args()
    result = SCENARIOS[args.scenario](args)
    print(RESULT_PREFIX + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
