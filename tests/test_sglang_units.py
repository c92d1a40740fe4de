"""The sglang integration's decisions as plain functions: memory-request checks, the dtype
refusal, capabilities and the torch-native logits cast. In-process, no sglang server."""

from __future__ import annotations

import types

import pytest
import torch

from npu_platform.sglang import capabilities
from npu_platform.sglang.memory_requests import checked_tags
from npu_platform.sglang.server_args import UnsupportedSetting, check_dtype


def test_memory_requests_without_tags_mean_what_they_can() -> None:
    assert checked_tags("release", None, set()) == ["kv_cache", "weights", "cuda_graph"]
    assert checked_tags("release", [], {"kv_cache"}) == ["weights", "cuda_graph"]
    # The README's {} after a staged release resumes exactly what was released (sglang
    # 0.5.23 itself would resume cuda_graph too and die with KeyError: 'cuda_graph').
    assert checked_tags("resume", None, {"kv_cache", "weights"}) == ["kv_cache", "weights"]
    with pytest.raises(ValueError, match="nothing to resume"):
        checked_tags("resume", None, set())
    with pytest.raises(ValueError, match="nothing to release"):
        checked_tags("release", None, {"kv_cache", "weights", "cuda_graph"})


@pytest.mark.parametrize(
    ("action", "tags", "released", "message"),
    [
        ("release", ["kv_cahce"], set(), "unknown tag(s) 'kv_cahce'"),
        ("release", ["kv_cache"], {"kv_cache"}, "'kv_cache' already released"),
        ("resume", ["cuda_graph"], {"kv_cache"}, "'cuda_graph' not released"),
        ("resume", ["weights", "weights"], {"weights"}, "name a tag twice"),
    ],
)
def test_bad_memory_requests_are_refused(
    action: str, tags: list[str], released: set[str], message: str
) -> None:
    with pytest.raises(ValueError) as err:
        checked_tags(action, tags, released)
    assert message in str(err.value)


def test_explicit_tags_pass_through() -> None:
    assert checked_tags("release", ["weights"], {"kv_cache"}) == ["weights"]
    assert checked_tags("resume", ["kv_cache"], {"kv_cache", "weights"}) == ["kv_cache"]


def test_float32_is_refused_with_the_ascend_backend_only() -> None:
    cfg = types.SimpleNamespace(dtype="float32", attention_backend=None)
    with pytest.raises(UnsupportedSetting, match="float16 and bfloat16 only"):
        check_dtype(cfg)
    check_dtype(types.SimpleNamespace(dtype="bfloat16", attention_backend="ascend"))
    check_dtype(types.SimpleNamespace(dtype="auto", attention_backend=None))
    # Another attention backend chosen by the user is the user's call.
    check_dtype(types.SimpleNamespace(dtype="float32", attention_backend="torch_native"))


def test_no_triton_backend_for_the_npu_here() -> None:
    ok, reason = capabilities.triton_backend()
    assert ok is False
    assert "no Triton backend for Ascend NPUs" in reason and "nvidia" in reason


def test_native_logits_cast_and_softcap_match_the_triton_kernels_formula() -> None:
    logits = torch.randn(3, 50, dtype=torch.bfloat16) * 40
    out = torch.empty(3, 50, dtype=torch.float32)
    assert capabilities.softcap_logits_native(logits, None, out) is out
    assert torch.equal(out, logits.float())
    out2 = torch.empty_like(out)
    capabilities.softcap_logits_native(logits, 30.0, out2)
    torch.testing.assert_close(out2, torch.tanh(logits.float() / 30.0) * 30.0)
    inplace = logits.float().clone()
    capabilities.softcap_logits_native(inplace, 30.0)
    torch.testing.assert_close(inplace, out2)
