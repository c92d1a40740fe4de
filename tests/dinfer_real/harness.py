"""Run real, unmodified dInfer (``../shared/fixtures/dInfer``) on a tiny random-weight LLaDA.

Usage: ``python harness.py MODE WORKDIR [STEP ...]`` writes ``WORKDIR/MODE.json``.

Both modes first build the same model from dInfer's ``configuration_llada`` /
``modeling_llada`` on the CPU with seeded random weights and save it (``weights.pt`` and a
``save_pretrained`` folder ``hf/``); the report carries a digest of the weights.

* ``reference``: plain CPU, no plugin (run it with ``NPU_PLATFORM_PATCHES=0`` and without
  ``NPU_PLATFORM_EMULATE``); decodes every variant on the CPU.
* ``emulated``: the CUDA program dInfer is, on the emulated NPU (``NPU_PLATFORM_EMULATE=1``,
  ``NPU_PLATFORM_EMULATE_DEVICES=2``,
  ``NPU_PLATFORM_PATCH_ONLY=cuda,distributed,flash_attn,torch_memory_saver``). Steps:
  ``decode`` loads the weights the CUDA way (``torch.cuda.set_device``,
  ``config.flash_attention = True``, ``.cuda()``, ``torch.load(map_location="cuda")``) and
  decodes the same variants (and, in bfloat16, what the serving worker decodes);
  ``serving_start`` starts ``DiffusionLLMServing`` with one worker; ``parallel`` runs, on
  two spawned ``nccl`` ranks, dInfer's own ``tests/test_wo_model.py`` distributed check and
  then tensor parallelism 2 set up as ``benchmarks/benchmark.py`` does; ``serving`` sends
  the server one request and stops it.

This file never names the NPU: under emulation dInfer sees CUDA. The only dInfer-specific
code besides the calls is the set of workarounds below, one function per incompatibility
of dInfer (pinned to vLLM 0.10.2 and transformers 4) with vLLM 0.32 and transformers 5.
Each is applied in every process, spawned workers included (they re-import this module).
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing as mp
import os
import socket
import sys
import time
import traceback
from pathlib import Path

DINFER = Path(
    os.environ.get("DINFER_SOURCE")
    or Path(__file__).resolve().parents[3] / "shared" / "fixtures" / "dInfer"
)
sys.path.insert(0, str(DINFER / "python"))
sys.path.insert(0, str(DINFER / "tests"))

import torch  # noqa: E402

# ----------------------------------------------------------------------------- workarounds


def workaround_vllm_fused_moe_renamed() -> None:
    """dinfer/model/modeling_fused_olmoe.py:64 does
    ``from vllm.model_executor.layers.fused_moe import FusedMoE, fused_moe``, which vLLM 0.32
    no longer has (``FusedMoE`` became ``FusedMoEFactory``; ``fused_moe`` went with the
    Triton kernels). ``dinfer/model/__init__.py`` imports that module, so ``import dinfer``
    fails for every model. Give the two names placeholders that refuse to build the MoE
    model (MoE is not covered: it needs vLLM's fused MoE on the NPU)."""
    import vllm.model_executor.layers.fused_moe as fused_moe_module

    def refuse(*args, **kwargs):
        raise NotImplementedError(
            "dInfer's MoE models need vllm's FusedMoE/fused_moe (vLLM 0.10.2 names); "
            "not covered by these tests"
        )

    if not hasattr(fused_moe_module, "FusedMoE"):
        fused_moe_module.FusedMoE = type("FusedMoE", (), {"__init__": refuse})
    if not hasattr(fused_moe_module, "fused_moe"):
        fused_moe_module.fused_moe = refuse


def workaround_transformers_is_torch_fx_available() -> None:
    """dinfer/model/modeling_llada2_moe.py:51 imports ``is_torch_fx_available`` from
    ``transformers.utils.import_utils``, removed in transformers 5 (torch.fx is always
    there). Also reached by ``import dinfer``. Answer True, as transformers 4 did."""
    from transformers.utils import import_utils

    if not hasattr(import_utils, "is_torch_fx_available"):
        import_utils.is_torch_fx_available = lambda: True


def workaround_transformers_drops_use_cache() -> None:
    """dinfer/model/configuration_llada.py:463 passes ``use_cache`` (default False) to
    ``PretrainedConfig.__init__``, which in transformers 5 drops generation parameters,
    ``use_cache`` among them; dinfer/model/modeling_llada.py:1691 then reads
    ``self.config.use_cache`` on every forward without ``use_cache``. Restore LLaDAConfig's
    own default as a class attribute (an instance value set later still wins)."""
    from dinfer.model.configuration_llada import LLaDAConfig

    if "use_cache" not in vars(LLaDAConfig):
        LLaDAConfig.use_cache = False


def workaround_transformers_from_pretrained_tie_weights() -> None:
    """``LLaDAModelLM.from_pretrained`` (dinfer/decoding/serving.py:203, benchmarks/
    benchmark.py:87) fails twice on transformers 5's tied-weights handling:
    ``LLaDAModelLM.__init__`` (dinfer/model/modeling_llada.py:1656) never calls
    ``self.post_init()``, which now sets ``all_tied_weights_keys`` that loading reads (and
    resets ``_tp_plan``, which dInfer's ``__init__`` sets for its own ``tensor_parallel``); and
    its ``tie_weights(self)`` (modeling_llada.py:1767) takes none of the arguments
    transformers 5 passes (``missing_keys``, ``recompute_mapping``). Call ``post_init()``
    after dInfer's ``__init__`` when it did not, keeping dInfer's ``_tp_plan``, and let
    ``tie_weights`` accept and ignore those arguments (it ties ``ff_out`` to ``wte`` from
    ``config.weight_tying`` itself)."""
    import functools

    from dinfer.model.modeling_llada import LLaDAModelLM

    if getattr(LLaDAModelLM, "_harness_tie_weights", False):
        return
    init, tie_weights = LLaDAModelLM.__init__, LLaDAModelLM.tie_weights

    @functools.wraps(init)
    def __init__(self, *args, **kwargs):
        init(self, *args, **kwargs)
        if "all_tied_weights_keys" not in vars(self):
            tp_plan = self._tp_plan  # dInfer's plan for model.tensor_parallel()
            self.post_init()  # would replace it with the config's (empty) plan
            self._tp_plan = tp_plan

    @functools.wraps(tie_weights)
    def tie_weights_ignoring_arguments(self, missing_keys=None, recompute_mapping=True):
        return tie_weights(self)

    LLaDAModelLM.__init__ = __init__
    LLaDAModelLM.tie_weights = tie_weights_ignoring_arguments
    LLaDAModelLM._harness_tie_weights = True


def workaround_vllm_model_parallel_needs_config() -> None:
    """benchmarks/benchmark.py:67 calls ``vllm.distributed.initialize_model_parallel`` before
    it enters ``set_current_vllm_config`` (line 71); vLLM 0.32's reads the current vLLM config
    there (``get_current_vllm_config()`` raises when none is set), vLLM 0.10.2's did not.
    Without a current config, run it under a default ``VllmConfig()``."""
    import functools

    import vllm.distributed as vllm_distributed
    from vllm.config import VllmConfig, set_current_vllm_config
    from vllm.config import vllm as vllm_config_module

    original = vllm_distributed.initialize_model_parallel
    if getattr(original, "_harness_default_config", False):
        return

    @functools.wraps(original)
    def initialize_model_parallel(*args, **kwargs):
        if vllm_config_module._current_vllm_config is not None:
            return original(*args, **kwargs)
        with set_current_vllm_config(VllmConfig()):
            return original(*args, **kwargs)

    initialize_model_parallel._harness_default_config = True
    vllm_distributed.initialize_model_parallel = initialize_model_parallel


def apply_workarounds() -> None:
    workaround_vllm_fused_moe_renamed()
    workaround_transformers_is_torch_fx_available()
    workaround_transformers_drops_use_cache()
    workaround_transformers_from_pretrained_tie_weights()
    workaround_vllm_model_parallel_needs_config()


apply_workarounds()

# ----------------------------------------------------------------------------- the model

MASK_ID, EOS_ID = 250, 251
PROMPT = [[5, 17, 42, 99, 7, 3, 128, 64, 200, 11, 9]]
GEN_LENGTH, BLOCK_LENGTH = 24, 8
THRESHOLD = 0.9
SEED = 20251115
TINY = dict(
    d_model=64,
    n_heads=4,
    n_kv_heads=4,
    n_layers=2,
    mlp_hidden_size=128,
    mlp_ratio=2,
    vocab_size=256,
    embedding_size=256,
    max_sequence_length=256,
    block_type="llama",
    activation_type="silu",
    layer_norm_type="rms",
    rms_norm_eps=1e-5,
    rope=True,
    rope_theta=10000.0,
    attention_dropout=0.0,
    residual_dropout=0.0,
    embedding_dropout=0.0,
    include_bias=False,
    include_qkv_bias=False,
    weight_tying=False,
    scale_logits=False,
    mask_token_id=MASK_ID,
    eos_token_id=EOS_ID,
    pad_token_id=EOS_ID,
    init_device="cpu",
)


def tiny_config():
    from dinfer.model.configuration_llada import LLaDAConfig

    return LLaDAConfig(**TINY)


def build_model(workdir: Path):
    """The tiny LLaDA on the CPU with seeded random weights (the same in every process),
    saved as ``weights.pt`` and as a ``save_pretrained`` folder ``hf/``."""
    from dinfer.model.modeling_llada import (
        LLaDAModel,
        LLaDAModelLM,
        create_model_config_from_pretrained_config,
    )

    config = tiny_config()
    model_config = create_model_config_from_pretrained_config(config)
    model_config.init_device = "cpu"  # LLaDAModelLM(config) alone builds on "cuda"
    torch.manual_seed(SEED)
    model = LLaDAModelLM(config, model=LLaDAModel(model_config, init_params=False))
    with torch.no_grad():
        for param in model.parameters():
            param.normal_(0.0, 0.3 if param.dim() > 1 else 0.05).add_(
                1.0 if param.dim() == 1 else 0.0
            )
        head = model.model.transformer.ff_out.weight
        head.mul_(4.0)  # peaked logits, so that some steps decode several tokens at once
        # A zero row: the mask token's logit is 0, below the largest of the other (random)
        # logits, so it is never predicted; a trained LLaDA never predicts it either (when
        # every masked position of a block predicts it, dInfer's decoder makes no progress).
        head[MASK_ID].zero_()
    model.eval()
    torch.save(model.state_dict(), workdir / "weights.pt")
    model.save_pretrained(workdir / "hf")
    return model


def weights_digest(model) -> str:
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def load_cuda_model(workdir: Path):
    """The saved model, loaded the way a CUDA user of dInfer does."""
    from dinfer.model.modeling_llada import LLaDAModelLM

    config = tiny_config()
    config.flash_attention = True
    model = LLaDAModelLM(config).eval()  # dInfer builds its LLaDA on "cuda"
    model.load_state_dict(torch.load(workdir / "weights.pt", map_location="cuda"))
    return model.cuda()


# ----------------------------------------------------------------------------- decoding


def decoder():
    from dinfer import ThresholdParallelDecoder

    return ThresholdParallelDecoder(
        temperature=0, threshold=THRESHOLD, mask_id=MASK_ID, eos_id=EOS_ID
    )


def make_llm(kind: str, model):
    from dinfer import (
        BlockIteratorFactory,
        BlockWiseDiffusionLLM,
        KVCacheFactory,
        VicinityCacheDiffusionLLM,
    )

    if kind == "blockwise":
        return BlockWiseDiffusionLLM(model, decoder(), BlockIteratorFactory(), early_stop=True)
    if kind in ("prefix", "dual"):
        return BlockWiseDiffusionLLM(
            model, decoder(), BlockIteratorFactory(), cache_factory=KVCacheFactory(kind),
            early_stop=True,
        )  # fmt: skip
    if kind == "vicinity":
        return VicinityCacheDiffusionLLM(
            model, decoder(), BlockIteratorFactory(), KVCacheFactory("dual"),
            prefix_look=4, after_look=4, warmup_steps=2,
        )  # fmt: skip
    if kind == "benchmark":  # benchmarks/benchmark.py without cache, sliding window or BD
        return BlockWiseDiffusionLLM(
            model, decoder(), BlockIteratorFactory(start_block_align=True), cache_factory=None,
            early_stop=True, use_shift=False,
        )  # fmt: skip
    raise ValueError(kind)


#: Decoded by both runs; "benchmark" (the tensor-parallel ranks' decoding) by the reference.
VARIANTS = ("blockwise", "prefix", "dual", "vicinity")


def decode_all(model, device, variants=VARIANTS) -> dict:
    prompt = torch.tensor(PROMPT).to(device)
    out = {}
    for kind in variants:
        llm = make_llm(kind, model)
        started = time.monotonic()
        tokens = llm.generate(prompt, gen_length=GEN_LENGTH, block_length=BLOCK_LENGTH)
        out[kind] = {
            "tokens": tokens.cpu().tolist(),
            "device": str(tokens.device),
            "forwards": int(llm.num_forwards),
            "seconds": round(time.monotonic() - started, 2),
        }
    return out


# ----------------------------------------------------------------------------- parallel


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def join_all(procs, timeout: float) -> list:
    """Wait for spawned processes; those still running after ``timeout`` are killed."""
    deadline = time.monotonic() + timeout
    for proc in procs:
        proc.join(max(0.0, deadline - time.monotonic()))
    codes = []
    for proc in procs:
        if proc.is_alive():
            proc.kill()
            proc.join()
            codes.append(f"killed after {timeout:.0f} s")
        else:
            codes.append(proc.exitcode)
    return codes


@torch.no_grad()
def tp_worker(world_size, rank, gpu_id, workdir, port, results):
    """One spawned rank: dInfer's tests/test_wo_model.py ``check_worker`` (``nccl``,
    ``torch.cuda.set_device(gpu)``, ``torch.device(gpu)`` with an int, ``gather_sequence_block``
    over ``all_gather``), then benchmarks/benchmark.py's ``main`` for ``--model_type llada``
    with tensor parallelism (vLLM's ``init_distributed_environment`` /
    ``initialize_model_parallel`` with ``nccl``, ``model.tensor_parallel``, compiled forward)."""
    import test_wo_model  # dInfer's own tests/test_wo_model.py
    from dinfer.model import LLaDAModelLM
    from vllm import distributed
    from vllm.config import ParallelConfig, VllmConfig, set_current_vllm_config

    report = {"rank": rank, "test_wo_model": test_wo_model.__file__}
    test_wo_model.check_worker(rank, world_size, gpu_id)
    report["check_worker"] = "passed"

    torch.cuda.set_device(gpu_id)
    device = torch.device(gpu_id)
    os.environ["MASTER_ADDR"] = "localhost"
    os.environ["MASTER_PORT"] = str(port)
    distributed.init_distributed_environment(world_size, rank, "env://", rank, "nccl")
    distributed.initialize_model_parallel(world_size, backend="nccl")
    report["backend"] = torch.distributed.get_backend()
    parallel_config = ParallelConfig(enable_expert_parallel=True)
    with set_current_vllm_config(VllmConfig(parallel_config=parallel_config)):
        model = LLaDAModelLM.from_pretrained(
            str(workdir / "hf"), torch_dtype=torch.float32, init_device=str(device)
        ).eval()
        model.tensor_parallel(world_size)
        model = model.to(device)
        model.forward = torch.compile(
            model.forward, mode="reduce-overhead", fullgraph=False, dynamic=True
        )
        dllm = make_llm("benchmark", model)
        input_ids = torch.tensor(PROMPT).to(device)
        out = dllm.generate(input_ids, gen_length=GEN_LENGTH, block_length=BLOCK_LENGTH)
    q_proj = model.model.transformer.blocks[0].q_proj
    report["tokens"] = out.cpu().tolist()
    report["device"] = str(out.device)
    report["q_proj"] = f"{type(q_proj).__name__}{tuple(q_proj.weight.shape)}"
    results.put(report)


def run_parallel(workdir: Path) -> dict:
    """dInfer's tests/test_wo_model.py (its CPU checks here, its distributed check on the
    two ranks, as its ``test_dist`` does on four without checking their exit codes), then
    tensor parallelism 2 on the same two ranks."""
    import test_wo_model

    test_wo_model.test_block_iterator()
    test_wo_model.test_token_array()
    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    port = free_port()
    procs = [
        ctx.Process(target=tp_worker, args=(2, rank, rank, workdir, port, results), daemon=True)
        for rank in range(2)
    ]
    for proc in procs:
        proc.start()
    codes = join_all(procs, 420)
    ranks = []
    while not results.empty():
        ranks.append(results.get())
    return {"exitcodes": codes, "ranks": sorted(ranks, key=lambda r: r["rank"])}


_serving: dict = {}


def start_serving(workdir: Path) -> dict:
    """DiffusionLLMServing with one worker (dInfer's ``server_process``: ``nccl``, the model
    in bfloat16 from ``from_pretrained``, ``torch.compile(mode="reduce-overhead")``). The
    worker starts here and loads while the next step runs."""
    from dinfer import DiffusionLLMServing, SamplingParams
    from dinfer.decoding import serving

    params = SamplingParams(
        threshold=THRESHOLD, cache="", temperature=0.0, early_stop=True, cont_weight=0,
        enable_torch_compile=True, mask_id=MASK_ID, eos_id=EOS_ID, use_bd=False,
    )  # fmt: skip
    _serving["llm"] = DiffusionLLMServing(
        str(workdir / "hf"),
        model_type="llada",
        sample_params=params,
        server_port=free_port() - 1,
        num_gpus=1,
        backend="vllm",
    )  # fmt: skip  (its group listens on server_port + 1)
    _serving["procs"] = [proc for group in serving.handle.groups for proc in group.procs]
    return {"workers": len(_serving["procs"])}


def run_serving() -> dict:
    """One request to the started server, then ``stop_serving()``. A worker that dies or
    hangs fails the step instead of leaving this process waiting on its result queue."""
    import threading

    if "llm" not in _serving:
        raise RuntimeError("the server did not start (see step serving_start)")
    llm, procs = _serving["llm"], _serving["procs"]
    answer: dict = {}

    def request():
        answer["tokens"] = llm.generate(
            torch.tensor(PROMPT), gen_length=GEN_LENGTH, block_length=BLOCK_LENGTH
        ).tolist()

    thread = threading.Thread(target=request, daemon=True)
    thread.start()
    deadline = time.monotonic() + 300
    while thread.is_alive() and time.monotonic() < deadline:
        if any(proc.exitcode is not None for proc in procs):
            break
        thread.join(0.5)
    if thread.is_alive():
        codes = [proc.exitcode for proc in procs]
        for proc in procs:
            proc.kill()
        raise RuntimeError(f"no answer from the server; worker exit codes {codes} (None: alive)")
    llm.stop_serving()
    return {"tokens": answer["tokens"], "worker_exitcodes": [proc.exitcode for proc in procs]}


# ----------------------------------------------------------------------------- modes


class Report(dict):
    """The mode's JSON report, written again after every step (a killed run keeps its past)."""

    def __init__(self, path: Path):
        super().__init__(ok=False, steps={})
        self.path = path

    def step(self, name: str, fn, *args) -> None:
        started = time.monotonic()
        try:
            self["steps"][name] = {"result": fn(*args)}
        except Exception:
            self["steps"][name] = {"error": traceback.format_exc()}
        self["steps"][name]["seconds"] = round(time.monotonic() - started, 1)
        self.save()

    def save(self) -> None:
        self.path.write_text(json.dumps(self, indent=1))


@torch.no_grad()
def reference_decode(workdir: Path) -> dict:
    model = build_model(workdir)
    return {
        "weights": weights_digest(model),
        "variants": decode_all(model, "cpu", (*VARIANTS, "benchmark")),
    }


@torch.no_grad()
def emulated_decode(workdir: Path) -> dict:
    digest = weights_digest(build_model(workdir))
    torch.cuda.set_device(0)
    device = torch.device(0)
    model = load_cuda_model(workdir)
    block = model.model.transformer.blocks[0]
    report = {
        "weights": digest,
        "param_device": str(next(model.parameters()).device),
        "flash_attn_module": getattr(block.flash_attn_func, "__module__", None),
        "variants": decode_all(model, device),
    }
    # What DiffusionLLMServing's worker decodes: the same model in bfloat16, "blockwise".
    report["serving_direct"] = decode_all(model.to(torch.bfloat16), device, ("blockwise",))
    return report


def main() -> int:
    mode, workdir = sys.argv[1], Path(sys.argv[2])
    report = Report(workdir / f"{mode}.json")
    report["cuda_available"] = torch.cuda.is_available()
    if mode == "reference":
        report.step("decode", reference_decode, workdir)
    elif mode == "emulated":
        steps = {
            "decode": (emulated_decode, workdir),
            "serving_start": (start_serving, workdir),
            "parallel": (run_parallel, workdir),
            "serving": (run_serving,),
        }
        for name in sys.argv[3:] or steps:
            report.step(name, *steps[name])
    else:
        raise SystemExit(f"unknown mode {mode!r}: reference or emulated")
    report["ok"] = all("error" not in step for step in report["steps"].values())
    report.save()
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
