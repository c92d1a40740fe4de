"""Failure paths of the start-up patches (``patches/_boot.py``, ``_activate.py``,
``distributed.py``), in-process: each must keep the interpreter going and say what failed."""

from __future__ import annotations

import importlib
import importlib.machinery
import logging
import sys
import threading
import time
import types

import pytest
from npu_platform.patches import _activate, _boot, distributed

# ---------------------------------------------------------------------------- _boot


def test_post_import_loader_forwards_other_attributes(tmp_path, monkeypatch):
    (tmp_path / "forward_probe.py").write_text("VALUE = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    spec = _boot.StartupFinder()._wrapped_spec("forward_probe", None, None)
    assert type(spec.loader).__name__ == "_PostImportLoader"
    assert spec.loader.is_package("forward_probe") is False  # SourceFileLoader's answer
    assert spec.loader.get_filename("forward_probe") == str(tmp_path / "forward_probe.py")
    with pytest.raises(AttributeError):
        spec.loader.no_such_method  # noqa: B018


class _SpecOnly:
    """A meta path finder answering one name with a loader that cannot exec_module."""

    def __init__(self, name):
        self.name = name

    def find_spec(self, fullname, path=None, target=None):
        if fullname != self.name:
            return None
        return importlib.machinery.ModuleSpec(fullname, loader=object())


def test_finders_without_find_spec_are_skipped_and_legacy_loaders_left_alone(monkeypatch):
    monkeypatch.setattr(sys, "meta_path", [object(), _SpecOnly("legacy_probe"), *sys.meta_path])
    finder = _boot.StartupFinder()
    assert finder._others_find("json").name == "json"
    spec = finder._wrapped_spec("legacy_probe", None, None)
    assert type(spec.loader) is object  # not wrapped: it has no exec_module to call back from
    assert finder._wrapped_spec("no_such_module_anywhere", None, None) is None
    assert finder.invalidate_caches() is None
    importlib.invalidate_caches()  # with our finder asked too


def test_decide_returns_what_another_thread_decided():
    finder = _boot.StartupFinder()
    out = {}
    with finder._lock:
        thread = threading.Thread(target=lambda: out.setdefault("state", finder.decide()))
        thread.start()
        time.sleep(0.2)  # the thread saw UNDECIDED and waits for the lock
        finder.state = _boot.INACTIVE
    thread.join()
    assert out["state"] == _boot.INACTIVE


def test_install_never_raises(monkeypatch, capsys):
    monkeypatch.delenv("NPU_PLATFORM_PATCHES", raising=False)
    monkeypatch.setattr(_boot, "_finder", None)
    monkeypatch.setattr(sys, "meta_path", tuple(sys.meta_path))  # no insert()
    assert _boot.install() is None
    err = capsys.readouterr().err
    assert err.startswith("npu_platform: start-up hook not installed: AttributeError(")
    assert "insert" in err


# ---------------------------------------------------------------------------- _activate


def test_decide_with_patches_off(monkeypatch):
    monkeypatch.setenv("NPU_PLATFORM_PATCHES", "0")
    assert _activate.decide() == frozenset()


class _Finder:
    def __init__(self, *selected):
        self.selected = frozenset(selected)


class _Exploding:
    """Callable whose ``__wrapped__`` lookup fails: wrapping it raises RuntimeError."""

    def __call__(self):
        return None

    @property
    def __wrapped__(self):
        raise RuntimeError("boom while unwrapping")


def test_failed_module_patch_is_logged_once(monkeypatch, caplog):
    monkeypatch.setattr(_activate, "_patched_modules", set())
    module = types.ModuleType("edge_probe.parallel_state")
    module.init_distributed_environment = _Exploding()
    with caplog.at_level(logging.WARNING, logger="npu_platform.patches"):
        _activate.module_loaded(_Finder("distributed"), module)
        _activate.module_loaded(_Finder("distributed"), module)  # already handled
    failures = [
        r for r in caplog.records if "patching edge_probe.parallel_state failed" in r.message
    ]
    assert len(failures) == 1
    assert "boom while unwrapping" in str(failures[0].exc_info[1])


def test_failed_cuda_patch_is_logged(monkeypatch, caplog):
    from npu_platform.patches import cuda

    def fail():
        raise RuntimeError("no torch_npu transfer")

    monkeypatch.setattr(cuda, "apply", fail)
    with caplog.at_level(logging.WARNING, logger="npu_platform.patches"):
        _activate._patch_torch(_Finder("cuda"), types.ModuleType("torch"))
    (record,) = [r for r in caplog.records if "patch cuda failed" in r.message]
    assert str(record.exc_info[1]) == "no torch_npu transfer"


def test_failed_memory_saver_redirect_is_a_warning(monkeypatch, caplog):
    from npu_platform.sglang import memory_saver

    def fail():
        raise ImportError("sglang integration broken")

    monkeypatch.setattr(memory_saver, "install", fail)
    with caplog.at_level(logging.WARNING, logger="npu_platform.patches"):
        assert _activate._install_memory_saver(_Finder("torch_memory_saver")) is False
    assert any(
        "torch_memory_saver redirect failed: ImportError('sglang integration broken')" in r.message
        for r in caplog.records
    )
    assert _activate._install_memory_saver(_Finder("cuda")) is False  # not selected


# ---------------------------------------------------------------------------- distributed


def test_wrap_a_function_without_signature_passes_arguments_through():
    wrapped = distributed._wrap(max, {"backend": distributed.map_backend})
    assert wrapped(3, 9, 4) == 9
    assert getattr(wrapped, distributed.MARK) is True


def test_root_of_a_wrapped_cycle_is_the_function_itself():
    def f():
        return None

    f.__wrapped__ = f
    assert distributed._root(f) is f


def test_patch_function_without_the_function():
    module = types.ModuleType("edge_probe_empty")
    module.initialize_model_parallel = 42  # not callable
    assert distributed._patch_function([module], "missing", {}) is False
    assert distributed._patch_function([module], "initialize_model_parallel", {}) is False
    assert distributed.patch_parallel_state(module) == []


def test_patch_torch_without_distributed(monkeypatch):
    torch = pytest.importorskip("torch")
    monkeypatch.setattr(torch.distributed, "is_available", lambda: False)
    assert distributed.patch_torch() == []
