"""A dInfer-shaped program that knows only CUDA (it never mentions the NPU).

It starts the way dInfer does: the parent picks a port and spawns one worker per GPU with
``multiprocessing`` (spawn); each worker asks ``torch.cuda.is_available()``, calls
``torch.cuda.set_device(rank)``, joins an
``nccl`` process group, all-reduces, runs ``flash_attn_varlen_func`` on packed sequences of
different lengths (grouped-query heads, causal and not) and compares it with plain attention,
round-trips ``flash_attn.bert_padding``, moves a module with ``.cuda()``, captures and
replays a CUDA graph, and uses ``torch_memory_saver`` (region, pause, resume) as sglang does.

Usage: ``python program.py RESULT.json [--world-size N] [--keep-going]``. Each worker
records every step it ran as ``"ok"`` or ``"ErrorType: message"`` (it stops at the first
failure unless ``--keep-going``), with the device of the tensors each step made
(``"devices"``), and the parent writes them all to RESULT.json
(``{"ok": ..., "workers": [{"rank", "steps", "failed", "exitcode", ...}]}``). The exit
status is 0 only if every worker finished every step.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import os
import socket
import sys
from pathlib import Path

SEQLENS = (5, 3, 8)
HEADS, KV_HEADS, HEAD_DIM = 4, 2, 16


def naive_attention(q, k, v, seqlens, causal, scale):
    """Softmax attention per sequence in float32, KV heads repeated for grouped queries."""
    import torch

    outs, start = [], 0
    for n in seqlens:
        qs, ks, vs = (t[start : start + n].float() for t in (q, k, v))
        repeat = qs.shape[1] // ks.shape[1]
        ks, vs = ks.repeat_interleave(repeat, dim=1), vs.repeat_interleave(repeat, dim=1)
        scores = torch.einsum("qhd,khd->hqk", qs, ks) * scale
        if causal:
            hidden = torch.ones(n, n, dtype=torch.bool, device=scores.device).triu(1)
            scores = scores.masked_fill(hidden, float("-inf"))
        outs.append(torch.einsum("hqk,khd->qhd", scores.softmax(dim=-1), vs))
        start += n
    return torch.cat(outs)


def check_flash_attn(device, report):
    import torch
    from flash_attn import flash_attn_varlen_func
    from flash_attn.bert_padding import pad_input, unpad_input

    report["flash_attn_module"] = flash_attn_varlen_func.__module__
    gen = torch.Generator().manual_seed(1234)
    total = sum(SEQLENS)
    q, k, v = (
        torch.randn(total, heads, HEAD_DIM, generator=gen).to(device, torch.float16)
        for heads in (HEADS, KV_HEADS, KV_HEADS)
    )
    ends = [0]
    for n in SEQLENS:
        ends.append(ends[-1] + n)
    cu_seqlens = torch.tensor(ends, dtype=torch.int32, device=device)
    scale = 1.0 / math.sqrt(HEAD_DIM)
    errors = {}
    for causal in (False, True):
        out = flash_attn_varlen_func(
            q, k, v, cu_seqlens, cu_seqlens, max(SEQLENS), max(SEQLENS),
            softmax_scale=scale, causal=causal,
        )  # fmt: skip
        assert out.shape == q.shape, out.shape
        ref = naive_attention(q, k, v, SEQLENS, causal, scale)
        errors[str(causal)] = (out.float() - ref).abs().max().item()
        assert errors[str(causal)] < 1e-2, errors
        report["devices"]["flash_attn"] = str(out.device)
    report["flash_attn_max_error"] = errors

    # padded batch <-> packed tokens
    batch, seqlen = len(SEQLENS), max(SEQLENS)
    mask = torch.zeros(batch, seqlen, dtype=torch.bool, device=device)
    for row, n in enumerate(SEQLENS):
        mask[row, :n] = True
    indices = torch.nonzero(mask.flatten()).flatten()
    padded = pad_input(q, indices, batch, seqlen)
    packed, indices2, cu2, max_len, _used = unpad_input(padded, mask)
    assert torch.equal(packed, q) and torch.equal(indices2, indices)
    assert cu2.tolist() == ends and max_len == seqlen


def check_memory_saver(device, report):
    import torch
    import torch_memory_saver

    report["memory_saver_module"] = torch_memory_saver.__name__
    saver = torch_memory_saver.torch_memory_saver
    with saver.region(tag="kv_cache"):
        kv_cache = torch.zeros(4096, device=device)
    report["devices"]["torch_memory_saver"] = str(kv_cache.device)
    with saver.region(tag="weights", enable_cpu_backup=True):
        weights = torch.ones(1024, device=device)
    saver.pause("kv_cache")
    saver.resume("kv_cache")
    saver.pause()
    saver.resume()
    kv_cache.fill_(2.0)
    assert kv_cache.sum().item() == 2.0 * 4096 and weights.sum().item() == 1024


def check_cuda_graph(device, report):
    import torch

    gen = torch.Generator().manual_seed(7)
    weight = torch.randn(8, 8, generator=gen).to(device)
    static_x = torch.zeros(8, device=device)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm-up on a side stream, as the CUDA docs do
        (weight @ static_x).relu()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_y = (weight @ static_x).relu() + 1
    report["devices"]["cuda_graph"] = str(static_y.device)
    for _ in range(2):
        new_x = torch.randn(8, generator=gen).to(device)
        static_x.copy_(new_x)
        graph.replay()
        assert torch.allclose(static_y, (weight @ new_x).relu() + 1)


def step_set_device(rank, world_size, state, report):
    import torch

    state["device"] = torch.device("cuda", rank)
    torch.cuda.set_device(rank)
    assert torch.cuda.current_device() == rank


def step_init_process_group(rank, world_size, state, report):
    import torch.distributed as dist

    dist.init_process_group("nccl", rank=rank, world_size=world_size)
    report["backend"] = dist.get_backend()


def step_all_reduce(rank, world_size, state, report):
    import torch
    import torch.distributed as dist

    value = torch.full((4,), float(rank + 1), device=state["device"])
    report["devices"]["all_reduce"] = str(value.device)
    dist.all_reduce(value)
    assert value.tolist() == [world_size * (world_size + 1) / 2] * 4, value


def step_module_cuda(rank, world_size, state, report):
    import torch

    model = torch.nn.Linear(8, 8).cuda()
    y = model(torch.randn(2, 8).cuda())
    assert y.device == model.weight.device
    report["devices"]["module_cuda"] = str(y.device)


def step_shutdown(rank, world_size, state, report):
    import torch
    import torch.distributed as dist

    torch.cuda.synchronize()
    dist.barrier()
    dist.destroy_process_group()


STEPS = (
    ("set_device", step_set_device),
    ("init_process_group", step_init_process_group),
    ("all_reduce", step_all_reduce),
    ("flash_attn", lambda rank, world, state, report: check_flash_attn(state["device"], report)),
    ("module_cuda", step_module_cuda),
    ("cuda_graph", lambda rank, world, state, report: check_cuda_graph(state["device"], report)),
    (
        "torch_memory_saver",
        lambda rank, world, state, report: check_memory_saver(state["device"], report),
    ),
    ("shutdown", step_shutdown),
)


def worker(rank, world_size, out_dir, keep_going):
    """Run the steps; stop at the first failure unless ``keep_going``."""
    report = {"rank": rank, "steps": {}, "failed": None, "devices": {}}
    state = {}
    try:
        import torch

        report["cuda_available"] = torch.cuda.is_available()
        for name, run in STEPS:
            try:
                run(rank, world_size, state, report)
            except Exception as exc:
                report["steps"][name] = f"{type(exc).__name__}: {exc}"
                report["failed"] = report["failed"] or name
                if not keep_going:
                    raise
            else:
                report["steps"][name] = "ok"
    finally:
        Path(out_dir, f"rank{rank}.json").write_text(json.dumps(report))
    if report["failed"]:
        sys.exit(1)


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("result")
    parser.add_argument("--world-size", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=300)
    parser.add_argument(
        "--keep-going", action="store_true", help="run every step even after a failure"
    )
    args = parser.parse_args(argv)
    result = Path(args.result)
    out_dir = result.with_suffix(".workers")
    out_dir.mkdir(parents=True, exist_ok=True)
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(free_port())

    ctx = mp.get_context("spawn")
    procs = [
        ctx.Process(target=worker, args=(rank, args.world_size, str(out_dir), args.keep_going))
        for rank in range(args.world_size)
    ]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(args.timeout)
    workers = []
    for rank, proc in enumerate(procs):
        if proc.is_alive():
            proc.terminate()
            proc.join()
        path = out_dir / f"rank{rank}.json"
        report = json.loads(path.read_text()) if path.exists() else {"rank": rank}
        report["exitcode"] = proc.exitcode
        workers.append(report)
    ok = all(w.get("exitcode") == 0 and not w.get("failed") for w in workers)
    result.write_text(json.dumps({"ok": ok, "workers": workers}, indent=2))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
