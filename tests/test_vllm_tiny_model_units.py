"""The conformance check's tiny model builder refuses what it cannot build (before writing
anything), and its prompt generator gives the count asked for even from a narrow range of
lengths. NPURMSNorm falls back to vLLM's native norm where no NPU kernel applies."""

from __future__ import annotations

import pytest
import torch

from npu_platform.vllm import tiny_model


@pytest.mark.parametrize(
    ("kind", "overrides", "message"),
    [
        ("llama", {"vocab_size": 10, "eos_token_id": 1}, "tiny model: eos_token_id, vocab_size "),
        ("llama", {"hidden_sise": 32}, "tiny model: unknown setting(s) hidden_sise; choose from "),
        ("gpt2", {}, "unknown tiny model kind 'gpt2'; choose from llama, qwen2"),
    ],
)
def test_build_model_refuses_what_it_cannot_build(tmp_path, kind, overrides, message):
    target = tmp_path / "model"
    with pytest.raises(ValueError) as info:
        tiny_model.build_model(kind, target, **overrides)
    assert str(info.value).startswith(message), str(info.value)
    if "unknown setting" in message:
        assert "hidden_size" in str(info.value) and "vocab_size" not in str(info.value)
    assert not (target / "config.json").exists()


def test_prompts_fill_up_a_narrow_length_range():
    prompts = tiny_model.prompts(count=6, seed=3, min_len=2, max_len=3)
    assert len(prompts) == 6
    lengths = [len(p.split()) for p in prompts]
    # Only two distinct lengths fit in [2, 3]; the rest are made up after the range.
    assert sorted(lengths[:2]) == [2, 3]
    assert lengths[2:] == [4, 5, 6, 7]
    assert prompts == tiny_model.prompts(count=6, seed=3, min_len=2, max_len=3)


@pytest.fixture
def vllm_config(monkeypatch):
    """A default ``VllmConfig`` current (vLLM's ops read it when built), with vLLM's neutral
    platform pinned so that building it resolves nothing for the rest of the process."""
    import vllm.platforms
    from vllm.config import DeviceConfig, VllmConfig, set_current_vllm_config
    from vllm.platforms.interface import UnspecifiedPlatform

    monkeypatch.setattr(vllm.platforms, "_current_platform", UnspecifiedPlatform())
    with set_current_vllm_config(VllmConfig(device_config=DeviceConfig(device="cpu"))):
        yield


def _rms(x, eps=1e-6, width=None):
    part = x if width is None else x[..., :width]
    return x / torch.sqrt(part.pow(2).mean(-1, keepdim=True) + eps)


def test_rms_norm_without_an_npu_kernel_uses_vllms_native_norm(vllm_config):
    """Weightless and partial-width norms have no NPU kernel: vLLM's native norm runs (on
    CPU tensors here, so no NPU op could have been called)."""
    from npu_platform.vllm.custom_ops import NPURMSNorm

    gen = torch.Generator().manual_seed(0)
    x, residual = torch.randn(3, 16, generator=gen), torch.randn(3, 16, generator=gen)
    weightless = NPURMSNorm(16, eps=1e-6, has_weight=False)
    torch.testing.assert_close(weightless.forward_oot(x), _rms(x))
    summed, new_residual = weightless.forward_oot(x, residual)
    torch.testing.assert_close(new_residual, x + residual)
    torch.testing.assert_close(summed, _rms(x + residual))

    partial = NPURMSNorm(16, eps=1e-6, var_hidden_size=8)
    torch.testing.assert_close(partial.forward_oot(x), _rms(x, width=8))
