"""The emulated NPU's ``hccl`` process-group backend, with 2 spawned processes.

Everything runs in a subprocess with ``NPU_PLATFORM_EMULATE=1`` (this pytest process stays
un-emulated); that subprocess spawns two ranks with torch.multiprocessing, which
``init_process_group("hccl")`` over a FileStore and check every collective on ``npu``
tensors against values computed with plain torch on CPU.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

WORKER = textwrap.dedent(
    r'''
    import datetime
    import os
    import sys
    import tempfile
    import traceback

    import torch
    import torch.distributed as dist
    import torch.multiprocessing as mp

    WORLD = 2
    DEV = os.environ.get("HCCL_TEST_DEVICE", "npu")


    def expect(got, want, what):
        got = got.detach().to("cpu")
        if got.dtype != want.dtype or got.shape != want.shape or not torch.equal(got, want):
            raise AssertionError(f"{what}: got {got} expected {want}")


    def value(rank, n, dtype=torch.float32):
        """What rank `rank` contributes: distinct per rank and element."""
        return (torch.arange(n) + 10 * (rank + 1)).to(dtype)


    def checks(rank, device):
        import torch_npu  # the emulated package
        from torch_npu._C._distributed_c10d import ProcessGroupHCCL

        other = 1 - rank
        assert dist.get_backend() == "hccl", dist.get_backend()
        assert dist.is_hccl_available()
        assert dist.group.WORLD._get_backend(torch.device("npu")) is dist.group.WORLD

        # all_reduce: sum / max / min / product / avg (float and int) and non-contiguous
        for op, combine in (
            (dist.ReduceOp.SUM, lambda a, b: a + b),
            (dist.ReduceOp.MAX, torch.maximum),
            (dist.ReduceOp.MIN, torch.minimum),
            (dist.ReduceOp.PRODUCT, lambda a, b: a * b),
        ):
            t = value(rank, 5).to(device)
            dist.all_reduce(t, op=op)
            expect(t, combine(value(0, 5), value(1, 5)), f"all_reduce {op}")
        t = value(rank, 4).to(device)
        dist.all_reduce(t, op=dist.ReduceOp.AVG)
        expect(t, (value(0, 4) + value(1, 4)) / 2, "all_reduce AVG float")
        t = torch.tensor([3, 8], dtype=torch.int32, device=device) + rank
        dist.all_reduce(t, op=dist.ReduceOp.AVG)
        expect(t, torch.tensor([3, 8], dtype=torch.int32), "all_reduce AVG int (trunc)")
        for dtype in (torch.bfloat16, torch.float16, torch.int64):
            t = value(rank, 3, dtype).to(device)
            dist.all_reduce(t)
            expect(t, value(0, 3, dtype) + value(1, 3, dtype), f"all_reduce {dtype}")
        base = value(rank, 12).view(3, 4).to(device)
        view = base[:, ::2]
        assert not view.is_contiguous()
        dist.all_reduce(view)
        want = value(rank, 12).view(3, 4)
        want[:, ::2] = value(0, 12).view(3, 4)[:, ::2] + value(1, 12).view(3, 4)[:, ::2]
        expect(base, want, "all_reduce non-contiguous (in place, untouched columns kept)")

        # broadcast
        t = value(rank, 6).to(device)
        dist.broadcast(t, src=1)
        expect(t, value(1, 6), "broadcast")

        # reduce (incl. AVG at the root), gather, scatter
        t = value(rank, 3).to(device)
        dist.reduce(t, dst=1, op=dist.ReduceOp.AVG)
        if rank == 1:
            expect(t, (value(0, 3) + value(1, 3)) / 2, "reduce AVG")
        gathered = [torch.empty(2, device=device) for _ in range(WORLD)] if rank == 0 else None
        dist.gather(value(rank, 2).to(device), gathered, dst=0)
        if rank == 0:
            for r in range(WORLD):
                expect(gathered[r], value(r, 2), f"gather[{r}]")
        t = torch.empty(2, device=device)
        parts = [value(r, 2).to(device) * 3 for r in range(WORLD)] if rank == 1 else None
        dist.scatter(t, parts, src=1)
        expect(t, value(rank, 2) * 3, "scatter")

        # all_gather: even, then uneven sizes (NCCL accepts it, gloo would not)
        outs = [torch.empty(4, device=device) for _ in range(WORLD)]
        dist.all_gather(outs, value(rank, 4).to(device))
        for r in range(WORLD):
            expect(outs[r], value(r, 4), f"all_gather[{r}]")
        sizes = [3, 5]
        outs = [torch.full((n,), -1.0, device=device) for n in sizes]
        dist.all_gather(outs, value(rank, sizes[rank]).to(device))
        for r in range(WORLD):
            expect(outs[r], value(r, sizes[r]), f"all_gather uneven[{r}]")
        outs = [torch.empty(2, 3, device=device), torch.empty(5, device=device)]
        dist.all_gather(outs, value(rank, 6 if rank == 0 else 5).view(-1).to(device))
        expect(outs[0], value(0, 6).view(2, 3), "all_gather uneven, other shape")
        expect(outs[1], value(1, 5), "all_gather uneven[1]")
        try:  # uneven outputs that do not match what the ranks send: raises on every rank
            dist.all_gather(
                [torch.empty(3, device=device), torch.empty(5, device=device)],
                value(rank, 3 + rank).to(device),
            )
        except RuntimeError as exc:
            assert "[3, 5] do not match the ranks' input sizes [3, 4]" in str(exc), exc
        else:
            raise AssertionError("mismatched uneven all_gather did not raise")

        # all_gather_into_tensor
        out = torch.empty(WORLD * 3, 2, device=device)
        dist.all_gather_into_tensor(out, value(rank, 6).view(3, 2).to(device))
        expect(out, torch.cat([value(0, 6), value(1, 6)]).view(6, 2), "all_gather_into_tensor")
        try:
            dist.all_gather_into_tensor(torch.empty(5, device=device), torch.ones(3, device=device))
        except ValueError as exc:
            assert "must equal world_size (2) times input tensor size (3)" in str(exc), exc
        else:
            raise AssertionError("bad all_gather_into_tensor did not raise")

        # reduce_scatter (list, even and uneven) and reduce_scatter_tensor (sum and avg)
        ins = [value(rank, 4).to(device) + 100 * r for r in range(WORLD)]
        out = torch.empty(4, device=device)
        dist.reduce_scatter(out, ins)
        expect(out, value(0, 4) + value(1, 4) + 200 * rank, "reduce_scatter")
        sizes = [2, 3]
        ins = [value(rank, n).to(device) for n in sizes]
        out = torch.empty(sizes[rank], device=device)
        dist.reduce_scatter(out, ins)
        expect(out, value(0, sizes[rank]) + value(1, sizes[rank]), "reduce_scatter uneven")
        full = value(rank, 8).to(device)
        out = torch.empty(4, device=device)
        dist.reduce_scatter_tensor(out, full)
        want = (value(0, 8) + value(1, 8))[4 * rank : 4 * rank + 4]
        expect(out, want, "reduce_scatter_tensor")
        dist.reduce_scatter_tensor(out, full, op=dist.ReduceOp.AVG)
        expect(out, want / 2, "reduce_scatter_tensor AVG")

        # all_to_all_single (uneven splits) and all_to_all (lists)
        in_splits = [1, 3] if rank == 0 else [2, 2]
        out_splits = [1, 2] if rank == 0 else [3, 2]
        inp = value(rank, 4).to(device)
        out = torch.empty(sum(out_splits), device=device)
        dist.all_to_all_single(out, inp, out_splits, in_splits)
        if rank == 0:
            want = torch.cat([value(0, 4)[:1], value(1, 4)[:2]])
        else:
            want = torch.cat([value(0, 4)[1:], value(1, 4)[2:]])
        expect(out, want, "all_to_all_single")
        ins = [value(rank, 2).to(device) + r for r in range(WORLD)]
        outs = [torch.empty(2, device=device) for _ in range(WORLD)]
        dist.all_to_all(outs, ins)
        for r in range(WORLD):
            expect(outs[r], value(r, 2) + rank, f"all_to_all[{r}]")

        # send / recv, both directions at once with isend/irecv, recv into a strided view
        if rank == 0:
            dist.send(value(0, 3).to(device), dst=1)
        else:
            t = torch.empty(3, device=device)
            dist.recv(t, src=0)
            expect(t, value(0, 3), "send/recv")
        got = torch.zeros(4, 2, device=device)
        reqs = [
            dist.isend(value(rank, 4).to(device), dst=other),
            dist.irecv(got[:, 1], src=other),
        ]
        for req in reqs:
            req.wait()
        want = torch.zeros(4, 2)
        want[:, 1] = value(other, 4)
        expect(got, want, "isend/irecv into a strided view")

        dist.barrier()

        # a subgroup with sglang's options
        options = ProcessGroupHCCL.Options()
        options.hccl_config = {"hccl_buffer_size": 200}
        group = dist.new_group([0, 1], backend="hccl", pg_options=options)
        assert dist.get_backend(group) == "hccl"
        t = value(rank, 2).to(device)
        dist.all_reduce(t, group=group)
        expect(t, value(0, 2) + value(1, 2), "subgroup all_reduce")

        # object collectives and a functional collective
        objs = [None, None]
        dist.all_gather_object(objs, {"rank": rank})
        assert objs == [{"rank": 0}, {"rank": 1}], objs
        from torch.distributed import _functional_collectives as fc

        t = fc.all_reduce(value(rank, 3).to(device), "sum", dist.group.WORLD)
        expect(fc.wait_tensor(t), value(0, 3) + value(1, 3), "functional all_reduce")

        # unsupported reduce op and wrong device give clear errors
        try:
            dist.all_reduce(torch.ones(1, device=device), op=dist._make_nccl_premul_sum(2.0))
        except RuntimeError as exc:
            assert "PREMUL_SUM is not supported" in str(exc), exc
        else:
            raise AssertionError("PREMUL_SUM did not raise")
        dist.barrier()


    def worker(rank, store_path, result_dir):
        try:
            import torch_npu
            from torch_npu._C import _distributed_c10d

            _distributed_c10d.register()  # idempotent; import-time wiring is tested apart
            torch.npu.set_device(rank)
            device = torch.device(DEV, rank)
            dist.init_process_group(
                "hccl",
                store=dist.FileStore(store_path, WORLD),
                rank=rank,
                world_size=WORLD,
                timeout=datetime.timedelta(seconds=120),
            )
            checks(rank, device)
            dist.destroy_process_group()
            status = "OK"
        except BaseException:
            status = traceback.format_exc()
        with open(os.path.join(result_dir, f"rank{rank}"), "w") as f:
            f.write(status)


    if __name__ == "__main__":
        folder = tempfile.mkdtemp()
        failed = False
        try:
            mp.spawn(worker, args=(os.path.join(folder, "store"), folder), nprocs=WORLD)
        except Exception as exc:  # a rank died: report what each rank wrote
            print(f"spawn: {exc!r}")
            failed = True
        for rank in range(WORLD):
            path = os.path.join(folder, f"rank{rank}")
            status = open(path).read() if os.path.exists(path) else "no result"
            print(f"rank {rank}: {status}")
            failed |= status != "OK"
        sys.exit(1 if failed else 0)
    '''
)


def test_hccl_collectives_on_two_emulated_npu_ranks(tmp_path):
    script = tmp_path / "hccl_worker.py"
    script.write_text(WORKER)
    env = dict(
        os.environ,
        NPU_PLATFORM_EMULATE="1",
        NPU_PLATFORM_EMULATE_DEVICES="2",
        PYTHONPATH=REPO,
        GLOO_SOCKET_IFNAME=os.environ.get("GLOO_SOCKET_IFNAME", "lo"),
    )
    proc = subprocess.run(
        [sys.executable, str(script)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-6000:]
    assert proc.stdout.count(": OK") == 2, proc.stdout


def test_hccl_registered_by_importing_torch_npu():
    code = textwrap.dedent(
        """
        import torch.distributed as dist
        import torch_npu
        from torch_npu._C._distributed_c10d import ProcessGroupHCCL

        assert "hccl" in dist.Backend.backend_list, dist.Backend.backend_list
        assert dist.Backend.default_device_backend_map.get("npu") == "hccl"
        assert dist.Backend.backend_capability["hccl"] == ["npu"]
        assert dist.is_hccl_available()
        print("OK")
        """
    )
    env = dict(os.environ, NPU_PLATFORM_EMULATE="1", PYTHONPATH=REPO)
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0 and "OK" in proc.stdout, proc.stdout + proc.stderr


def test_hccl_module_imports_and_options_without_emulation():
    """The module is plain Python over torch.distributed (no device needed to import it)."""
    code = textwrap.dedent(
        """
        import importlib.util, sys
        path = sys.argv[1]
        spec = importlib.util.spec_from_file_location("hccl_c10d", path)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        o = mod.ProcessGroupHCCL.Options()
        o.hccl_config = {"hccl_buffer_size": 200}
        assert o._timeout.total_seconds() == 1800
        import copy
        assert copy.deepcopy(o).hccl_config == {"hccl_buffer_size": 200}
        print("OK")
        """
    )
    path = os.path.join(
        REPO, "npu_platform", "emulation", "site", "torch_npu", "_C", "_distributed_c10d.py"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, path],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env=dict(os.environ, NPU_PLATFORM_EMULATE="0"),
    )
    assert proc.returncode == 0 and "OK" in proc.stdout, proc.stdout + proc.stderr
