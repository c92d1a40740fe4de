"""NPU graphs (torch_npu/npu/graphs.py) on the emulated NPU: record a capture, re-run it.

An NPU graph replays the work it captured on the same memory: it reads its inputs from the
tensors the capture read and writes into the tensors the capture produced. The emulation
keeps that contract on the host. While a graph captures on a thread:

* every aten op that touches an ``npu`` tensor runs normally and is recorded as
  ``(op, arguments, outputs)`` (allocation-only ops such as ``empty`` are not: a graph only
  reserves their memory), and so is every call of a torch_npu op (``torch_npu.npu_*``), as
  one node, like torch_npu's dispatch records;
* :meth:`NPUGraph.replay` runs the nodes again in order with the same argument objects and
  copies each fresh result into the recorded output tensor (in-place ops and views write
  through by themselves), so outputs in static tensors update on every replay;
* :meth:`NPUGraph.update` changes the recorded arguments (``actual_seq_lengths_kv`` ...)
  of the attention ops torch_npu can update, for the next replays. As on the NPU, where a
  graph captured with ``auto_dispatch_capture=True`` waits on an external event before each
  updatable op and ``update`` records it once the new arguments are in place, a replay of
  such a graph runs each updatable op only after an ``update`` since the previous replay:
  callers may (and sglang does) call ``update`` on another thread while ``replay`` starts.
  A replay with no update arriving within :data:`_UPDATE_WAIT_SECONDS` raises (the NPU
  would block);
* a capture given a :class:`~torch_npu.npu.MemPool`'s ``id`` as its ``pool`` allocates
  from that pool (and so from its allocator), as memory savers expect; other pool tokens
  only name a pool, as the emulated NPU has no private graph pools.

Differences from an Ascend NPU: the capture also computes (the NPU only records), host
tensors read by a captured copy are read again on replay (as the NPU does), Python code and
host-only ops inside the capture run once (as on the NPU), random ops draw new numbers on
each replay, and ops whose output shape depends on data fail on replay (they cannot be
captured on the NPU either).
"""

import json
import logging
import threading
import typing
import warnings

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

import torch_npu
from torch_npu import _emulated

__all__ = [
    "is_current_stream_capturing",
    "graph_pool_handle",
    "NPUGraph",
    "graph",
]

log = logging.getLogger("torch_npu.npugraph")

_local = threading.local()  # .graph: the NPUGraph capturing on this thread
_pool_lock = threading.Lock()
_next_pool = 1

# Ops that only allocate: a graph reserves their memory, it does not re-run them.
_ALLOCATIONS = frozenset(
    {"empty", "empty_strided", "empty_like", "new_empty", "new_empty_strided", "empty_permuted"}
)

# torch_npu's updatable ops (its graph handlers): update key -> positional argument index.
_UPDATE_SPECS = {
    "npu_fused_infer_attention_score": {"actual_seq_lengths": 5, "actual_seq_lengths_kv": 6},
    "npu_fused_infer_attention_score_v2": {"actual_seq_qlen": 7, "actual_seq_kvlen": 8},
    "npu_fusion_attention_v3": {"actual_seq_qlen": 14, "actual_seq_kvlen": 15},
    "npu_fusion_attention_grad_v3": {"actual_seq_qlen": 21, "actual_seq_kvlen": 22},
    "_npu_paged_attention": {"context_lens": 7},
    "npu_multi_head_latent_attention": {"context_lens": 5},
}


#: How long a replay waits for the update of an updatable op (see the module docstring).
_UPDATE_WAIT_SECONDS = 60.0


def is_current_stream_capturing():
    r"""Return True if NPU graph capture is underway on the current NPU stream, False otherwise."""
    graph = getattr(_local, "graph", None)
    return graph is not None and graph._capture_stream == _current_stream_key()


def graph_pool_handle():
    r"""Return an opaque token representing the id of a graph memory pool."""
    global _next_pool
    with _pool_lock:
        token = (_next_pool, 0)
        _next_pool += 1
    return token


def _current_stream_key():
    stream = torch.accelerator.current_stream()
    return (stream.device_index, stream.stream_id)


def _touches_npu(values) -> bool:
    leaves, _ = tree_flatten(values)
    return any(isinstance(v, torch.Tensor) and v.device.type == "npu" for v in leaves)


def _has_tensor(value) -> bool:
    leaves, _ = tree_flatten(value)
    return any(isinstance(v, torch.Tensor) for v in leaves)


def _write_back(recorded, fresh) -> None:
    old, _ = tree_flatten(recorded)
    new, _ = tree_flatten(fresh)
    for a, b in zip(old, new, strict=False):
        if not isinstance(a, torch.Tensor) or not isinstance(b, torch.Tensor) or a is b:
            continue
        if a.data_ptr() == b.data_ptr() and a.stride() == b.stride() and a.shape == b.shape:
            continue  # a view or an in-place result: it is the recorded tensor's memory
        a.copy_(b)


class _Node:
    __slots__ = ("args", "event", "func", "kwargs", "name", "npu_op", "out")

    def __init__(self, name, func, args, kwargs, out, npu_op):
        self.name = name
        self.func = func
        self.args = args
        self.kwargs = kwargs
        self.out = out
        self.npu_op = npu_op
        # The external event an updatable op waits on (auto_dispatch_capture graphs only).
        self.event = None

    def run(self):
        if self.event is not None:
            if not self.event.wait(_UPDATE_WAIT_SECONDS):
                raise RuntimeError(
                    f"NPUGraph replay: the captured {self.name} waits for NPUGraph.update() "
                    "(graphs captured with auto_dispatch_capture=True take an update before "
                    f"each replay); none came within {_UPDATE_WAIT_SECONDS:.0f} s. On an "
                    "NPU this replay would block."
                )
            self.event.clear()
        _write_back(self.out, self.func(*self.args, **self.kwargs))


class _Recorder(TorchDispatchMode):
    """Records the aten ops of a capture (this thread's only: dispatch modes are per thread)."""

    def __init__(self, graph):
        super().__init__()
        self._graph = graph
        self.paused = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if self.paused or func.overloadpacket.__name__ in _ALLOCATIONS:
            return out
        if not _has_tensor(out) and not func._schema.is_mutable:
            return out  # a query (item(), equal ...): nothing for a replay to redo
        if _touches_npu((args, kwargs, out)):
            self._graph._nodes.append(_Node(str(func), func, args, kwargs, out, False))
        return out


def _run_npu_op(name, impl, args, kwargs):
    """Run a torch_npu op; inside a capture, record it as one node."""
    graph = getattr(_local, "graph", None)
    if graph is None or graph._recorder is None or graph._recorder.paused:
        return impl(*args, **kwargs)
    recorder = graph._recorder
    recorder.paused += 1
    try:
        out = impl(*args, **kwargs)
    finally:
        recorder.paused -= 1
    graph._nodes.append(_Node(name, impl, list(args), dict(kwargs), out, True))
    return out


class NPUGraph:
    r"""Wrapper around a NPU graph."""

    def __new__(cls):
        return super().__new__(cls)

    def __init__(self):
        self.auto_dispatch_capture = False
        self._nodes = []
        self._recorder = None
        self._captured = False
        self._pool = None
        self._capture_stream = None
        self._pool_scope = None

    def capture_begin(self, pool=None, capture_error_mode="global"):
        r"""Begin capturing NPU work on the current stream.

        Typically, you shouldn't call ``capture_begin`` yourself.
        Use :class:`~torch.npu.graph`, which calls ``capture_begin`` internally.

        Arguments:
            pool (optional): Token (returned by :func:`~torch.npu.graph_pool_handle` or
                :meth:`other_Graph_instance.pool()<torch.npu.NPUGraph.pool>`) that hints this
                graph may share memory with the indicated pool.
            capture_error_mode (str, optional): "global", "thread_local" or "relaxed".
        """
        if capture_error_mode not in ("global", "thread_local", "relaxed"):
            raise RuntimeError(
                "Unknown capture error mode. Expected `global`, `thread_local`, or `relaxed`, "
                f"got {capture_error_mode!r}"
            )
        if self._captured or self._recorder is not None:
            raise RuntimeError(
                "This NPUGraph instance already owns a captured graph. To capture a new "
                "graph, create a new instance (or call reset() first)."
            )
        if getattr(_local, "graph", None) is not None:
            raise RuntimeError(
                "another NPU graph is already capturing on this thread; end it first"
            )
        stream = _current_stream_key()
        if stream[1] == 0:
            raise RuntimeError(
                "NPU graphs must be captured on a non-default stream. (However, after "
                "capture, it's ok to replay them on the default stream.) Capture inside "
                "`with torch.npu.graph(g):` or `with torch.npu.stream(torch.npu.Stream()):`."
            )
        self._pool = pool if pool is not None else graph_pool_handle()
        self._capture_stream = stream
        # A MemPool's id as the pool: the capture's allocations come from that pool.
        from .memory import _pool_by_id

        mem_pool = _pool_by_id(self._pool)
        if mem_pool is not None:
            self._pool_scope = (stream[0], mem_pool)
            _emulated.lib().begin_allocate_to_pool(stream[0], mem_pool._pool_id)
        self._recorder = _Recorder(self)
        self._recorder.__enter__()
        _local.graph = self

    def capture_end(self):
        r"""End NPU graph capture on the current stream; ``replay`` may be called after it."""
        if self._recorder is None or getattr(_local, "graph", None) is not self:
            raise RuntimeError("capture_end() without capture_begin() on this thread")
        recorder, self._recorder = self._recorder, None
        _local.graph = None
        recorder.__exit__(None, None, None)
        if self.auto_dispatch_capture:
            for node in self._nodes:
                if node.npu_op and node.name in _UPDATE_SPECS:
                    node.event = threading.Event()
        if self._pool_scope is not None:
            device_index, mem_pool = self._pool_scope
            self._pool_scope = None
            _emulated.lib().end_allocate_to_pool(device_index, mem_pool._pool_id)
        self._captured = True

    def replay(self):
        r"""Replay the NPU work captured by this graph."""
        if not self._captured:
            raise RuntimeError("Called NPUGraph::replay without a preceding successful capture.")
        log.debug("NPUGRAPH Replay graph_id=%s", id(self))
        with torch.no_grad():
            for node in self._nodes:
                node.run()

    def reset(self):
        r"""Delete the graph currently held by this instance."""
        if self._recorder is not None:
            raise RuntimeError("reset() during capture: call capture_end() first")
        self._nodes = []
        self._captured = False

    def pool(self):
        r"""Return an opaque token representing the id of this graph's memory pool."""
        if self._pool is None:
            raise RuntimeError("pool() needs a graph that has begun capturing")
        return self._pool

    def update(self, cpu_update_input):
        r"""Change arguments of the captured attention ops for the next replays.

        Arguments:
            cpu_update_input (list of dict): one dict per updatable op of the capture, in
                capture order (or a single dict for all of them), mapping an argument
                (``actual_seq_lengths_kv``, ``actual_seq_kvlen``, ``context_lens`` ...) to
                its new value.
        """
        if not self.auto_dispatch_capture:
            raise RuntimeError(
                "The current graph configuration does not support update,"
                "Try to capture by setting auto_dispatch_capture=True during capture"
            )
        records = [n for n in self._nodes if n.npu_op and n.name in _UPDATE_SPECS]
        if len(cpu_update_input) == 1:
            cpu_update_input = [dict(cpu_update_input[0]) for _ in records]
        if len(cpu_update_input) != len(records):
            raise RuntimeError(
                f"Currently, there are {len(records)} operators that need to be updated by "
                f"capture, and there are only {len(cpu_update_input)} elements in the "
                "incoming cpu_update_input list"
            )
        for record, update_input in zip(records, cpu_update_input, strict=True):
            for key, value in update_input.items():
                if key in record.kwargs:
                    record.kwargs[key] = value
            for key, index in _UPDATE_SPECS[record.name].items():
                if key in update_input and key not in record.kwargs and index < len(record.args):
                    record.args[index] = update_input[key]
            if record.event is not None:
                record.event.set()  # the op's external event: the next replay may run it

    def debug_dump(self, debug_path):
        r"""Writes the captured nodes to ``debug_path`` as JSON (op name and kind, in order)."""
        if not self._captured:
            warnings.warn("debug_dump: this NPUGraph has not been captured", stacklevel=2)
            return
        nodes = [{"op": n.name, "kind": "npu_op" if n.npu_op else "aten"} for n in self._nodes]
        with open(debug_path, "w") as handle:
            json.dump({"nodes": nodes}, handle, indent=1)


class graph:  # noqa: N801
    r"""Context-manager that captures NPU work into a :class:`torch.npu.NPUGraph` for replay.

    Arguments:
        npu_graph (torch.npu.NPUGraph): Graph object used for capture.
        pool (optional): Opaque token (returned by a call to :func:`~torch.npu.graph_pool_handle()` or
            :meth:`other_Graph_instance.pool()<torch.npu.NPUGraph.pool>`) hinting this graph's capture
            may share memory from the specified pool.
        stream (torch.npu.Stream, optional): If supplied, will be set as the current stream in the context.
            If not supplied, ``graph`` sets its own internal side stream as the current stream in the context.
        auto_dispatch_capture (bool, optional): record the updatable ops so that
            :meth:`NPUGraph.update` can change their arguments.
        capture_error_mode (str, optional): "global", "thread_local" or "relaxed".
    """  # noqa: E501

    default_capture_stream: typing.Optional["torch.npu.Stream"] = None

    def __init__(
        self,
        npu_graph,
        pool=None,
        stream=None,
        auto_dispatch_capture=False,
        capture_error_mode: str = "global",
    ):
        if self.__class__.default_capture_stream is None:
            self.__class__.default_capture_stream = torch_npu.npu.Stream()
        self.pool = () if pool is None else (pool,)
        self.capture_stream = (
            stream if stream is not None else self.__class__.default_capture_stream
        )
        if self.capture_stream is None:
            raise RuntimeError("capture stream is None")
        self.stream_ctx = torch_npu.npu.stream(self.capture_stream)
        self.npu_graph = npu_graph
        self.capture_error_mode = capture_error_mode
        self.npu_graph.auto_dispatch_capture = auto_dispatch_capture

    def __enter__(self):
        torch_npu.npu.synchronize()
        torch_npu.npu.empty_cache()
        torch_npu.npu.host_empty_cache()
        self.stream_ctx.__enter__()
        try:
            self.npu_graph.capture_begin(*self.pool, capture_error_mode=self.capture_error_mode)
        except BaseException:
            self.stream_ctx.__exit__(None, None, None)
            raise

    def __exit__(self, exc_type, exc_value, traceback):
        if exc_type is not None:
            log.error(
                "NPUGraph: capture failed: %s: %s, graph_id=%s",
                exc_type.__name__,
                exc_value,
                id(self.npu_graph),
            )
        self.npu_graph.capture_end()
        self.stream_ctx.__exit__(exc_type, exc_value, traceback)
