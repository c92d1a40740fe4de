"""The native emulated ``npu`` device: :mod:`npu_platform.emulation.native` and its C++.

Renaming torch's PrivateUse1 backend is process-wide and irreversible, so every device check
runs in a fresh Python subprocess (one per group, ``NPU_PLATFORM_EMULATE`` unset) that
installs two devices of 64 MiB and asserts; this process only builds (and caches) the
library. The build tests use a stand-in compiler, so they never compile C++.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest

from npu_platform.emulation import native

REPO = Path(__file__).resolve().parent.parent

# What the emulated torch_npu does in production, reduced to the test's needs: install the
# device and register a torch.npu module (torch imports it before device="npu" factories and
# torch.accelerator calls).
PRELUDE = """
import gc, sys, threading, time, types
import torch
from npu_platform.emulation import native

npu = native.install_device(2, 64 << 20)
_module = types.ModuleType("torch.npu")
_module.current_device = npu.current_device
_module.device_count = npu.device_count
_module.set_device = npu.set_device
_module.is_available = lambda: True
torch._register_device_module("npu", _module)
MIB = 1 << 20


def raises(kind, call, *needles):
    try:
        call()
    except kind as exc:
        for needle in needles:
            assert needle in str(exc), (needle, str(exc))
        return str(exc)
    raise AssertionError(f"{call} did not raise {kind.__name__}")
"""


@pytest.fixture(scope="module")
def built() -> Path:
    """The compiled device library (compiled here once, then taken from the cache)."""
    return native.build()


def run_device_script(body: str, *args: str) -> str:
    env = {k: v for k, v in os.environ.items() if k != "NPU_PLATFORM_EMULATE"}
    script = PRELUDE + textwrap.dedent(body) + "\nprint('DEVICE-CHECKS-PASSED')\n"
    proc = subprocess.run(
        [sys.executable, "-c", script, *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert proc.returncode == 0 and "DEVICE-CHECKS-PASSED" in proc.stdout, (
        f"exit status {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    )
    return proc.stdout


# --------------------------------------------------------------------------- building


def test_build_is_cached_per_torch_and_python(built: Path) -> None:
    import torch

    assert built.is_file()
    assert built.name.startswith(f"npu_device-torch{torch.__version__.replace('+', '_')}-py")
    assert native.build() == built


def _fake_compiler(folder: Path) -> tuple[Path, Path]:
    """A stand-in for g++ that logs each call, takes a while and writes its -o file."""
    log = folder / "compiles.log"
    script = folder / "fake-cxx"
    script.write_text(
        "#!/bin/sh\n"
        f'echo "$$" >> "{log}"\n'
        "sleep 1\n"
        'while [ "$#" -gt 0 ]; do\n'
        '  if [ "$1" = "-o" ]; then echo built > "$2"; fi\n'
        "  shift\n"
        "done\n"
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return script, log


def test_concurrent_builds_compile_once(tmp_path: Path) -> None:
    cxx, log = _fake_compiler(tmp_path)
    env = dict(os.environ, CXX=str(cxx), XDG_CACHE_HOME=str(tmp_path / "cache"))
    env["TMPDIR"] = str(tmp_path / "tmp")  # keep the fallback cache out of the real /tmp
    (tmp_path / "tmp").mkdir()
    code = "from npu_platform.emulation import native; print(native.build())"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code], env=env, cwd=REPO, stdout=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    paths = {proc.communicate(timeout=120)[0].strip() for proc in procs}
    assert all(proc.returncode == 0 for proc in procs)
    assert len(log.read_text().split()) == 1, "more than one process compiled"
    (path,) = paths
    assert Path(path).parent == tmp_path / "cache" / "npu_platform"
    assert Path(path).read_text() == "built\n"
    leftovers = [p.name for p in Path(path).parent.iterdir() if p.name.endswith(".tmp")]
    assert leftovers == []


def test_unwritable_cache_falls_back_to_temp_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cxx, _ = _fake_compiler(tmp_path)
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker))
    monkeypatch.setenv("CXX", str(cxx))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    path = native.build()
    assert path.parent == tmp_path / "tmp" / f"npu_platform-{os.getuid()}"
    assert path.read_text() == "built\n"


def test_missing_compiler_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("CXX", "/nonexistent/c++")
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    with pytest.raises(native.CompilerMissing, match="CXX is set to '/nonexistent/c\\+\\+'"):
        native.build()


# --------------------------------------------------------------------------- the device


def test_tensors_copies_views_and_ops(built: Path) -> None:
    run_device_script("""
    assert torch.accelerator.current_accelerator() == torch.device("npu")
    assert torch.device(0) == torch.device("npu:0"), torch.device(0)
    assert torch.accelerator.device_count() == 2 and npu.device_count() == 2

    cpu = torch.arange(12, dtype=torch.float32).reshape(3, 4)
    x = cpu.to("npu")
    assert x.device == torch.device("npu:0") and x.is_npu and not cpu.is_npu
    assert cpu.npu().device == torch.device("npu:0") and cpu.npu(1).device.index == 1
    assert torch.equal(x.cpu(), cpu)
    # npu memory is separate: both directions copy
    back = x.cpu()
    back[0, 0] = 100
    source = cpu.clone()
    y = source.to("npu")
    source[0, 1] = 50
    assert x[0, 0].item() == 0 and y[0, 1].item() == 1

    # views alias npu memory
    flat = x.view(12)
    assert flat.data_ptr() == x.data_ptr() and x[1].data_ptr() == x.data_ptr() + 16
    flat[5] = -1
    assert x[1, 1].item() == -1
    x.view(12).unfold(0, 4, 4)[2, 3] = -2
    assert x[2, 3].item() == -2
    x.as_strided((2,), (5,), 1).fill_(9)
    assert x.view(12)[1].item() == 9 and x.view(12)[6].item() == 9
    x.t()[3, 0] = 33
    assert x[0, 3].item() == 33
    assert x.reshape(4, 3).data_ptr() == x.data_ptr()
    c = torch.zeros(2, dtype=torch.complex64, device="npu")
    torch.view_as_real(c)[:, 1] = 1
    assert torch.equal(c.cpu(), torch.tensor([1j, 1j], dtype=torch.complex64))
    assert torch.view_as_complex(torch.ones(2, 2, device="npu")).device.type == "npu"
    assert x.is_set_to(x) and not x.is_set_to(x.clone())

    # in-place and out= ops write into npu memory
    expect = x.cpu() * 2 + 1
    ptr = x.data_ptr()
    x.mul_(2).add_(1)
    assert x.data_ptr() == ptr and torch.equal(x.cpu(), expect)
    x.view(12)[:4].zero_()
    assert x[0].abs().sum().item() == 0
    out = torch.empty(3, 4, device="npu")
    ptr = out.data_ptr()
    result = torch.mul(x, 3, out=out)
    assert out.data_ptr() == ptr and result.data_ptr() == ptr
    assert torch.equal(out.cpu(), x.cpu() * 3)
    grown = torch.empty(0, device="npu")
    torch.add(x, 1, out=grown)
    assert grown.shape == (3, 4) and grown.is_npu and torch.equal(grown.cpu(), x.cpu() + 1)

    # copies resolve conjugate and negative views; overlapping copies fail as on the CPU
    cplx = torch.tensor([1 + 2j, 3 - 4j])
    on_npu = cplx.npu()
    assert torch.equal(on_npu.conj().cpu(), cplx.conj())
    assert torch.equal(on_npu.conj().imag.clone().cpu(), cplx.conj().imag.clone())
    assert on_npu.conj()[0].item() == 1 - 2j
    line = torch.arange(5.0, device="npu")
    raises(RuntimeError, lambda: line[1:].copy_(line[:-1]), "single memory location")

    # ops without tensor inputs make their output on the requested device
    indices = torch.tril_indices(3, 3, device="npu:1")
    assert indices.device.index == 1 and torch.equal(indices.cpu(), torch.tril_indices(3, 3))
    assert torch.equal(torch.eye(3, device="npu:1").cpu(), torch.eye(3))
    # random ops draw from torch's CPU default generator, through the CPU fallback
    torch.manual_seed(5)
    drawn = torch.randn(4, device="npu")
    torch.manual_seed(5)
    assert torch.equal(drawn.cpu(), torch.randn(4))

    # item()
    assert x.sum().item() == x.cpu().sum().item()
    assert torch.tensor([7], dtype=torch.int64, device="npu").item() == 7
    assert torch.tensor(True, device="npu").item() is True

    # a small model step equals the CPU
    a, b = torch.randn(8, 16), torch.randn(16, 4)
    got = torch.softmax(a.npu() @ b.npu(), dim=-1)
    assert got.is_npu
    torch.testing.assert_close(got.cpu(), torch.softmax(a @ b, dim=-1))
    linear = torch.nn.Linear(16, 4)
    expected = linear(a)
    assert linear.npu().weight.is_npu
    torch.testing.assert_close(linear(a.npu()).cpu(), expected)

    # npu:0 <-> npu:1
    z = x.to("npu:1")
    assert z.device == torch.device("npu:1") and torch.equal(z.cpu(), x.cpu())
    assert (z * 2).device == torch.device("npu:1")
    again = z.to("npu:0")
    assert again.device == torch.device("npu:0") and torch.equal(again.cpu(), x.cpu())
    into = torch.empty(3, 4, device="npu:0")
    into.copy_(z)
    assert torch.equal(into.cpu(), x.cpu())
    before = npu.allocated(1)
    on_one = torch.empty(100, dtype=torch.uint8, device="npu:1")
    assert npu.allocated(1) == before + 100 and npu.current_device() == 0

    # autograd
    w = torch.randn(5, device="npu", requires_grad=True)
    (w * w).sum().backward()
    assert w.grad.is_npu and torch.allclose(w.grad.cpu(), 2 * w.detach().cpu())

    # generators: CPU generators behind the npu device
    g = torch.Generator(device="npu")
    g.manual_seed(3)
    r1 = torch.randn(4, generator=g, device="npu")
    g.manual_seed(3)
    assert torch.equal(r1.cpu(), torch.randn(4, generator=g, device="npu").cpu())

    # cpu_alias: same memory, sizes, strides and offset; keeps the npu memory alive
    base = torch.arange(6.0, device="npu").reshape(2, 3)
    alias = npu.cpu_alias(base[1:])
    assert alias.device.type == "cpu" and alias.shape == (1, 3)
    assert alias.stride() == (3, 1) and alias.storage_offset() == 3
    assert alias.data_ptr() == base[1:].data_ptr()
    alias[0, 0] = 77
    assert base[1, 0].item() == 77
    held = npu.allocated(0)
    del base
    gc.collect()
    assert npu.allocated(0) == held and alias.sum().item() == 77 + 4 + 5
    del alias
    gc.collect()
    assert npu.allocated(0) == held - 24
    raises(ValueError, lambda: npu.cpu_alias(torch.ones(2)), "expects an npu tensor")

    # resize_, storage resize and set_ keep contents and the tensor's device
    r = torch.arange(4.0, device="npu:1")
    r.resize_(10)
    assert r.device.index == 1 and r[:4].tolist() == [0.0, 1.0, 2.0, 3.0]
    storage = r.untyped_storage()
    storage.resize_(80)
    assert storage.nbytes() == 80 and storage.device == torch.device("npu:1")
    assert r[:4].tolist() == [0.0, 1.0, 2.0, 3.0]
    e = torch.empty(0, device="npu:1").set_(r.untyped_storage(), 1, (2,), (1,))
    assert e.tolist() == [1.0, 2.0] and e.device.index == 1
    e.set_(r)
    assert e.is_set_to(r)
    e.set_()
    assert e.numel() == 0 and e.device.index == 1
    """)


def test_memory_accounting_and_out_of_memory(built: Path) -> None:
    run_device_script("""
    assert native.install_device(2, 64 << 20) is npu  # idempotent
    raises(RuntimeError, lambda: native.install_device(3, 64 << 20), "already initialised")
    for d in (0, 1):
        assert npu.allocated(d) == 0 and npu.num_allocs(d) == 0
        assert npu.mem_get_info(d) == (64 * MIB, 64 * MIB)

    a = torch.empty(1000, dtype=torch.uint8, device="npu")
    assert npu.allocated(0) == 1000 and npu.num_allocs(0) == 1 and npu.allocated(1) == 0
    b = torch.empty(3 * MIB, dtype=torch.uint8, device="npu:1")
    assert npu.allocated(1) == 3 * MIB and npu.num_allocs(1) == 1
    assert npu.mem_get_info(1) == (61 * MIB, 64 * MIB)
    del a
    assert npu.allocated(0) == 0 and npu.num_allocs(0) == 0 and npu.peak_allocated(0) == 1000
    npu.reset_peak(0)
    assert npu.peak_allocated(0) == 0

    # torch.accelerator sees the same numbers through the DeviceAllocator
    acc = torch.accelerator
    assert acc.memory_allocated(1) == 3 * MIB and acc.max_memory_allocated(1) == 3 * MIB
    stats = acc.memory_stats(1)
    assert stats["allocation.all.current"] == 1
    assert stats["allocated_bytes.large_pool.current"] == 3 * MIB
    assert stats["allocated_bytes.small_pool.current"] == 0
    assert stats["reserved_bytes.all.current"] == 3 * MIB
    assert acc.get_memory_info(1) == (61 * MIB, 64 * MIB)
    del b
    assert acc.memory_allocated(1) == 0 and acc.max_memory_allocated(1) == 3 * MIB
    acc.reset_peak_memory_stats(1)
    assert acc.max_memory_allocated(1) == 0
    acc.empty_cache()
    small = torch.empty(10, device="npu")
    assert acc.memory_stats(0)["allocated_bytes.small_pool.current"] == 40

    # exceeding a device's capacity
    big = torch.empty(60 * MIB, dtype=torch.uint8, device="npu:1")
    raises(
        torch.OutOfMemoryError,
        lambda: torch.empty(10 * MIB, dtype=torch.uint8, device="npu:1"),
        "npu:1",
        f"{10 * MIB} bytes",
        f"{60 * MIB} bytes in use",
        f"{64 * MIB} total",
    )
    assert npu.allocated(1) == 60 * MIB and acc.memory_stats(1)["num_ooms"] == 1
    # also from an op's output, through the CPU fallback
    raises(torch.OutOfMemoryError, lambda: big + 1, "out of memory")
    assert npu.allocated(1) == 60 * MIB
    del big
    torch.empty(10 * MIB, dtype=torch.uint8, device="npu:1")  # fits again
    """)


def test_current_device_is_per_thread(built: Path) -> None:
    run_device_script("""
    barrier = threading.Barrier(2)
    seen = {}

    def worker(name, select):
        select()
        barrier.wait()  # both threads have chosen before either looks
        t = torch.empty(4, device="npu")
        seen[name] = (npu.current_device(), torch.accelerator.current_device_index(), t.device)
        barrier.wait()

    choices = {
        "one": lambda: torch.accelerator.set_device_index(1),
        "zero": lambda: npu.set_device(0),
    }
    threads = [threading.Thread(target=worker, args=item) for item in choices.items()]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert seen == {
        "one": (1, 1, torch.device("npu:1")),
        "zero": (0, 0, torch.device("npu:0")),
    }, seen
    assert npu.current_device() == 0

    # allocation bookkeeping stays exact under concurrent allocations and frees
    def churn(device):
        torch.accelerator.set_device_index(device)
        for size in range(1, 400):
            kept = torch.empty(size, dtype=torch.uint8, device="npu")
            assert kept.device.index == device
            del kept

    workers = [threading.Thread(target=churn, args=(d,)) for d in (0, 1, 1)]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    assert npu.allocated(0) == 0 and npu.allocated(1) == 0
    assert npu.num_allocs(0) == 0 and npu.num_allocs(1) == 0

    with torch.accelerator.device_index(1):
        assert npu.current_device() == 1 and torch.empty(1, device="npu").device.index == 1
    assert npu.current_device() == 0
    raises(RuntimeError, lambda: npu.set_device(2), "invalid npu device index 2", "2 device(s)")
    raises(RuntimeError, lambda: torch.empty(1, device="npu:5"), "invalid npu device index 5")
    assert npu.current_device() == 0
    """)


ALLOCATOR_C = r"""
#include <stddef.h>
#include <stdlib.h>

long n_alloc, n_free, stream_not_null, wrong_free_size;
long live[8]; /* bytes per device */

#define SLOTS 1024
static void* ptrs[SLOTS];
static size_t sizes[SLOTS];

void* counting_alloc(size_t size, int device, void* stream) {
    n_alloc++;
    if (stream) stream_not_null++;
    live[device] += (long)size;
    void* p = malloc(size);
    for (int i = 0; i < SLOTS; i++)
        if (!ptrs[i]) { ptrs[i] = p; sizes[i] = size; break; }
    return p;
}

void counting_free(void* p, size_t size, int device, void* stream) {
    n_free++;
    if (stream) stream_not_null++;
    live[device] -= (long)size;
    for (int i = 0; i < SLOTS; i++)
        if (ptrs[i] == p) { if (sizes[i] != size) wrong_free_size++; ptrs[i] = 0; break; }
    free(p);
}
"""


def test_pluggable_allocators_and_pools(built: Path, tmp_path: Path) -> None:
    source = tmp_path / "counting.c"
    source.write_text(ALLOCATOR_C)
    library = tmp_path / "libcounting.so"
    subprocess.run(
        ["gcc", "-O1", "-shared", "-fPIC", "-o", str(library), str(source)],
        check=True,
        capture_output=True,
    )
    run_device_script(
        """
    import ctypes

    lib = ctypes.CDLL(sys.argv[1])
    address = lambda fn: ctypes.cast(fn, ctypes.c_void_p).value
    count = lambda name: ctypes.c_long.in_dll(lib, name).value
    live = (ctypes.c_long * 8).in_dll(lib, "live")
    counting = npu.register_allocator(address(lib.counting_alloc), address(lib.counting_free))
    assert counting >= 1

    # a pool routes this thread's allocations on its device only
    pool = npu.create_pool(counting)
    npu.begin_allocate_to_pool(0, pool)
    p0 = torch.ones(256, device="npu")  # 1024 bytes
    elsewhere = torch.empty(10, device="npu:1")
    other = {}
    worker = threading.Thread(target=lambda: other.update(t=torch.empty(10, device="npu")))
    worker.start()
    worker.join()
    doubled = p0 * 2  # an op's output, made by the CPU fallback
    torch.empty(0, device="npu")  # zero bytes: no allocator call
    npu.end_allocate_to_pool(0, pool)
    after = torch.empty(10, device="npu")
    assert count("n_alloc") == 2 and live[0] == 2048 and live[1] == 0
    assert npu.pool_allocated(pool) == 2048
    assert npu.allocated(0) == 2048 + 40 + 40 and npu.allocated(1) == 40
    assert torch.equal(doubled.cpu(), torch.full((256,), 2.0))
    del p0
    gc.collect()
    assert count("n_free") == 1 and live[0] == 1024 and npu.pool_allocated(pool) == 1024

    # a released pool is forgotten; its memory still returns to its allocator
    npu.release_pool(pool)
    raises(ValueError, lambda: npu.pool_allocated(pool), "unknown or released")
    raises(ValueError, lambda: npu.begin_allocate_to_pool(0, pool), "unknown or released")
    del doubled
    gc.collect()
    assert count("n_free") == 2 and live[0] == 0 and npu.allocated(0) == 80

    # nested pools: the innermost wins until it ends
    outer, inner = npu.create_pool(0), npu.create_pool(counting)
    npu.begin_allocate_to_pool(1, outer)
    npu.begin_allocate_to_pool(1, inner)
    nested = torch.empty(25, device="npu:1")
    npu.end_allocate_to_pool(1, inner)
    host = torch.empty(25, device="npu:1")
    raises(RuntimeError, lambda: npu.release_pool(outer), "still begun")
    npu.end_allocate_to_pool(1, outer)
    assert live[1] == 100 and npu.pool_allocated(inner) == 100 and npu.pool_allocated(outer) == 100
    del nested
    gc.collect()
    assert live[1] == 0

    # the current allocator, and frees that go back to the allocator that made the memory
    npu.change_current_allocator(counting)
    c1 = torch.empty(100, dtype=torch.uint8, device="npu:1")
    npu.change_current_allocator(0)
    c2 = torch.empty(100, dtype=torch.uint8, device="npu:1")
    assert count("n_alloc") == 4 and live[1] == 100
    del c1, c2
    gc.collect()
    assert count("n_free") == 4 and live[1] == 0
    assert count("stream_not_null") == 0 and count("wrong_free_size") == 0

    raises(RuntimeError, lambda: npu.end_allocate_to_pool(0, outer), "was not begun")
    raises(ValueError, lambda: npu.change_current_allocator(99), "unknown npu allocator id 99")
    raises(ValueError, lambda: npu.create_pool(99), "unknown npu allocator id 99")
    raises(ValueError, lambda: npu.register_allocator(0, 0), "addresses")
    """,
        str(library),
    )


def test_pinned_memory_streams_and_events(built: Path) -> None:
    run_device_script("""
    pinned = torch.arange(8.0).pin_memory()
    assert pinned.is_pinned() and pinned[2:].is_pinned() and not torch.arange(8.0).is_pinned()
    assert torch.empty(16, pin_memory=True).is_pinned()
    assert npu.is_pinned_ptr(pinned.data_ptr()) and npu.is_pinned_ptr(pinned.data_ptr() + 4)
    assert not npu.is_pinned_ptr(torch.zeros(4).data_ptr())
    moved = pinned.to("npu", non_blocking=True)
    torch.accelerator.synchronize()
    assert torch.equal(moved.cpu(), pinned)
    address = pinned.data_ptr()
    del pinned
    gc.collect()
    assert not npu.is_pinned_ptr(address)

    # streams: distinct ids, a current stream per thread and device
    s1, s2 = torch.Stream(device="npu"), torch.Stream(device="npu")
    s3 = torch.Stream(device="npu:1")
    assert len({s1.stream_id, s2.stream_id, s3.stream_id, 0}) == 4
    assert s3.device == torch.device("npu:1")
    assert torch.accelerator.current_stream().stream_id == 0
    with s1:
        assert torch.accelerator.current_stream().stream_id == s1.stream_id
        inside = torch.ones(3, device="npu") + 1
    assert torch.accelerator.current_stream().stream_id == 0
    torch.accelerator.set_stream(s2)
    assert torch.accelerator.current_stream() == s2
    assert torch.accelerator.current_stream(1).stream_id == 0
    elsewhere = []
    worker = threading.Thread(target=lambda: elsewhere.append(torch.accelerator.current_stream()))
    worker.start()
    worker.join()
    assert elsewhere[0].stream_id == 0
    default = torch.Stream(stream_id=0, device_index=0, device_type=s1.device_type)
    torch.accelerator.set_stream(default)
    assert torch.accelerator.current_stream().stream_id == 0
    inside.record_stream(s1)

    # events: host timestamps; all work is complete when recorded
    start = torch.Event(device="npu", enable_timing=True)
    end = torch.Event(device="npu", enable_timing=True)
    assert start.query()  # never recorded
    start.record(s1)
    time.sleep(0.05)
    end.record(s1)
    assert start.query() and end.query()
    end.synchronize()
    s2.wait_event(end)
    s1.synchronize()
    assert s1.query()
    elapsed = start.elapsed_time(end)
    assert 40 <= elapsed < 5000, elapsed
    assert s1.record_event().query()
    torch.accelerator.synchronize(1)
    """)
