"""Pieces of the start-up patches, in-process and without patching this process's torch."""

from __future__ import annotations

import importlib.util
import sys
import types

import pytest
from npu_platform.patches import _boot, distributed

torch = pytest.importorskip("torch")


# ---------------------------------------------------------------------------- backends


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("nccl", "hccl"),
        ("NCCL", "hccl"),
        ("gloo", "gloo"),
        ("hccl", "hccl"),
        (None, None),
        ("cpu:gloo,cuda:nccl", "cpu:gloo,npu:hccl"),
        ("cuda:nccl", "npu:hccl"),
    ],
)
def test_map_backend(value, expected):
    assert distributed.map_backend(value) == expected


def test_map_device_id(emulated):
    assert distributed.map_device_id(torch.device("cuda", 1)) == torch.device("npu", 1)
    assert distributed.map_device_id(1) == torch.device("npu", 1)
    assert distributed.map_device_id(torch.device("cuda")) == torch.device("npu", 0)
    assert distributed.map_device_id(None) is None
    cpu = torch.device("cpu")
    assert distributed.map_device_id(cpu) is cpu


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
    done = distributed.patch_parallel_state(module)
    assert done == ["init_distributed_environment", "initialize_model_parallel"]
    assert parent.init_distributed_environment is module.init_distributed_environment
    module.init_distributed_environment(1, 0, "tcp://x", "nccl")
    parent.init_distributed_environment(backend="nccl")
    module.init_distributed_environment()  # the default stays as the function has it
    module.initialize_model_parallel(1, 1, "cuda:nccl")
    module.initialize_model_parallel(backend=None)
    assert calls == [
        ("init", "hccl"),
        ("init", "hccl"),
        ("init", "nccl"),
        ("mp", "npu:hccl"),
        ("mp", None),
    ]
    wrapper = module.init_distributed_environment
    assert distributed.patch_parallel_state(module) == done
    assert module.init_distributed_environment is wrapper  # idempotent


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
