"""Pieces of the start-up patches, in-process and without patching this process's torch."""

from __future__ import annotations

import importlib.util
import sys
import types

import pytest
from npu_platform.patches import _boot, distributed

from npu_platform.detect import Target

torch = pytest.importorskip("torch")

from npu_platform.patches import _graphs  # noqa: E402

# ---------------------------------------------------------------------------- backends


@pytest.mark.parametrize(
    ("value", "real", "emulated"),
    [
        ("nccl", "hccl", "gloo"),
        ("NCCL", "hccl", "gloo"),
        ("gloo", "gloo", "gloo"),
        ("hccl", "hccl", "hccl"),
        (None, None, None),
        ("cpu:gloo,cuda:nccl", "cpu:gloo,npu:hccl", "cpu:gloo"),
        ("cuda:nccl", "npu:hccl", "cpu:gloo"),
    ],
)
def test_map_backend(value, real, emulated):
    assert distributed.map_backend(value, Target.REAL) == real
    assert distributed.map_backend(value, Target.EMULATED) == emulated


def test_map_device_id():
    cuda1 = torch.device("cuda", 1)
    assert distributed.map_device_id(cuda1, Target.EMULATED) is None
    assert distributed.map_device_id(1, Target.EMULATED) is None
    assert distributed.map_device_id(None, Target.REAL) is None
    cpu = torch.device("cpu")
    assert distributed.map_device_id(cpu, Target.EMULATED) is cpu


def fake_parallel_state():
    calls = []

    def init_distributed_environment(world_size=-1, rank=-1, method="env://", backend="nccl"):
        calls.append(("init", backend))

    def initialize_model_parallel(tp=1, pp=1, backend=None):
        calls.append(("mp", backend))

    parent = types.ModuleType("fakepkg.distributed")
    module = types.ModuleType("fakepkg.distributed.parallel_state")
    for fn in (init_distributed_environment, initialize_model_parallel):
        setattr(module, fn.__name__, fn)
        setattr(parent, fn.__name__, fn)  # `from .parallel_state import *`
    return parent, module, calls


def test_patch_parallel_state_rewrites_positional_and_keyword_backends(monkeypatch):
    parent, module, calls = fake_parallel_state()
    monkeypatch.setitem(sys.modules, parent.__name__, parent)
    done = distributed.patch_parallel_state(module, Target.EMULATED)
    assert done == ["init_distributed_environment", "initialize_model_parallel"]
    assert parent.init_distributed_environment is module.init_distributed_environment
    module.init_distributed_environment(1, 0, "tcp://x", "nccl")
    parent.init_distributed_environment(backend="nccl")
    module.init_distributed_environment()  # the default stays as the function has it
    module.initialize_model_parallel(1, 1, "cuda:nccl")
    module.initialize_model_parallel(backend=None)
    assert calls == [
        ("init", "gloo"),
        ("init", "gloo"),
        ("init", "nccl"),
        ("mp", "cpu:gloo"),
        ("mp", None),
    ]
    wrapper = module.init_distributed_environment
    assert distributed.patch_parallel_state(module, Target.EMULATED) == done
    assert module.init_distributed_environment is wrapper  # idempotent


# ---------------------------------------------------------------------------- graphs


def test_emulated_graph_replays_on_the_same_tensors():
    x = torch.zeros(4)
    w = torch.arange(16.0).reshape(4, 4)
    acc = torch.zeros(4)
    g = _graphs.EmulatedCUDAGraph()
    assert not _graphs.is_current_stream_capturing()
    with _graphs.graph(g):
        assert _graphs.is_current_stream_capturing()
        y = (w @ x).relu() + 1
        view = y[1:3]
        acc.add_(x)  # in place on a tensor from outside the capture
    assert not _graphs.is_current_stream_capturing()
    assert len(g) > 0
    for trial in range(1, 3):
        new = torch.arange(4.0) * trial
        x.copy_(new)
        g.replay()
        torch.testing.assert_close(y, (w @ new).relu() + 1)
        torch.testing.assert_close(view, y[1:3])
    torch.testing.assert_close(acc, torch.arange(4.0) * 3)  # 0 + 1x + 2x


def test_emulated_graph_lifecycle_errors():
    g = _graphs.EmulatedCUDAGraph()
    with pytest.raises(RuntimeError, match="captured graph"):
        g.replay()
    with pytest.raises(RuntimeError, match="boom"), _graphs.graph(g):
        raise RuntimeError("boom")
    assert not _graphs.is_current_stream_capturing()
    with pytest.raises(RuntimeError, match="already been captured"), _graphs.graph(g):
        pass
    g.reset()
    x = torch.ones(2)
    with _graphs.graph(g, pool=_graphs.graph_pool_handle()):
        y = x * 3
    x.fill_(2)
    g.replay()
    assert y.tolist() == [6.0, 6.0]


# ---------------------------------------------------------------------------- CUDA specs


def test_emulated_device_checks_the_index(emulated, monkeypatch):
    from npu_platform.patches import cuda

    from npu_platform import device
    from npu_platform.detect import detect

    monkeypatch.setenv("NPU_PLATFORM_EMULATE_DEVICES", "2")
    detect(refresh=True)
    device.reset_backend()
    assert cuda.emulated_device("cuda:1") == torch.device("cpu")
    assert cuda.emulated_device(torch.device("cuda")) == torch.device("cpu")
    assert cuda._convert("cpu") == "cpu"
    assert cuda._convert(0, ints=True) == torch.device("cpu")
    assert cuda._convert(0) == 0
    with pytest.raises(ValueError, match="out of range"):
        cuda.emulated_device("cuda:2")
    device.reset_backend()


# ---------------------------------------------------------------------------- the finder


def test_finder_ignores_unwatched_names():
    finder = _boot.StartupFinder()
    for name in ("json", "numpy", "torchvision", "torch.nn", "vllm", "sglang.srt"):
        assert finder.find_spec(name) is None
    assert finder.state == _boot.UNDECIDED


def test_cheap_precheck(monkeypatch):
    monkeypatch.setenv("NPU_PLATFORM_EMULATE", "1")
    assert _boot.StartupFinder()._maybe_npu() is True
    monkeypatch.setenv("NPU_PLATFORM_EMULATE", "bad")  # detect() will report it
    assert _boot.StartupFinder()._maybe_npu() is True
    monkeypatch.setenv("NPU_PLATFORM_EMULATE", "0")
    finder = _boot.StartupFinder()
    assert finder._maybe_npu() is False  # no torch_npu here
    assert finder.state == _boot.INACTIVE
    assert finder.find_spec("torch") is None and finder.find_spec("flash_attn") is None


def test_post_import_loader_calls_back_and_restores_the_loader(tmp_path, monkeypatch):
    (tmp_path / "post_import_probe.py").write_text("VALUE = 41\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    seen = []

    class Recording(_boot.StartupFinder):
        def module_loaded(self, module):
            seen.append(module.VALUE)

    spec = Recording()._wrapped_spec("post_import_probe", None, None)
    assert type(spec.loader).__name__ == "_PostImportLoader"
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert seen == [41]
    assert type(module.__spec__.loader).__name__ == "SourceFileLoader"
    assert module.__loader__ is module.__spec__.loader


@pytest.mark.parametrize(("value", "off"), [("0", True), ("off", True), ("", True), ("1", False)])
def test_opt_out_values(value, off):
    assert _boot._off(value) is off
    assert _boot._off(None) is False
