"""vLLM end to end through the plugin on the emulated NPU (real vLLM 0.32, tiny models).

The configuration users get: bfloat16 and float16, the platform's default KV block size
(128, what ``npu_fused_infer_attention_score`` is documented for), head sizes 64 and 128,
GQA (Qwen2, 4 query and 2 KV heads). Prompts of 75 to 189 tokens, 8 in one batch, 32 new
tokens each; chunked prefill forced by ``max_num_batched_tokens=32``; prefix caching on, and
a second pass whose prompts extend the first pass's must hit the cache (whole 128-token
blocks). Greedy output must equal Hugging Face transformers' greedy ``generate`` in the same
dtype token for token up to the first near-tie
(:func:`npu_platform.vllm.tiny_model.greedy_agreement`: a tie is two tokens whose logits differ
by at most twice the dtype's own rounding error at that position, measured as the reference
model in that dtype against float32), and at least 90% of all tokens must be compared before
any tie, so the check cannot pass by diverging early.

(g) structure: in every engine step the attention metadata is built once, and each layer
    makes exactly one KV-cache write op and one attention op (torch_npu op calls recorded
    in order).

float32 has its own path (the fused inference kernel has no float32 mode: pages are
gathered and ``npu_fusion_attention`` runs, which has) and its own exact-match test, as
does tensor parallelism 2 on two emulated NPUs (hccl). Sleep mode has its own file.

Each scenario runs in its own interpreter (see ``tests/vllm_scenarios.py``).
"""

from __future__ import annotations

import pytest

from tests import vllm_scenarios

NUM_LAYERS = 2
KV_WRITE = "npu_scatter_pa_kv_cache"


def _assert_structure(result: dict, attention_op: str) -> None:
    trace = result["trace"]
    assert trace and trace[0] == "BUILD", trace[:5]
    steps = []
    for event in trace:
        if event == "BUILD":
            steps.append([])
        else:
            steps[-1].append(event)
    # One model forward per step: the first layer's input norm (npu_rms_norm) runs once.
    assert all(step.count("npu_rms_norm") == 1 for step in steps)
    assert len(steps) >= result["trace_new_tokens"]
    for step in steps:
        kv_and_attention = [op for op in step if op in (KV_WRITE, attention_op)]
        assert kv_and_attention == [KV_WRITE, attention_op] * NUM_LAYERS, step
        assert all("attention" not in op for op in step if op != attention_op), step


def _generate(tmp_path, *args: str) -> dict:
    return vllm_scenarios.run("generate", "--workdir", str(tmp_path), *args)


#: The production-configuration model shapes: (kind, hidden size, query heads) -> head size.
HEAD_64 = ("--kind", "qwen2", "--hidden-size", "256", "--heads", "4")
HEAD_128 = ("--kind", "qwen2", "--hidden-size", "512", "--heads", "4")
#: Prompts longer than one 128-token block, so prefix caching hits whole blocks; weights
#: with a standard spread (a well-conditioned model: 16-bit rounding rarely flips a token).
PRODUCTION = ("--min-len", "40", "--max-len", "200", "--init-range", "0.04")


def _assert_near_tie_agreement(agreement: dict) -> None:
    assert agreement["ok"], agreement["sequences"]
    assert agreement["compared"] >= 0.9 * agreement["total"], agreement


def _production(tmp_path, dtype: str, shape: tuple[str, ...], *extra: str) -> dict:
    result = _generate(
        tmp_path,
        *shape,
        *PRODUCTION,
        "--dtype",
        dtype,
        "--max-num-batched-tokens",
        "32",
        "--prefix-pass",
        "--reference",
        "near-tie",
        *extra,
    )
    assert result["platform"] == "NPUPlatform"
    assert result["block_size"] == 128, "the default block size is the kernel's"
    assert max(result["prompt_lens"]) > 128 > min(result["prompt_lens"]) > 32
    assert all(len(tokens) == 32 for tokens in result["got"])
    _assert_near_tie_agreement(result["agreement"])
    _assert_near_tie_agreement(result["agreement_prefix"])
    long_prompts = [n >= 128 for n in result["prompt_lens"]]
    assert all(
        cached >= 128
        for cached, long in zip(result["cached_prefix"], long_prompts, strict=True)
        if long
    ), "every second-pass prompt over one block must hit the prefix cache"
    return result


@pytest.mark.slow
def test_bfloat16_gqa_head_64_matches_transformers_to_the_first_near_tie(tmp_path):
    result = _production(tmp_path, "bfloat16", HEAD_64, "--trace")
    _assert_structure(result, "npu_fused_infer_attention_score")
    assert result["oot_ops"] == ["RMSNorm", "RotaryEmbedding", "SiluAndMul"]
    # vLLM imported humming in the engine, without its CUDA prebuild processes.
    assert result["humming"] == {"imported": True, "parallel_build": "1"}


@pytest.mark.slow
def test_float16_gqa_head_128_matches_transformers_to_the_first_near_tie(tmp_path):
    _production(tmp_path, "float16", HEAD_128)


@pytest.mark.slow
def test_float32_takes_the_gather_path_and_matches_transformers_exactly(tmp_path):
    """float32 (MHA Llama, head size 16): ``npu_fusion_attention`` over gathered pages, at the
    default block size, token for token equal to transformers in float32."""
    result = _generate(
        tmp_path, "--kind", "llama", "--max-num-batched-tokens", "32", "--prefix-pass", "--trace"
    )
    assert result["block_size"] == 128
    assert max(result["prompt_lens"]) > 32, "some prompt must need chunked prefill"
    assert result["got"] == result["ref"]
    assert result["got_prefix"] == result["ref_prefix"]
    _assert_structure(result, "npu_fusion_attention")


@pytest.mark.slow
def test_tensor_parallel_2_on_two_emulated_npus(tmp_path):
    result = vllm_scenarios.run("tensor-parallel", "--workdir", str(tmp_path), "--kind", "qwen2")
    assert result["got"] == result["ref"]


def test_greedy_agreement_is_computed_not_assumed(tmp_path):
    """The near-tie comparison the bf16/fp16 tests and the conformance check rely on: equal
    tokens pass, a token far from the reference's best fails, and float32 allows no tie."""
    from tests import tiny_models

    model_dir = tiny_models.build_model("qwen2", tmp_path / "m", seed=0)
    tok = tiny_models.load_tokenizer(model_dir)
    prompts = [tok(t).input_ids for t in tiny_models.prompts(2, seed=0)]
    ref = tiny_models.hf_greedy(model_dir, prompts, 6, "bfloat16")
    same = tiny_models.greedy_agreement(model_dir, prompts, ref, ref, "bfloat16")
    assert same["ok"] and same["compared"] == same["total"] == 12

    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.bfloat16)
    with torch.no_grad():
        logits = model(torch.tensor([prompts[0] + ref[0][:3]])).logits[0, -1]
    worst = int(logits.argmin())  # the least likely token: no rounding makes it the best
    wrong = [ref[0][:3] + [worst] + ref[0][4:], ref[1]]
    verdict = tiny_models.greedy_agreement(model_dir, prompts, wrong, ref, "bfloat16")
    assert not verdict["ok"]
    first = verdict["sequences"][0]
    assert first["diverged_at"] == 3 and first["tie"] is False
    assert first["gap"] > 2 * first["noise"] > 0
    assert verdict["compared"] == 3 + 6

    exact = tiny_models.greedy_agreement(model_dir, prompts, wrong, ref, "float32")
    assert not exact["ok"] and exact["sequences"][0]["tie"] is False
