"""What sglang's NPU path needs of the emulated NPU beyond the ops vLLM uses: FIA in the
``BSH`` layout through its ``.out`` overload inside an NPU graph (sglang's decode graph),
``npu_mrope``, stand-in kernels recorded by graph capture, pyACL's device query,
``torch_npu.profiler`` and ``torch_npu.multiprocessing``. In-process on the emulated NPU."""

from __future__ import annotations

import math

import pytest
import torch

from npu_platform.spec.contract import ContractError

pytestmark = pytest.mark.usefixtures("emulated")

N, KV, D, BLOCK = 4, 2, 32, 128


def _reference_decode(q, k_cache, v_cache, table, lens, scale):
    """Plain softmax attention of one query token per request over its paged KV."""
    out = torch.zeros(q.shape[0], N, D)
    for b, n in enumerate(lens):
        if n == 0:
            continue
        blocks = table[b, : -(-n // BLOCK)].long()
        k = k_cache[blocks].reshape(-1, KV, D)[:n].float().repeat_interleave(N // KV, dim=1)
        v = v_cache[blocks].reshape(-1, KV, D)[:n].float().repeat_interleave(N // KV, dim=1)
        qb = q[b, 0].view(N, D).float()
        weights = torch.softmax(torch.einsum("nd,snd->ns", qb, k) * scale, dim=-1)
        out[b] = torch.einsum("ns,snd->nd", weights, v)
    return out.reshape(q.shape[0], 1, N * D)


def _decode_call(torch_npu, q, k_cache, v_cache, table, lens, out, lse):
    kwargs = dict(
        block_table=table,
        block_size=BLOCK,
        num_heads=N,
        num_key_value_heads=KV,
        input_layout="BSH",
        scale=1 / math.sqrt(D),
        actual_seq_lengths_kv=lens,
        sparse_mode=0,
    )
    workspace = torch_npu._npu_fused_infer_attention_score_get_max_workspace(
        q, k_cache, v_cache, **kwargs
    )
    torch_npu.npu_fused_infer_attention_score.out(
        q, k_cache, v_cache, workspace=workspace, out=[out, lse], **kwargs
    )


def test_fia_bsh_out_in_an_npu_graph_with_updates() -> None:
    """sglang's decode graph: capture FIA .out once, update the KV lengths, replay."""
    import torch_npu

    torch.manual_seed(0)
    dev = "npu"
    k_cache = torch.randn(4, BLOCK, KV * D, dtype=torch.bfloat16, device=dev)
    v_cache = torch.randn(4, BLOCK, KV * D, dtype=torch.bfloat16, device=dev)
    table = torch.tensor([[2, 0], [1, 3]], dtype=torch.int32, device=dev)
    q = torch.randn(2, 1, N * D, dtype=torch.bfloat16, device=dev)
    out = torch.empty(2, 1, N * D, dtype=torch.bfloat16, device=dev)
    lse = torch.empty(1, dtype=torch.bfloat16, device=dev)
    scale = 1 / math.sqrt(D)

    graph = torch.npu.NPUGraph()
    with torch.npu.graph(graph, auto_dispatch_capture=True):
        _decode_call(torch_npu, q, k_cache, v_cache, table, [5, 0], out, lse)
    host = [t.cpu() for t in (q, k_cache, v_cache, table)]
    torch.testing.assert_close(
        out.cpu().float(), _reference_decode(*host, [5, 0], scale), atol=2e-2, rtol=2e-2
    )
    # New lengths through torch_npu's update API, new query values in place: replay.
    graph.update(cpu_update_input=[{"actual_seq_lengths_kv": [7, 200]}])
    q.copy_(torch.randn(2, 1, N * D, dtype=torch.bfloat16))
    graph.replay()
    host = [t.cpu() for t in (q, k_cache, v_cache, table)]
    torch.testing.assert_close(
        out.cpu().float(), _reference_decode(*host, [7, 200], scale), atol=2e-2, rtol=2e-2
    )


def test_fia_out_takes_out_by_name_or_list_and_refuses_wrong_outputs() -> None:
    import torch_npu

    q = torch.randn(1, 1, N * D, dtype=torch.bfloat16, device="npu")
    cache = torch.randn(1, BLOCK, KV * D, dtype=torch.bfloat16, device="npu")
    table = torch.zeros(1, 1, dtype=torch.int32, device="npu")
    out = torch.empty(1, 1, N * D, dtype=torch.bfloat16, device="npu")
    lse = torch.empty(1, dtype=torch.bfloat16, device="npu")
    with pytest.raises(TypeError, match=r"out= takes 2 tensors \(attention_out, softmax_lse\)"):
        torch_npu.npu_fused_infer_attention_score.out(q, cache, cache, out=[out])
    bad = torch.empty(1, 1, N * D + 1, dtype=torch.bfloat16, device="npu")
    with pytest.raises(ContractError, match="attention_out"):
        torch_npu.npu_fused_infer_attention_score.out(
            q, cache, cache, block_table=table, block_size=BLOCK, num_heads=N,
            num_key_value_heads=KV, input_layout="BSH", actual_seq_lengths_kv=[3],
            attention_out=bad, softmax_lse=lse,
        )  # fmt: skip
    torch_npu.npu_fused_infer_attention_score.out(
        q, cache, cache, block_table=table, block_size=BLOCK, num_heads=N,
        num_key_value_heads=KV, input_layout="BSH", actual_seq_lengths_kv=[3],
        attention_out=out, softmax_lse=lse,
    )  # fmt: skip
    assert torch.isfinite(out.cpu().float()).all() and lse.cpu().item() == 0


def _rope_reference(x, positions, cache, head, mode):
    rot = cache.shape[1]
    cos, sin = cache[positions, : rot // 2], cache[positions, rot // 2 :]
    h = x.view(x.shape[0], -1, head).float()
    r = h[..., :rot]
    if mode == "half":
        x1, x2 = r.chunk(2, dim=-1)
        c, s = cos[:, None], sin[:, None]
        r = torch.cat((x1 * c - x2 * s, x2 * c + x1 * s), dim=-1)
    else:
        x1, x2 = r[..., 0::2], r[..., 1::2]
        c, s = cos[:, None], sin[:, None]
        r = torch.stack((x1 * c - x2 * s, x2 * c + x1 * s), dim=-1).flatten(-2)
    return torch.cat((r, h[..., rot:]), dim=-1).reshape(x.shape)


@pytest.mark.parametrize("mode", ["half", "interleave"])
def test_npu_mrope_rope_mode(mode: str) -> None:
    import torch_npu

    torch.manual_seed(1)
    positions = torch.tensor([0, 5, 2, 9])
    inv = 1.0 / 10000 ** (torch.arange(0, 32, 2).float() / 32)
    freqs = torch.outer(torch.arange(16).float(), inv)
    cache = torch.cat((freqs.cos(), freqs.sin()), dim=-1)
    q, k = torch.randn(4, 4 * 64), torch.randn(4, 2 * 64)  # head 64, rotary 32
    q_out, k_out = torch_npu.npu_mrope(
        positions.to("npu"), q.to("npu"), k.to("npu"), cache.to("npu"), 64,
        mrope_section=[0, 0, 0], rotary_mode=mode,
    )  # fmt: skip
    torch.testing.assert_close(q_out.cpu(), _rope_reference(q, positions, cache, 64, mode))
    torch.testing.assert_close(k_out.cpu(), _rope_reference(k, positions, cache, 64, mode))


def test_npu_mrope_refuses_what_its_documentation_rules_out() -> None:
    import torch_npu

    q = torch.randn(2, 4 * 16, dtype=torch.bfloat16, device="npu")
    cache = torch.randn(8, 16, dtype=torch.bfloat16, device="npu")
    positions = torch.tensor([0, 1], device="npu")
    # A 16-wide rotary dim in bfloat16 (the tiny 64-hidden Qwen2 / Llama: head_dim 16).
    with pytest.raises(ContractError, match="must be a multiple of 32"):
        torch_npu.npu_mrope(positions, q, q, cache, 16, mrope_section=[0, 0, 0])
    cache32 = torch.randn(8, 32, device="npu")
    q32 = torch.randn(2, 4 * 32, device="npu")
    with pytest.raises(ContractError, match="outside the cache"):
        torch_npu.npu_mrope(torch.tensor([0, 8], device="npu"), q32, q32, cache32, 32)


def test_stand_in_kernel_is_one_graph_node_and_replays() -> None:
    from sgl_kernel_npu.norm.split_qkv_rmsnorm_rope import split_qkv_rmsnorm_rope

    qkv = torch.randn(2, 4 * 32 + 2 * 2 * 32, dtype=torch.bfloat16, device="npu")
    sin = torch.zeros(2, 1, 1, 32, dtype=torch.bfloat16, device="npu")
    cos = torch.ones(2, 1, 1, 32, dtype=torch.bfloat16, device="npu")
    graph = torch.npu.NPUGraph()
    with torch.npu.graph(graph):
        q, k, v = split_qkv_rmsnorm_rope(qkv, sin, cos, 4 * 32, 2 * 32, 32)
    names = [node.name for node in graph._nodes]
    assert names == ["sgl_kernel_npu.norm.split_qkv_rmsnorm_rope.split_qkv_rmsnorm_rope"]
    qkv.copy_(torch.randn(2, 256, dtype=torch.bfloat16))
    graph.replay()
    host = qkv.cpu()
    assert torch.equal(q.cpu(), host[:, :128]) and torch.equal(v.cpu(), host[:, 192:])


def test_pyacl_profiler_and_multiprocessing_stand_ins() -> None:
    import acl
    import torch_npu

    assert acl.rt.get_device_info(0, 601) == (2201, 0)  # not Ascend 950 (3510)
    assert acl.rt.get_device_info(5, 601)[1] != 0
    assert acl.rt.get_device_info(0, 12345)[1] != 0
    assert acl.get_soc_name() == "Ascend910B2"

    from torch_npu.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.NPU]) as prof:
        torch.ones(4, device="npu").add_(1)
    assert any("add_" in e.name for e in prof.events())

    from torch_npu.multiprocessing import reductions

    with pytest.raises(RuntimeError, match="cannot share device memory between processes"):
        reductions.rebuild_npu_tensor()
    assert torch_npu.multiprocessing is not None


def test_graph_capture_capability_follows_torch_npu() -> None:
    from npu_platform.sglang import capabilities

    ok, reason = capabilities.graph_support()
    assert ok is True and "NPUGraph" in reason


def test_replay_of_an_updatable_graph_waits_for_its_update(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """As on the NPU (an external event before each updatable op), a replay runs the op only
    after an update since the previous replay; none at all is an error, not a hang."""
    import threading

    import torch_npu
    from torch_npu.npu import graphs

    monkeypatch.setattr(graphs, "_UPDATE_WAIT_SECONDS", 0.5)
    q = torch.randn(1, 1, N * D, dtype=torch.bfloat16, device="npu")
    cache = torch.randn(1, BLOCK, KV * D, dtype=torch.bfloat16, device="npu")
    table = torch.zeros(1, 1, dtype=torch.int32, device="npu")
    out = torch.empty(1, 1, N * D, dtype=torch.bfloat16, device="npu")
    lse = torch.empty(1, dtype=torch.bfloat16, device="npu")
    graph = torch.npu.NPUGraph()
    with torch.npu.graph(graph, auto_dispatch_capture=True):
        _decode_call(torch_npu, q, cache, cache, table, [3], out, lse)
    with pytest.raises(RuntimeError, match="waits for NPUGraph.update"):
        graph.replay()
    # sglang's order: the update is submitted to another thread, then replay starts.
    late = threading.Timer(0.2, graph.update, kwargs={"cpu_update_input": [
        {"actual_seq_lengths_kv": [100]}]})  # fmt: skip
    late.start()
    graph.replay()
    late.join()
    host = [t.cpu() for t in (q, cache, cache, table)]
    torch.testing.assert_close(
        out.cpu().float(),
        _reference_decode(*host, [100], 1 / math.sqrt(D)),
        atol=2e-2,
        rtol=2e-2,
    )
