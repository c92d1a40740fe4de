"""The emulated torch_npu package and how it loads (``NPU_PLATFORM_EMULATE=1``).

Loading the emulated torch_npu renames torch's PrivateUse1 backend and registers
``torch.npu`` for the life of a process, so every check here runs in a fresh Python
subprocess; this pytest process imports neither torch_npu nor the device. The start-up hook
(:mod:`npu_platform.emulation.boot`) is tested in-process: it touches only ``sys.path``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from npu_platform.emulation import boot

pytestmark = pytest.mark.slow

SITE = Path(boot.SITE)


def _environment(emulate: bool, extra: dict[str, str] | None) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("NPU_PLATFORM_EMULATE")
        and k not in ("ASCEND_RT_VISIBLE_DEVICES", "TORCH_DEVICE_BACKEND_AUTOLOAD")
    }
    if emulate:
        env["NPU_PLATFORM_EMULATE"] = "1"
    env.update(extra or {})
    return env


def run(
    code: str, *, emulate: bool = True, env: dict[str, str] | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=_environment(emulate, env),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if check:
        assert proc.returncode == 0, f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    return proc


# Helpers available to the subprocess snippets below.
HELPERS = """
import torch

def raises(kind, call, *needles):
    try:
        call()
    except kind as exc:
        for needle in needles:
            assert needle in str(exc), (needle, str(exc))
        return str(exc)
    raise AssertionError(f"{call} did not raise {kind.__name__}")
"""


def run_checks(code: str, prelude: str = "", **kwargs) -> str:
    script = HELPERS + prelude + textwrap.dedent(code) + "\nprint('CHECKS-DONE')\n"
    return run(script, **kwargs).stdout


# ------------------------------------------------------------------------------ loading


def test_import_torch_gives_the_npu_device():
    code = (
        "import torch; x = torch.ones(2, device='npu:0'); "
        "print(x.device, x.is_npu, torch.npu.device_count())"
    )
    assert run(code).stdout.strip() == "npu:0 True 1"


def test_without_the_variable_there_is_no_npu():
    out = run(
        """
        import sys
        import torch
        print(hasattr(torch, "npu"))
        print(any(p.endswith("site") and "emulation" in p for p in sys.path))
        prefixes = ("torch_npu", "npu_platform.emulation.")
        print(sorted(m for m in sys.modules if m.startswith(prefixes)))
        try:
            import torch_npu
        except ModuleNotFoundError as exc:
            print("ModuleNotFoundError", exc.name)
        """,
        emulate=False,
    ).stdout.split("\n")
    assert out[0] == "False"
    assert out[1] == "False"
    # the autoload entry point looked at the variable and imported nothing else
    assert out[2] == "['npu_platform.emulation.autoload', 'npu_platform.emulation.boot']"
    assert out[3] == "ModuleNotFoundError torch_npu"


def test_import_torch_npu_first_as_on_ascend():
    out = run_checks(
        """
        import os
        import torch_npu
        import torch
        assert torch.npu is torch_npu.npu
        assert torch_npu.__version__ == "2.13.0"
        assert torch_npu.__file__.startswith(%r), torch_npu.__file__
        # torch_npu switches torch's backend autoload off while it imports torch, then back
        assert os.environ.get("TORCH_DEVICE_BACKEND_AUTOLOAD") == "1"
        assert torch.ones(1).npu().device == torch.device("npu", 0)
        """.replace("%r", repr(str(SITE)))
    )
    assert out.strip().endswith("CHECKS-DONE"), (
        "`import torch_npu` before torch needs the start-up line "
        "`import npu_platform.emulation.boot as _npe; _npe.install()` in the project's .pth"
    )


def test_spawned_child_has_the_npu(tmp_path):
    script = tmp_path / "child.py"
    script.write_text(
        textwrap.dedent(
            """
            import multiprocessing as mp
            import torch

            def child(q):
                x = torch.arange(3, device="npu")
                q.put((torch.npu.device_count(), str(x.device), (x * 2).tolist()))
                # an npu tensor itself (a strided view, on device 1) through the queue
                q.put(torch.arange(6.0, device="npu:1").view(2, 3)[:, 1:])

            if __name__ == "__main__":
                torch.ones(1, device="npu")  # the parent uses the NPU first
                ctx = mp.get_context("spawn")
                q = ctx.Queue()
                p = ctx.Process(target=child, args=(q,))
                p.start()
                print(q.get(timeout=240))
                p.join()  # the sender is gone before its tensor is read: a copy travelled
                print(p.exitcode)
                t = q.get(timeout=60)
                print(t.device, t.tolist())
            """
        )
    )
    proc = subprocess.run(
        [sys.executable, str(script)],
        env=_environment(True, {"NPU_PLATFORM_EMULATE_DEVICES": "2"}),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split("\n")[:3] == [
        "(2, 'npu:0', [0, 2, 4])",
        "0",
        "npu:1 [[1.0, 2.0], [4.0, 5.0]]",
    ]


def test_forked_child_cannot_reinitialize(tmp_path):
    script = tmp_path / "fork.py"
    script.write_text(
        textwrap.dedent(
            """
            import multiprocessing as mp
            import torch

            def child(q):
                try:
                    torch.npu.current_device()
                    q.put("no error")
                except RuntimeError as exc:
                    q.put(str(exc))

            if __name__ == "__main__":
                torch.ones(1, device="npu")
                q = mp.get_context("fork").Queue()
                p = mp.get_context("fork").Process(target=child, args=(q,))
                p.start()
                print(q.get(timeout=120))
                p.join()
            """
        )
    )
    proc = subprocess.run(
        [sys.executable, str(script)],
        env=_environment(True, None),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "Cannot re-initialize NPU in forked subprocess" in proc.stdout


def test_configuration_variables():
    out = run_checks(
        """
        assert torch.npu.device_count() == 3
        free, total = torch.npu.mem_get_info(2)
        assert total == 8 << 20 and free == total
        assert torch.npu.get_device_properties(1).total_memory == 8 << 20
        x = torch.empty(6 << 20, dtype=torch.uint8, device="npu:2")
        assert torch.npu.mem_get_info(2) == ((2 << 20), 8 << 20)
        too_much = lambda: torch.empty(3 << 20, dtype=torch.uint8, device="npu:2")  # noqa: E731
        raises(torch.OutOfMemoryError, too_much)
        """,
        env={"NPU_PLATFORM_EMULATE_DEVICES": "3", "NPU_PLATFORM_EMULATE_DEVICE_MEMORY": "8388608"},
    )
    assert "CHECKS-DONE" in out
    for name, value in (
        ("NPU_PLATFORM_EMULATE_DEVICE_MEMORY", "4GB"),
        ("NPU_PLATFORM_EMULATE_DEVICES", "0"),
    ):
        proc = run("import torch", env={name: value}, check=False)
        assert proc.returncode != 0
        assert name in proc.stderr and "is not valid" in proc.stderr


def test_visible_devices_follow_ascend_rt_visible_devices():
    out = run_checks(
        """
        assert torch.npu.device_count() == 2
        uuids = {str(torch.npu.get_device_properties(i).uuid) for i in range(2)}
        assert len(uuids) == 2
        print(sorted(uuids))
        """,
        env={"NPU_PLATFORM_EMULATE_DEVICES": "4", "ASCEND_RT_VISIBLE_DEVICES": "1,3"},
    )
    # the same physical device has the same uuid whatever the process sees
    single = run_checks(
        "print([str(torch.npu.get_device_properties(0).uuid)])",
        env={"NPU_PLATFORM_EMULATE_DEVICES": "4", "ASCEND_RT_VISIBLE_DEVICES": "3"},
    )
    three = eval(single.split("\n")[0])[0]  # noqa: S307 (our own subprocess's output)
    assert three in eval(out.split("\n")[0])  # noqa: S307
    hidden = run_checks(
        """
        assert torch.npu.device_count() == 0 and not torch.npu.is_available()
        raises(RuntimeError, lambda: torch.ones(1, device="npu"), "no device visible")
        """,
        env={"ASCEND_RT_VISIBLE_DEVICES": ""},
    )
    assert "CHECKS-DONE" in hidden


# ------------------------------------------------------------------------------ devices


def test_devices_are_per_thread_and_bad_indices_raise():
    out = run_checks(
        """
        import threading
        assert torch.npu.is_available() and torch.npu.device_count() == 2
        assert not torch.npu.is_initialized()
        assert torch.npu.current_device() == 0 and torch.npu.is_initialized()
        seen = {}
        def worker():
            torch.npu.set_device(1)
            seen["device"] = torch.npu.current_device()
            seen["tensor"] = torch.empty(1, device="npu").device
        t = threading.Thread(target=worker); t.start(); t.join()
        assert seen == {"device": 1, "tensor": torch.device("npu", 1)}
        assert torch.npu.current_device() == 0  # this thread kept its device
        torch.npu.set_device("npu:1"); assert torch.npu.current_device() == 1
        torch.npu.set_device(-1); assert torch.npu.current_device() == 1  # no-op
        torch.npu.set_device(torch.device("npu", 0)); assert torch.npu.current_device() == 0
        with torch.npu.device(1):
            assert torch.npu.current_device() == 1
            assert torch.empty(1, device="npu").device.index == 1
        assert torch.npu.current_device() == 0
        y = torch.ones(1, device="npu:1")
        with torch.npu.device_of(y):
            assert torch.npu.current_device() == 1
        with torch.npu.device_of(torch.ones(1)):
            assert torch.npu.current_device() == 0
        raises(RuntimeError, lambda: torch.npu.set_device(2), "invalid npu device index 2")
        raises(RuntimeError, lambda: torch.npu.device(5).__enter__(), "5")
        raises(ValueError, lambda: torch.npu.set_device("cpu"), "Expected a npu device")
        raises(AssertionError, lambda: torch.npu.get_device_name(2), "Invalid device id")
        raises(AssertionError, lambda: torch.npu.mem_get_info(7), "Invalid device id")
        raises(AssertionError, lambda: torch.npu.get_device_properties(-3), "Invalid device id")
        assert torch.npu.current_device() == 0
        props = torch.npu.get_device_properties(0)
        assert props.name == torch.npu.get_device_name(0)
        assert props.total_memory == torch.npu.mem_get_info(0)[1]
        assert props.multi_processor_count > 0 and props.vector_core_num >= props.cube_core_num
        assert torch.npu.can_device_access_peer(0, 1)
        torch.npu.synchronize(); torch.npu.synchronize(1)
        raises(RuntimeError, lambda: torch.npu.synchronize(4))
        assert torch.npu.is_bf16_supported()
        assert isinstance(torch.npu.get_soc_version(), int)
        """,
        env={"NPU_PLATFORM_EMULATE_DEVICES": "2"},
    )
    assert "CHECKS-DONE" in out


def test_get_device_capability_follows_the_variable():
    out = run_checks(
        """
        import os, warnings
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            assert torch.npu.get_device_capability() is None
            os.environ["TORCH_NPU_DEVICE_CAPABILITY"] = "8.0"
            assert torch.npu.get_device_capability(0) == (8, 0)
            os.environ["TORCH_NPU_DEVICE_CAPABILITY"] = "eight"
            assert torch.npu.get_device_capability() is None
        assert len(caught) == 3
        """
    )
    assert "CHECKS-DONE" in out


# ------------------------------------------------------------------------------ streams


def test_streams_and_events():
    out = run_checks(
        """
        import time
        main = torch.npu.current_stream()
        assert main == torch.npu.default_stream() and main.stream_id == 0
        s = torch.npu.Stream()
        assert isinstance(s, torch.Stream) and s != main and s.device == torch.device("npu", 0)
        ctx = torch.npu.stream(s)
        for _ in range(2):  # a StreamContext can be entered again
            with ctx:
                assert torch.npu.current_stream() == s
                with torch.npu.stream(None):  # None: no-op
                    assert torch.npu.current_stream() == s
            assert torch.npu.current_stream() == main
        torch.npu.set_stream(s); assert torch.npu.current_stream() == s
        torch.npu.set_stream(None); assert torch.npu.current_stream() == s
        torch.npu.set_stream(main)
        # a stream of another device makes that device current inside the context
        s1 = torch.npu.Stream(device=1)
        assert s1.device == torch.device("npu", 1)
        with torch.npu.stream(s1):
            assert torch.npu.current_device() == 1 and torch.npu.current_stream() == s1
        assert torch.npu.current_device() == 0 and torch.npu.current_stream(1).stream_id == 0
        # events
        start = torch.npu.Event(enable_timing=True)
        end = torch.npu.Event(enable_timing=True)
        assert "uninitialized" in repr(start)
        start.record()
        time.sleep(0.05)
        x = torch.ones(4, device="npu") * 3
        end.record(s)
        assert start.query() and end.query()
        end.synchronize()
        assert start.elapsed_time(end) >= 45
        untimed = torch.npu.Event()
        untimed.record()
        raises(RuntimeError, lambda: untimed.elapsed_time(end), "enable_timing=True")
        fresh = torch.npu.Event(enable_timing=True)
        raises(RuntimeError, lambda: fresh.elapsed_time(end), "recorded")
        ev = s.record_event()
        assert isinstance(ev, torch.npu.Event) and ev.query()
        main.wait_event(ev)
        main.wait_stream(s)
        s.wait_stream(main)
        assert s.query() and main.query()
        s.synchronize()
        e2 = torch.npu.Event(); e2.record(); e2.wait(); e2.wait(s)
        same = torch.npu.Stream(stream_id=s.stream_id, device_index=0, device_type=s.device_type)
        assert same == s and {s: 1}[same] == 1
        assert x.sum().item() == 12
        """,
        env={"NPU_PLATFORM_EMULATE_DEVICES": "2"},
    )
    assert "CHECKS-DONE" in out


# ------------------------------------------------------------------------------- memory


def test_memory_statistics():
    out = run_checks(
        """
        assert torch.npu.memory_stats() == {}  # before the NPU is initialised
        assert torch.npu.memory_allocated() == 0
        base = torch.ones(1, device="npu")
        before = torch.npu.memory_allocated()
        x = torch.empty(2 << 20, dtype=torch.uint8, device="npu")
        assert torch.npu.memory_allocated() == before + (2 << 20)
        assert torch.npu.memory_reserved() == torch.npu.memory_allocated()
        free, total = torch.npu.mem_get_info()
        assert total - free == torch.npu.memory_allocated()
        peak = torch.npu.max_memory_allocated()
        assert peak >= before + (2 << 20)
        del x
        assert torch.npu.memory_allocated() == before
        assert torch.npu.max_memory_allocated() == peak
        stats = torch.npu.memory_stats()
        assert stats["allocated_bytes.all.freed"] >= 2 << 20
        assert stats["allocation.all.current"] == 1
        assert stats["allocated_bytes.large_pool.allocated"] >= 2 << 20
        torch.npu.reset_peak_memory_stats()
        assert torch.npu.max_memory_allocated() == before
        assert torch.npu.max_memory_reserved() == before
        torch.npu.reset_accumulated_memory_stats()
        assert torch.npu.memory_stats()["allocated_bytes.all.freed"] == 0
        nested = torch.npu.memory_stats_as_nested_dict(0)
        assert nested["allocated_bytes"]["all"]["current"] == before
        summary = torch.npu.memory_summary()
        assert "Allocated memory" in summary and "device ID 0" in summary
        torch.npu.empty_cache()
        assert torch.npu.memory_allocated() == before
        assert torch.npu.get_allocator_backend() == "native"
        import warnings
        with warnings.catch_warnings(record=True):
            warnings.simplefilter("always")
            torch.npu.reset_max_memory_allocated()
        """
    )
    assert "CHECKS-DONE" in out


ALLOCATOR_C = r"""
#include <stddef.h>
#include <stdlib.h>
static long allocs, frees, live;
void *counting_alloc(size_t size, int device, void *stream) {
    (void)device; (void)stream;
    allocs++; live += (long)size;
    return malloc(size);
}
void counting_free(void *ptr, size_t size, int device, void *stream) {
    (void)device; (void)stream;
    frees++; live -= (long)size;
    free(ptr);
}
long alloc_count(void) { return allocs; }
long free_count(void) { return frees; }
long live_bytes(void) { return live; }
"""


@pytest.fixture(scope="module")
def allocator_so(tmp_path_factory) -> Path:
    compiler = shutil.which("gcc") or shutil.which("cc")
    if compiler is None:
        pytest.fail("a C compiler (gcc or cc) is needed to build the test allocator")
    folder = tmp_path_factory.mktemp("allocator")
    source = folder / "counting.c"
    source.write_text(ALLOCATOR_C)
    library = folder / "libcounting.so"
    subprocess.run(
        [compiler, "-shared", "-fPIC", "-O1", "-o", str(library), str(source)], check=True
    )
    return library


COUNTS = """
import ctypes, threading
lib = ctypes.CDLL(SO)
for name in ("alloc_count", "free_count", "live_bytes"):
    getattr(lib, name).restype = ctypes.c_long
def counts():
    return lib.alloc_count(), lib.free_count(), lib.live_bytes()
"""


def test_mem_pool_over_a_pluggable_allocator(allocator_so):
    out = run_checks(
        prelude=f"SO = {str(allocator_so)!r}\n" + COUNTS,
        code="""
        from torch.npu.memory import NPUPluggableAllocator
        allocator = NPUPluggableAllocator(SO, "counting_alloc", "counting_free")
        pool = torch.npu.MemPool(allocator.allocator())
        assert pool.allocator is allocator.allocator()
        assert isinstance(pool.id, tuple) and len(pool.id) == 2
        assert pool.id != torch.npu.MemPool().id
        assert pool.use_count() == 1 and counts() == (0, 0, 0)
        with torch.npu.use_mem_pool(pool):
            assert pool.use_count() == 2
            inside = torch.empty(1000, dtype=torch.uint8, device="npu")
            other = {}
            elsewhere = lambda: other.setdefault("t", torch.empty(64, device="npu"))  # noqa: E731
            t = threading.Thread(target=elsewhere)
            t.start(); t.join()
        assert pool.use_count() == 1
        assert counts() == (1, 0, 1000)  # only this thread's allocation went to the pool
        outside = torch.empty(500, dtype=torch.uint8, device="npu")
        assert counts() == (1, 0, 1000)
        inside.fill_(7)
        assert int(inside.sum()) == 7000  # pool memory is ordinary npu memory
        del inside  # freed outside the context: still returns to the allocator that made it
        assert counts() == (1, 1, 0)
        with torch.npu.use_mem_pool(pool, device=1):  # pools are per device
            on0 = torch.empty(10, device="npu:0")
            on1 = torch.empty(10, device="npu:1")
        assert counts() == (2, 1, 40)
        del on1
        assert counts() == (2, 2, 0)
        raises(RuntimeError, lambda: torch.npu.memory.change_current_allocator(allocator),
               "already initialized")
        raises(TypeError, lambda: torch.npu.MemPool(allocator))
        # a graph captured into a MemPool allocates from it
        graph_pool = torch.npu.MemPool(allocator.allocator())
        src = torch.ones(16, device="npu")
        g = torch.npu.NPUGraph()
        allocated = counts()[0]
        with torch.npu.graph(g, pool=graph_pool.id):
            doubled = src * 2
        assert counts()[0] == allocated + 1 and g.pool() == graph_pool.id
        after = torch.empty(8, device="npu")
        assert counts()[0] == allocated + 1
        src.fill_(4); g.replay()
        assert doubled.tolist() == [8.0] * 16
        """,
        env={"NPU_PLATFORM_EMULATE_DEVICES": "2"},
    )
    assert "CHECKS-DONE" in out


def test_change_current_allocator_before_initialisation(allocator_so):
    out = run_checks(
        prelude=f"SO = {str(allocator_so)!r}\n" + COUNTS,
        code="""
        from torch.npu.memory import NPUPluggableAllocator, change_current_allocator
        allocator = NPUPluggableAllocator(SO, "counting_alloc", "counting_free")
        change_current_allocator(allocator)
        x = torch.ones(100, dtype=torch.uint8, device="npu")
        allocated, freed, live = counts()
        assert allocated >= 1 and live >= 100
        pool = torch.npu.MemPool()  # no allocator: the current one
        with torch.npu.use_mem_pool(pool):
            y = torch.empty(256, dtype=torch.uint8, device="npu")
        assert counts()[0] == allocated + 1
        raises(AttributeError, lambda: NPUPluggableAllocator(SO, "no_such_fn", "counting_free"))
        """,
    )
    assert "CHECKS-DONE" in out


# ------------------------------------------------------------------------------- graphs


def test_graph_capture_and_replay():
    out = run_checks(
        """
        import torch_npu
        static_in = torch.zeros(4, device="npu")
        weight = torch.full((4,), 2.0, device="npu")
        host = torch.zeros(4)
        g = torch.npu.NPUGraph()
        raises(RuntimeError, g.replay, "without a preceding successful capture")
        raises(RuntimeError, g.capture_begin, "non-default stream")
        with torch.npu.graph(g):
            assert torch.npu.is_current_stream_capturing()
            assert torch.npu.current_stream() != torch.npu.default_stream()
            staged = torch.empty(4, device="npu")
            staged.copy_(host)  # a host-to-device copy reads the host tensor on replay
            out = static_in * weight + staged
            normed = torch_npu.npu_rms_norm(out.view(1, 4) + 1, weight)[0]
            static_in.add_(1)  # in-place: replay adds again
        assert not torch.npu.is_current_stream_capturing()
        assert out.tolist() == [0.0] * 4 and static_in.tolist() == [1.0] * 4
        static_in.copy_(torch.tensor([1.0, 2.0, 3.0, 4.0]))
        host.fill_(10)
        g.replay()
        assert out.tolist() == [12.0, 14.0, 16.0, 18.0], out
        assert static_in.tolist() == [2.0, 3.0, 4.0, 5.0]
        expected = torch_npu.npu_rms_norm(out.view(1, 4) + 1, weight)[0]
        assert torch.allclose(normed, expected)
        g.replay()
        assert out.tolist() == [14.0, 16.0, 18.0, 20.0]
        raises(RuntimeError, lambda: g.capture_begin(), "already owns a captured graph")
        # graphs share a pool by token; a new capture after reset() is a new graph
        g2 = torch.npu.NPUGraph()
        side = torch.npu.Stream()
        with torch.npu.graph(g2, pool=g.pool(), stream=side):
            assert torch.npu.current_stream() == side
            doubled = out * 2
        assert g2.pool() == g.pool() and g.pool() != torch.npu.graph_pool_handle()
        g2.replay(); assert doubled.tolist() == [28.0, 32.0, 36.0, 40.0]
        g2.reset()
        with torch.npu.graph(g2):
            tripled = out * 3
        g2.replay(); assert tripled.tolist() == [42.0, 48.0, 54.0, 60.0]
        # random ops draw again on replay
        g3 = torch.npu.NPUGraph()
        with torch.npu.graph(g3):
            noise = torch.randn(8, device="npu")
        first = noise.clone(); g3.replay()
        assert not torch.equal(first, noise)
        bad_mode = torch.npu.graph(torch.npu.NPUGraph(), capture_error_mode="x")
        raises(RuntimeError, bad_mode.__enter__, "capture error mode")
        assert torch.npu.current_stream() == torch.npu.default_stream()
        """
    )
    assert "CHECKS-DONE" in out


def test_graph_update_of_attention_arguments():
    out = run_checks(
        """
        import torch_npu

        def paged_attention(query, lens_scale, context_lens=None, out=None):
            # stands in for an ATB op: the output depends on a host-side list argument
            out.copy_(query * sum(context_lens) * lens_scale)

        torch_npu._register_op("_npu_paged_attention", paged_attention)
        q = torch.ones(3, device="npu")
        result = torch.zeros(3, device="npu")
        g = torch.npu.NPUGraph()
        with torch.npu.graph(g, auto_dispatch_capture=True):
            torch_npu._npu_paged_attention(q, 2.0, context_lens=[1, 1], out=result)
        assert result.tolist() == [4.0] * 3
        g.update(cpu_update_input=[{"context_lens": [5, 5]}])
        assert result.tolist() == [4.0] * 3  # takes effect on replay
        g.replay()
        assert result.tolist() == [20.0] * 3
        two = [{"context_lens": [1]}, {"context_lens": [2]}]
        raises(RuntimeError, lambda: g.update(two), "there are only 2")
        plain = torch.npu.NPUGraph()
        with torch.npu.graph(plain):
            torch_npu._npu_paged_attention(q, 1.0, context_lens=[1], out=result)
        one = [{"context_lens": [2]}]
        raises(RuntimeError, lambda: plain.update(one), "auto_dispatch_capture=True")
        """
    )
    assert "CHECKS-DONE" in out


# ---------------------------------------------------------------------- random, options


def test_rng_seeding_is_reproducible():
    out = run_checks(
        """
        torch.npu.manual_seed(1234)  # before initialisation: applied when the NPU starts
        assert not torch.npu.is_initialized()
        a = torch.randn(16, device="npu")
        assert torch.npu.initial_seed() == 1234
        torch.npu.manual_seed_all(1234)
        b = torch.randn(16, device="npu")
        assert torch.equal(a, b)
        state = torch.npu.get_rng_state()
        c = torch.rand(16, device="npu")
        torch.npu.set_rng_state(state)
        assert torch.equal(torch.rand(16, device="npu"), c)
        states = torch.npu.get_rng_state_all()
        assert len(states) == torch.npu.device_count() == 2
        d = torch.rand(4, device="npu:1")
        torch.npu.set_rng_state_all(states)
        assert torch.equal(torch.rand(4, device="npu:1"), d)
        torch.npu.seed_all()
        assert torch.npu.initial_seed() != 1234
        torch.manual_seed(99)  # torch's own seeding reaches the NPU too
        e = torch.randn(4, device="npu")
        torch.manual_seed(99)
        assert torch.equal(torch.randn(4, device="npu"), e)
        """,
        env={"NPU_PLATFORM_EMULATE_DEVICES": "2"},
    )
    assert "CHECKS-DONE" in out


def test_options_and_config():
    out = run_checks(
        """
        import torch_npu
        torch_npu.npu.config.allow_internal_format = True
        torch.npu.set_compile_mode(jit_compile=False)
        assert torch.npu.is_jit_compile_false()
        torch.npu.set_compile_mode(jit_compile=True)
        assert not torch.npu.is_jit_compile_false()
        torch.npu.set_option({"ACL_OP_COMPILER_CACHE_MODE": "enable"})
        bad = {"ACL_PRECISION_MODE": "fastest"}
        raises(ValueError, lambda: torch.npu.set_option(bad), "ACL_PRECISION_MODE")
        raises(TypeError, lambda: torch.npu.set_option(["x"]))
        torch.npu.matmul.allow_hf32 = True
        assert torch.npu.matmul.allow_hf32 is True
        raises(TypeError, lambda: setattr(torch.npu.matmul, "allow_hf32", 1))
        s = torch.npu.Stream()
        torch.npu.set_stream_limit(s, 8, 16)
        assert torch.npu.get_stream_limit(s) == {"cube_core_num": 8, "vector_core_num": 16}
        torch.npu.reset_stream_limit(s)
        assert torch.npu.get_stream_limit(s)["cube_core_num"] > 8
        raises(AssertionError, lambda: torch.npu.set_stream_limit(None), "cannot be None")
        torch.npu.set_sync_debug_mode("warn"); assert torch.npu.get_sync_debug_mode() == 1
        raises(RuntimeError, lambda: torch.npu.set_sync_debug_mode("loud"), "debug_mode")
        """
    )
    assert "CHECKS-DONE" in out


def test_ops_are_forwarded_to_the_references():
    out = run_checks(
        """
        import torch_npu
        x = torch.randn(2, 8)
        w = torch.randn(8)
        y, rstd = torch_npu.npu_rms_norm(x.npu(), w.npu(), epsilon=1e-6)
        expected = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * w
        assert y.device.type == "npu" and torch.allclose(y.cpu(), expected, atol=1e-5)
        raises(AttributeError, lambda: torch_npu.npu_no_such_op, "npu_no_such_op")
        from npu_platform.spec.contract import ContractError
        raises(ContractError, lambda: torch_npu.npu_rms_norm(x, w, eps=1e-6), "eps")
        assert torch_npu.npu_rms_norm is torch_npu.npu_rms_norm
        # ATB ops are top-level functions too, checked against ATB's header
        assert torch_npu._npu_paged_attention.schema().name == "_npu_paged_attention"
        """
    )
    assert "CHECKS-DONE" in out


def test_apply_patches_sets_torch_attributes():
    out = run_checks(
        """
        import types, torch_npu
        marker = object()
        extra = types.ModuleType("extra"); extra.thing = 5
        patches = [["npu_platform_test.value", marker], ["npu_platform_test", extra]]
        torch_npu._apply_patches(patches)
        assert torch.npu_platform_test.value is marker and torch.npu_platform_test.thing == 5
        """
    )
    assert "CHECKS-DONE" in out


# ------------------------------------------------------------------ the start-up hook


def test_boot_reads_the_variable_like_env(monkeypatch):
    for value, expected in (("1", True), (" yes", True), ("ON", True), ("0", False), ("", False)):
        assert boot.enabled({"NPU_PLATFORM_EMULATE": value}) is expected
    assert boot.enabled({}) is False
    with pytest.raises(ValueError, match="NPU_PLATFORM_EMULATE"):
        boot.enabled({"NPU_PLATFORM_EMULATE": "maybe"})

    monkeypatch.setattr(sys, "path", [p for p in sys.path if p != boot.SITE])
    monkeypatch.setenv("NPU_PLATFORM_EMULATE", "maybe")
    assert boot.install() is False  # a bad value leaves the emulation off, without raising
    assert boot.SITE not in sys.path
    monkeypatch.setenv("NPU_PLATFORM_EMULATE", "0")
    assert boot.install() is False and boot.SITE not in sys.path
    assert boot.install(force=True) is True
    sys.path.append(boot.SITE)  # a second copy further back is removed
    monkeypatch.setenv("NPU_PLATFORM_EMULATE", "1")
    assert boot.install() is True
    assert sys.path[0] == boot.SITE and sys.path.count(boot.SITE) == 1
    assert (Path(boot.SITE) / "torch_npu" / "__init__.py").is_file()
