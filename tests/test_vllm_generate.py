"""vLLM end to end through the plugin on the emulated NPU (real vLLM 0.32, tiny models).

(c) correctness: greedy ``LLM.generate`` of 8 prompts of different lengths, batched, 32 new
    tokens each, must produce exactly the tokens of Hugging Face transformers' greedy
    ``generate``, in float32, for a tiny Llama (MHA) and a tiny Qwen2 (GQA), with chunked
    prefill forced by ``max_num_batched_tokens=32`` and prefix caching on (a second pass
    whose prompts extend the first pass's must hit the cache and still match).
(g) structure: in every engine step the attention metadata is built once, and each layer
    makes exactly one KV-cache write op and one attention op (torch_npu op calls recorded
    in order).

Also: tensor parallelism 2 on two emulated NPUs (gloo), against the same greedy
references. Sleep mode has its own file (``test_vllm_sleep.py``).

bfloat16 runs the production kernel (``npu_fused_infer_attention_score``, which has no
float32 mode); there bit-exact agreement with transformers is not expected, so each chosen
token must be within a small float32-logit margin of the best one.

Each scenario runs in its own interpreter (see ``tests/vllm_scenarios.py``).
"""

from __future__ import annotations

import itertools

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


@pytest.mark.slow
def test_llama_greedy_matches_transformers_with_chunked_prefill_and_prefix_cache(tmp_path):
    result = _generate(
        tmp_path, "--kind", "llama", "--max-num-batched-tokens", "32", "--prefix-pass", "--trace"
    )
    assert result["platform"] == "NPUPlatform"
    assert len(set(result["prompt_lens"])) == 8
    assert max(result["prompt_lens"]) > 32, "some prompt must need chunked prefill"
    assert result["got"] == result["ref"]
    assert all(len(tokens) == 32 for tokens in result["got"])
    assert result["got_prefix"] == result["ref_prefix"]
    assert sum(result["cached_prefix"]) > 0, "the second pass must hit the prefix cache"
    _assert_structure(result, "npu_fusion_attention")
    assert result["oot_ops"] == ["RMSNorm", "RotaryEmbedding", "SiluAndMul"]


@pytest.mark.slow
def test_qwen2_gqa_greedy_matches_transformers(tmp_path):
    result = _generate(
        tmp_path, "--kind", "qwen2", "--max-num-batched-tokens", "32", "--prefix-pass"
    )
    assert result["got"] == result["ref"]
    assert result["got_prefix"] == result["ref_prefix"]
    assert sum(result["cached_prefix"]) > 0


@pytest.mark.slow
def test_bfloat16_runs_fused_infer_attention_and_stays_greedy(tmp_path):
    result = _generate(
        tmp_path,
        "--kind",
        "qwen2",
        "--dtype",
        "bfloat16",
        "--max-num-batched-tokens",
        "32",
        "--reference",
        "margins",
        "--trace",
    )
    margins = list(itertools.chain.from_iterable(result["margins"]))
    assert len(margins) == 8 * 32
    # bfloat16 rounding may swap near-ties; a wrong mask, position or block costs logits
    # whole units (a 4-token window instead of causal attention gives margins above 1).
    assert max(margins) < 0.5, max(margins)
    assert sum(m > 0 for m in margins) <= len(margins) // 8
    _assert_structure(result, "npu_fused_infer_attention_score")


@pytest.mark.slow
def test_tensor_parallel_2_on_two_emulated_npus(tmp_path):
    result = vllm_scenarios.run("tensor-parallel", "--workdir", str(tmp_path), "--kind", "qwen2")
    assert result["got"] == result["ref"]
