"""``torch_npu.contrib.transfer_to_npu`` on the emulated NPU: CUDA code runs on the NPU.

Each check runs in a subprocess with ``NPU_PLATFORM_EMULATE=1`` (importing transfer_to_npu
patches torch for the whole process; this pytest process stays un-emulated and unpatched).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REAL_MODULE = os.path.join(
    REPO, ".venv", "share", "npu_platform", "torch_npu", "contrib", "transfer_to_npu.py"
)

PRELUDE = textwrap.dedent(
    """
    import os, tempfile, warnings
    import torch
    import torch_npu
    import torch_npu.contrib.transfer_to_npu as t2n
    warnings.simplefilter("ignore")
    """
)


def run(body: str, timeout: int = 600) -> str:
    env = dict(os.environ, NPU_PLATFORM_EMULATE="1", PYTHONPATH=REPO)
    proc = subprocess.run(
        [sys.executable, "-c", PRELUDE + textwrap.dedent(body) + "\nprint('DONE')\n"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert proc.returncode == 0 and "DONE" in proc.stdout, proc.stdout[-4000:] + proc.stderr[-4000:]
    return proc.stdout


def test_torch_cuda_answers_with_torch_npu():
    run(
        """
        assert torch.cuda.is_available()
        assert torch.cuda.is_initialized() == torch.npu.is_initialized()
        assert torch.cuda.device_count() == torch.npu.device_count() >= 1
        torch.cuda.set_device(0)
        torch.cuda.set_device("cuda:0")
        assert torch.cuda.current_device() == 0
        torch.cuda.synchronize()
        torch.cuda.synchronize("cuda:0")
        s = torch.cuda.Stream()
        assert s.device.type == "npu"
        assert torch.cuda.current_stream().device.type == "npu"
        e = torch.cuda.Event(enable_timing=True)
        e.record()
        e.synchronize()
        assert torch.cuda.get_device_properties("cuda:0").name == torch.npu.get_device_name(0)
        assert torch.cuda.get_device_name(0) == torch.npu.get_device_name(0)
        # torch.npu answers None (TORCH_NPU_DEVICE_CAPABILITY unset); torch.cuda a tuple
        cap = torch.cuda.get_device_capability()
        assert cap == (0, 0) or cap == torch.npu.get_device_capability(), cap
        free, total = torch.cuda.mem_get_info("cuda:0")
        assert 0 < free <= total == torch.npu.mem_get_info(0)[1]
        x = torch.ones(1024, device="cuda")
        assert torch.cuda.memory_allocated() == torch.npu.memory_allocated() >= 4096
        assert torch.cuda.memory_stats()["allocated_bytes.all.current"] >= 4096
        torch.cuda.reset_peak_memory_stats()
        assert torch.cuda.max_memory_allocated() == torch.cuda.memory_allocated()
        state = torch.cuda.get_rng_state()
        torch.cuda.set_rng_state(state, "cuda")
        torch.cuda.manual_seed(1)
        torch.cuda.empty_cache()
        torch.cuda.ipc_collect()
        assert torch.cuda.CUDAGraph is torch.npu.NPUGraph
        assert torch.cuda.device is torch.npu.device
        with torch.cuda.device("cuda:0"):
            pass
        assert torch.Tensor.cuda is torch.Tensor.npu
        assert torch.nn.Module.cuda is torch.nn.Module.npu
        assert torch.ones(1, device="cuda").is_cuda and not torch.ones(1).is_cuda
        assert torch._utils._get_available_device_type() == "npu"
        """
    )


def test_cuda_device_arguments_become_npu():
    run(
        """
        npu0 = torch.device("npu", 0)
        assert torch.device(0) == npu0
        assert torch.zeros(2, device="cuda").device == npu0
        assert torch.zeros(2, device="cuda:0").device == npu0
        assert torch.randn(2, device=torch.device("cuda", 0)).device == npu0
        assert torch.tensor([1], device=0).device == npu0
        assert torch.full((2,), 3.0, device="cuda").device == npu0
        assert torch.arange(4, device="cuda").device == npu0
        t = torch.empty(4, device="cuda", pin_memory=True)
        assert t.device == npu0
        p = torch.ones(3).pin_memory()
        assert p.is_pinned() and p.device.type == "cpu"
        x = torch.ones(3)
        assert x.cuda().device == npu0
        assert x.to("cuda").device == npu0 and x.to(0).device == npu0
        assert x.to("cuda:0", torch.float16).dtype == torch.float16
        y = x.to("cuda")
        assert y.new_zeros(2, device="cuda").device == npu0
        assert y.to("cpu").device.type == "cpu"
        m = torch.nn.Linear(2, 2)
        assert m.cuda().weight.device == npu0
        assert torch.nn.Linear(2, 2).to("cuda").weight.device == npu0
        assert torch.nn.Linear(2, 2).to(0).weight.device == npu0
        assert torch.nn.Linear(2, 2, device="cuda").weight.device == npu0
        with torch.device("cuda"):
            assert torch.ones(1).device.type == "npu"
        folder = tempfile.mkdtemp()
        torch.save({"w": torch.arange(3.0)}, os.path.join(folder, "x.pt"))
        for where in ("cuda", "cuda:0", torch.device("cuda"), {"cpu": "cuda:0"}):
            w = torch.load(os.path.join(folder, "x.pt"), map_location=where)["w"]
            assert w.device == npu0 and torch.equal(w.cpu(), torch.arange(3.0)), where
        import safetensors.torch as st
        path = os.path.join(folder, "a.safetensors")
        st.save_file({"a": torch.arange(4.0)}, path)
        loaded = st.load_file(path, device="cuda")
        assert loaded["a"].device.type == "npu"
        assert torch.equal(loaded["a"].cpu(), torch.arange(4.0))
        assert isinstance(torch.default_generator, torch.Generator)
        ev = torch.Event("cuda")
        assert ev.device.type == "npu" and type(ev) is t2n._EventProxy.__mro__[1]
        """
    )


def test_torch_compile_runs_after_transfer():
    run(
        """
        f = torch.compile(lambda x: x.sin())
        torch.testing.assert_close(f(torch.ones(2)), torch.ones(2).sin())
        assert torch._inductor.utils.get_gpu_type() == "npu"
        assert torch.utils._triton.has_triton() is False
        """
    )


def test_torch_compile_on_npu_tensors():
    """dynamo captures graphs of npu tensors (dynamic shapes, recompiles, mode="reduce-overhead",
    a flash_attn call as a graph break) and they give eager's results; CPU graphs still
    compile with inductor. A disabled autocast region works on the npu."""
    run(
        """
        import flash_attn
        from torch._dynamo.device_interface import get_interface_for_device
        from torch._dynamo.utils import counters

        def decode(logits, threshold):
            conf, index = logits.softmax(-1).max(-1)
            return torch.where(conf > threshold, index, -1), conf

        f = torch.compile(decode, dynamic=True)
        for n in (5, 9):
            x = torch.randn(2, n, 16, device="cuda")
            got, want = f(x, 0.2), decode(x, 0.2)
            assert got[0].device == torch.device("npu", 0)
            assert all(torch.equal(a.cpu(), b.cpu()) for a, b in zip(got, want))
        assert counters["stats"]["unique_graphs"] >= 1
        assert get_interface_for_device("npu").device_count() == 1

        lin = torch.nn.Linear(16, 16).cuda()
        def attend(q):
            h = lin(q).view(1, -1, 2, 8)
            return flash_attn.flash_attn_func(h, h, h).sum(-1) + 1
        g = torch.compile(attend, mode="reduce-overhead", dynamic=True)
        for n in (4, 7):
            q = torch.randn(n, 16, device="cuda")
            torch.testing.assert_close(g(q).cpu(), attend(q).cpu())

        c = torch.compile(lambda x: x.cos() + 1)
        torch.testing.assert_close(c(torch.ones(3)), torch.ones(3).cos() + 1)

        with torch.autocast("cuda", enabled=False):
            y = torch.ones(2, 2, device="cuda") @ torch.ones(2, 2, device="cuda")
        assert y.dtype == torch.float32 and not torch.npu.is_autocast_enabled()
        assert torch.bfloat16 in torch.npu.get_amp_supported_dtype()
        """
    )


def test_jit_script_is_disabled_and_distributed_uses_hccl():
    run(
        """
        def f(x):
            return x + 1
        assert torch.jit.script(f) is f
        import torch.distributed as dist
        assert dist.is_nccl_available is dist.is_hccl_available and dist.is_nccl_available()
        from torch_npu._C._distributed_c10d import ProcessGroupHCCL
        assert dist.ProcessGroupNCCL is ProcessGroupHCCL
        assert "cuda" not in dist.Backend.default_device_backend_map
        folder = tempfile.mkdtemp()
        dist.init_process_group(
            "nccl", init_method="file://" + os.path.join(folder, "s"), rank=0, world_size=1
        )
        assert dist.get_backend() == "hccl"
        g = dist.new_group([0], backend="nccl")
        assert dist.get_backend(g) == "hccl"
        x = torch.ones(2, device="cuda")
        dist.all_reduce(x, group=g)
        assert torch.equal(x.cpu(), torch.ones(2))
        dist.destroy_process_group()
        """
    )


@pytest.mark.xfail(
    strict=True,
    reason="known gap of the emulated device: autocast is not registered for npu "
    "(README, 'The emulated NPU: what differs from hardware')",
)
def test_cuda_amp_autocast_runs_on_npu():
    run(
        """
        with torch.cuda.amp.autocast(dtype=torch.bfloat16):
            a = torch.ones(2, 2, device="cuda")
            y = torch.nn.functional.linear(a, a)
            assert torch.is_autocast_enabled() and torch.is_autocast_enabled("cuda")
        assert y.dtype == torch.bfloat16
        with torch.autocast("cuda", dtype=torch.bfloat16):
            z = torch.ones(2, 2, device="cuda") @ torch.ones(2, 2, device="cuda")
        assert z.dtype == torch.bfloat16
        """
    )


@pytest.mark.xfail(
    strict=True,
    reason="known gap of the emulated device: its generators are CPU generators "
    "(README, 'The emulated NPU: what differs from hardware')",
)
def test_generator_for_cuda_is_an_npu_generator():
    run(
        """
        g = torch.Generator("cuda")
        assert g.device.type == "npu", g.device
        assert isinstance(g, torch.Generator)
        """
    )


def test_same_names_and_signatures_as_torch_npu():
    """Every function, class and module-level name of torch_npu's transfer_to_npu exists with
    the same parameters (names, kinds, number of defaults)."""
    run(
        f"""
        import ast, inspect
        real = ast.parse(open({REAL_MODULE!r}).read())
        problems = []
        for node in real.body:
            if isinstance(node, ast.FunctionDef):
                mine = getattr(t2n, node.name, None)
                if mine is None:
                    problems.append(("missing function", node.name))
                    continue
                params = inspect.signature(inspect.unwrap(mine)).parameters.values()
                a = node.args
                want = [x.arg for x in a.posonlyargs + a.args]
                want += ["*" + a.vararg.arg] if a.vararg else []
                want += [x.arg for x in a.kwonlyargs]
                want += ["**" + a.kwarg.arg] if a.kwarg else []
                got = [
                    {{p.VAR_POSITIONAL: "*", p.VAR_KEYWORD: "**"}}.get(p.kind, "") + p.name
                    for p in params
                ]
                n_defaults = sum(
                    1 for p in params if p.default is not p.empty and p.kind != p.KEYWORD_ONLY
                )
                if want != got or n_defaults != len(a.defaults):
                    problems.append((node.name, want, got))
            elif isinstance(node, ast.ClassDef):
                if not isinstance(getattr(t2n, node.name, None), type):
                    problems.append(("missing class", node.name))
            elif isinstance(node, ast.Assign):
                for target in node.targets:
                    if isinstance(target, ast.Name) and not hasattr(t2n, target.id):
                        problems.append(("missing name", target.id))
                    elif isinstance(target, ast.Name) and target.id.endswith("_list"):
                        if ast.literal_eval(node.value) != getattr(t2n, target.id):
                            problems.append(("different list", target.id))
        assert t2n.__all__ == []
        assert not problems, problems
        """
    )
