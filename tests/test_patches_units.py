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


def test_patch_torch_also_wraps_a_wrapper_that_replaced_the_public_name(emulated, monkeypatch):
    """torch_npu's transfer_to_npu (the ``cuda`` patch, applied first) rebinds
    ``torch.distributed.init_process_group`` to its own ``functools.wraps`` wrapper and leaves
    ``distributed_c10d``'s alone; both names must reach our backend mapping."""
    import functools

    import torch.distributed as dist

    c10d = sys.modules["torch.distributed.distributed_c10d"]
    seen = []

    def init_process_group(backend=None, init_method=None, device_id=None, **kwargs):
        seen.append((backend, device_id))

    @functools.wraps(init_process_group)
    def transfer_wrapper(*args, **kwargs):
        return init_process_group(*args, **kwargs)

    def unrelated(*args, **kwargs):
        seen.append("unrelated")

    monkeypatch.setattr(c10d, "init_process_group", init_process_group)
    monkeypatch.setattr(dist, "init_process_group", transfer_wrapper)
    monkeypatch.setattr(c10d, "new_group", unrelated)
    monkeypatch.setattr(dist, "new_group", unrelated)
    assert distributed.patch_torch() == ["init_process_group", "new_group"]
    for fn in (dist.init_process_group, c10d.init_process_group):
        assert getattr(fn, distributed.MARK, False)
    assert dist.init_process_group.__wrapped__ is transfer_wrapper
    dist.init_process_group("nccl", device_id=1)
    c10d.init_process_group(backend="nccl")
    assert seen == [("hccl", torch.device("npu", 1)), ("hccl", None)]
    # A different function under the public name (not a wrapper of c10d's) is left alone.
    parent, module, _calls = fake_parallel_state()
    monkeypatch.setitem(sys.modules, parent.__name__, parent)
    parent.initialize_model_parallel = unrelated
    distributed.patch_parallel_state(module)
    assert parent.initialize_model_parallel is unrelated
    assert parent.init_distributed_environment is module.init_distributed_environment
    # Idempotent: nothing is wrapped twice.
    wrappers = (dist.init_process_group, c10d.init_process_group)
    distributed.patch_torch()
    assert (dist.init_process_group, c10d.init_process_group) == wrappers


# ---------------------------------------------------------------------------- the finder


def test_finder_ignores_unwatched_names():
    finder = _boot.StartupFinder()
    for name in ("json", "numpy", "torchvision", "torch.nn", "vllm", "sglang.srt"):
        assert finder.find_spec(name) is None
    assert finder.state == _boot.UNDECIDED


def test_finder_leaves_torch_memory_saver_to_the_sglang_redirect():
    """Once active, the start-up finder never answers ``torch_memory_saver`` itself:
    npu_platform.sglang.memory_saver's finder (installed on activation) is the one redirect."""
    finder = _boot.StartupFinder()
    finder.state = _boot.ACTIVE
    finder.selected = frozenset({"torch_memory_saver", "flash_attn"})
    for name in ("torch_memory_saver", "torch_memory_saver.hooks"):
        assert finder.find_spec(name) is None
    assert "torch_memory_saver" not in _boot.REDIRECTED
    assert finder.find_spec("flash_attn") is not None  # its own redirect still answers


def without_torch_npu(monkeypatch):
    """This process as if no torch_npu were loaded or on ``sys.path``.

    Other tests (the ``emulated`` fixture) load the emulated torch_npu into the pytest process
    and put its folder on ``sys.path``; both are restored after the test.
    """
    from npu_platform.emulation import boot

    for name in [m for m in sys.modules if m == "torch_npu" or m.startswith("torch_npu.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p != boot.SITE])
    monkeypatch.setattr(sys, "path_importer_cache", {})
    assert importlib.util.find_spec("torch_npu") is None
    return boot.SITE


def test_cheap_precheck(monkeypatch):
    site = without_torch_npu(monkeypatch)
    monkeypatch.setenv("NPU_PLATFORM_EMULATE", "1")
    assert _boot.StartupFinder()._maybe_npu() is True
    monkeypatch.setenv("NPU_PLATFORM_EMULATE", "bad")  # detect() will report it
    assert _boot.StartupFinder()._maybe_npu() is True
    monkeypatch.setenv("NPU_PLATFORM_EMULATE", "0")
    finder = _boot.StartupFinder()
    assert finder._maybe_npu() is False  # no torch_npu here
    assert finder.state == _boot.INACTIVE
    assert finder.find_spec("torch") is None and finder.find_spec("flash_attn") is None
    # A findable torch_npu (here the emulated one's folder on sys.path) means "ask detect".
    monkeypatch.setattr(sys, "path", [site, *sys.path])
    assert _boot.StartupFinder()._maybe_npu() is True


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
