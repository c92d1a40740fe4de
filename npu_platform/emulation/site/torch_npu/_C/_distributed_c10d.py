"""``torch_npu._C._distributed_c10d`` on the emulated NPU: the ``hccl`` process group.

:func:`register` (called when ``torch_npu`` is imported) registers ``hccl`` with
``torch.distributed`` for the ``npu`` device, as torch_npu does, so
``init_process_group("hccl")`` / ``new_group(backend="hccl", pg_options=...)`` work and
collectives take ``npu`` tensors. :class:`ProcessGroupHCCL` runs every collective with gloo
on CPU aliases of the ``npu`` tensors (the native device's ``cpu_alias``: same memory, so
results land in the ``npu`` tensors with no copy); non-contiguous tensors go through a
contiguous copy and are written back.

It gives HCCL's (NCCL's) semantics where gloo differs:

* ``ReduceOp.AVG`` (gloo has none): a sum divided by the group size (truncating for
  integer tensors);
* ``all_gather`` with output tensors of different sizes (gloo raises ``invalid tensor
  size``): each rank's tensor is broadcast from that rank, as NCCL does; the sizes are
  checked on every rank first, so a mismatch raises everywhere instead of hanging;
* ``reduce_scatter`` with uneven inputs (a reduce to each rank); ``reduce_scatter_tensor``
  and ``all_gather_into_tensor`` (tensor-in/tensor-out forms);
* ``all_to_all`` with a list of tensors.

Differences from torch_npu's C++ ``ProcessGroupHCCL``:

* it is a Python ``torch.distributed.ProcessGroup`` (the way torch's Python backends are
  written), not a c10d ``Backend``: ``torch.distributed`` uses it as the group itself.
  ``group._get_backend(torch.device("npu"))`` returns the group; it cannot be registered on
  another ``ProcessGroup`` with ``_register_backend``, and a multi-backend string such as
  ``"cpu:gloo,npu:hccl"`` gives one group that serves both devices;
* CPU tensors are accepted too (gloo runs them directly); real HCCL refuses them;
* work is synchronous (the emulated device is): collectives are complete when they return;
  sends and receives are asynchronous, as gloo's;
* ``ReduceOp.PREMUL_SUM`` is refused; dtypes are gloo's (no float8);
* functional collectives that torch's C++ calls through non-virtual methods
  (``_functional_collectives.all_gather_tensor`` / ``reduce_scatter_tensor``) fail with
  torch's "No backend type associated with device type" error; ``all_reduce`` works;
* HCCL-specific calls (``get_hccl_comm``, ``batch_isend_irecv`` coalescing) are absent.
"""

from __future__ import annotations

import datetime
import functools
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.distributed as dist
from torch._C._distributed_c10d import (
    AllgatherOptions,
    AllreduceCoalescedOptions,
    AllreduceOptions,
    AllToAllOptions,
    BarrierOptions,
    BroadcastOptions,
    GatherOptions,
    ReduceOptions,
    ReduceScatterOptions,
    ScatterOptions,
    _create_work_from_future,
)

__all__ = ["ProcessGroupHCCL", "register"]

BACKEND = "hccl"
DEVICE = "npu"
_DEFAULT_TIMEOUT = datetime.timedelta(minutes=30)


# --------------------------------------------------------------------------- helpers


@functools.cache
def _cpu_alias() -> Callable[[torch.Tensor], torch.Tensor] | None:
    try:
        from npu_platform.emulation import native

        return native.load().cpu_alias
    except Exception:
        return None


def _completed(result: Any) -> dist.Work:
    future: torch.futures.Future = torch.futures.Future()
    future.set_result(result)
    return _create_work_from_future(future)


class _Staging:
    """CPU tensors standing for the caller's tensors during one collective.

    An ``npu`` tensor becomes its CPU alias (same memory); a non-contiguous one a contiguous
    copy, written back by :meth:`finish` when the collective writes it.
    """

    def __init__(self, op: str) -> None:
        self.op = op
        self._writeback: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.keep: list[torch.Tensor] = []

    def host(self, t: torch.Tensor, written: bool) -> torch.Tensor:
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"hccl {self.op}: expected tensors, got {type(t).__name__}")
        if t.device.type == DEVICE:
            alias = _cpu_alias()
            if alias is None:
                raise RuntimeError(
                    f"hccl {self.op}: the emulated npu device is not loaded in this process"
                )
            h = alias(t)
        elif t.device.type == "cpu":
            h = t
        else:
            raise RuntimeError(
                f"hccl {self.op}: tensors must be on the npu device, got one on {t.device}"
            )
        if t.is_sparse:
            raise RuntimeError(f"hccl {self.op}: sparse tensors are not supported")
        self.keep.append(t)
        if h.is_contiguous():
            return h
        tmp = h.contiguous()
        if written:
            self._writeback.append((h, tmp))
        return tmp

    def finish(self) -> None:
        for dst, src in self._writeback:
            dst.copy_(src)
        self._writeback.clear()


class _PendingWork(dist.Work):
    """Gloo's asynchronous work (send/recv) plus what to do once it has finished."""

    def __init__(self, inner: dist.Work, staging: _Staging, result: list[torch.Tensor]):
        super().__init__()
        self._inner = inner
        self._staging = staging
        self._result = result
        self._done = False

    def _complete(self) -> None:
        if not self._done:
            self._done = True
            self._staging.finish()

    def wait(self, timeout: datetime.timedelta | None = None) -> bool:
        ok = self._inner.wait() if timeout is None else self._inner.wait(timeout)
        self._complete()
        return ok

    def is_completed(self) -> bool:
        done = self._inner.is_completed()
        if done:
            self._complete()
        return done

    def is_success(self) -> bool:
        return self._inner.is_success()

    def exception(self) -> Any:
        return self._inner.exception()

    def source_rank(self) -> int:
        return self._inner.source_rank()

    def _source_rank(self) -> int:
        return self._inner._source_rank()

    def result(self) -> list[torch.Tensor]:
        return self._result

    def synchronize(self) -> None:
        self.wait()

    def get_future(self) -> torch.futures.Future:
        self.wait()
        future: torch.futures.Future = torch.futures.Future()
        future.set_result(self._result)
        return future


def _is_avg(op: Any) -> bool:
    return op == dist.ReduceOp.AVG


def _check_op(name: str, op: Any) -> None:
    if op == dist.ReduceOp.PREMUL_SUM:
        raise RuntimeError(
            f"hccl {name}: ReduceOp.PREMUL_SUM is not supported by the emulated NPU's hccl "
            "backend; scale the tensor and use SUM"
        )


def _divide(tensors: Sequence[torch.Tensor], size: int) -> None:
    for t in tensors:
        if t.is_floating_point() or t.is_complex():
            t.div_(size)
        else:
            t.copy_(torch.div(t, size, rounding_mode="trunc"))


# --------------------------------------------------------------------------- the group


class ProcessGroupHCCL(dist.ProcessGroup):
    """The emulated NPU's ``hccl`` process group (collectives by gloo on CPU aliases)."""

    class Options:
        """``ProcessGroupHCCL.Options``: what sglang and vLLM set on HCCL groups."""

        backend = BACKEND

        def __init__(self, is_high_priority_stream: bool = False) -> None:
            self.is_high_priority_stream = is_high_priority_stream
            self.hccl_config: dict[str, Any] = {}
            self._timeout = _DEFAULT_TIMEOUT
            self.global_ranks_in_group: list[int] = []
            self.group_id = ""
            self.group_name = ""

        def __repr__(self) -> str:
            return (
                f"ProcessGroupHCCL.Options(timeout={self._timeout}, hccl_config={self.hccl_config})"
            )

    supports_splitting = False
    supports_coalescing = False
    supports_time_estimate = False

    def __init__(
        self,
        store: dist.Store,
        rank: int,
        size: int,
        options: ProcessGroupHCCL.Options | datetime.timedelta | None = None,
    ) -> None:
        super().__init__(rank, size)
        if options is None:
            options = ProcessGroupHCCL.Options()
        elif isinstance(options, datetime.timedelta):
            timeout = options
            options = ProcessGroupHCCL.Options()
            options._timeout = timeout
        elif not isinstance(options, ProcessGroupHCCL.Options):
            raise TypeError(
                "ProcessGroupHCCL options must be a ProcessGroupHCCL.Options or a timeout, "
                f"got {type(options).__name__}"
            )
        self.options = options
        self._store = store
        self._gloo = dist.ProcessGroupGloo(
            dist.PrefixStore("hccl-emulated/", store), rank, size, options._timeout
        )
        self._group_name = ""
        self._group_desc = ""
        self._sequence = 0

    # ------------------------------------------------------------ identity
    def getBackendName(self) -> str:  # noqa: N802 - the C++ name the trampoline overrides
        return BACKEND

    def getGroupName(self) -> str:  # noqa: N802
        return self._group_name

    def setGroupName(self, name: str) -> None:  # noqa: N802
        self._group_name = name

    def getGroupDesc(self) -> str:  # noqa: N802
        return self._group_desc

    def setGroupDesc(self, desc: str) -> None:  # noqa: N802
        self._group_desc = desc

    @property
    def _device_types(self) -> list[torch.device]:
        return [torch.device(DEVICE)]

    def _get_backend(self, device: Any) -> ProcessGroupHCCL:
        kind = torch.device(device).type if not isinstance(device, torch.device) else device.type
        if kind != DEVICE:
            raise RuntimeError(f"No backend type associated with device type {kind}")
        return self

    def _set_sequence_number_for_group(self) -> None:
        self._sequence = 0

    def _get_sequence_number_for_group(self) -> int:
        return self._sequence

    def __repr__(self) -> str:
        return f"<emulated ProcessGroupHCCL rank={self.rank()} size={self.size()}>"

    # ------------------------------------------------------------ internals
    def _gloo_opts(self, cls: type, timeout: Any = None, **fields: Any) -> Any:
        opts = cls()
        for key, value in fields.items():
            setattr(opts, key, value)
        if timeout is not None:
            opts.timeout = timeout
        return opts

    def _allreduce_host(self, hosts: list[torch.Tensor], op: Any, timeout: Any) -> None:
        real_op = dist.ReduceOp.SUM if _is_avg(op) else op
        opts = self._gloo_opts(AllreduceOptions, timeout, reduceOp=real_op)
        self._gloo.allreduce(hosts, opts).wait()
        if _is_avg(op):
            _divide(hosts, self.size())

    def _broadcast_host(self, host: torch.Tensor, root: int, timeout: Any) -> None:
        opts = self._gloo_opts(BroadcastOptions, timeout, rootRank=root, rootTensor=0)
        self._gloo.broadcast([host], opts).wait()

    def _reduce_host(self, host: torch.Tensor, root: int, op: Any, timeout: Any) -> None:
        real_op = dist.ReduceOp.SUM if _is_avg(op) else op
        opts = self._gloo_opts(
            ReduceOptions, timeout, rootRank=root, rootTensor=0, reduceOp=real_op
        )
        self._gloo.reduce([host], opts).wait()
        if _is_avg(op) and root == self.rank():
            _divide([host], self.size())

    # ------------------------------------------------------------ all-reduce
    def allreduce(self, tensors: list[torch.Tensor], opts: Any = None) -> dist.Work:
        opts = opts if opts is not None else AllreduceOptions()
        _check_op("allreduce", opts.reduceOp)
        st = _Staging("allreduce")
        hosts = [st.host(t, True) for t in tensors]
        self._allreduce_host(hosts, opts.reduceOp, opts.timeout)
        st.finish()
        return _completed(tensors)

    def allreduce_coalesced(self, tensors: list[torch.Tensor], opts: Any = None) -> dist.Work:
        opts = opts if opts is not None else AllreduceCoalescedOptions()
        _check_op("allreduce_coalesced", opts.reduceOp)
        st = _Staging("allreduce_coalesced")
        for t in tensors:
            self._allreduce_host([st.host(t, True)], opts.reduceOp, opts.timeout)
        st.finish()
        return _completed(tensors)

    def reduce(self, tensors: list[torch.Tensor], opts: Any = None) -> dist.Work:
        opts = opts if opts is not None else ReduceOptions()
        _check_op("reduce", opts.reduceOp)
        st = _Staging("reduce")
        for t in tensors:
            self._reduce_host(st.host(t, True), opts.rootRank, opts.reduceOp, opts.timeout)
        st.finish()
        return _completed(tensors)

    # ------------------------------------------------------------ broadcast
    def broadcast(self, tensors: list[torch.Tensor], opts: Any = None) -> dist.Work:
        opts = opts if opts is not None else BroadcastOptions()
        st = _Staging("broadcast")
        hosts = [st.host(t, True) for t in tensors]
        self._gloo.broadcast(hosts, opts).wait()
        st.finish()
        return _completed(tensors)

    # ------------------------------------------------------------ all-gather
    def _sizes_agree(self, name: str, mine: int, expected: list[int], timeout: Any) -> None:
        """Gather every rank's element count; raise on every rank unless all match."""
        numels = [torch.zeros(1, dtype=torch.int64) for _ in range(self.size())]
        own = torch.tensor([mine], dtype=torch.int64)
        self._gloo.allgather([numels], [own], self._gloo_opts(AllgatherOptions, timeout)).wait()
        got = [int(n.item()) for n in numels]
        if got != expected:
            raise RuntimeError(
                f"hccl {name}: output tensor sizes (element counts) {expected} do not match "
                f"the ranks' input sizes {got}"
            )

    def _allgather_one(
        self, outputs: list[torch.Tensor], inp: torch.Tensor, timeout: Any, name: str
    ) -> None:
        if len(outputs) != self.size():
            raise ValueError(
                f"hccl {name}: expected {self.size()} output tensors (one per rank), got "
                f"{len(outputs)}"
            )
        for o in outputs:
            if o.dtype != inp.dtype:
                raise TypeError(
                    f"hccl {name}: output dtype {o.dtype} differs from the input's {inp.dtype}"
                )
        st = _Staging(name)
        src = st.host(inp, False)
        outs = [st.host(o, True) for o in outputs]
        if all(o.shape == outputs[0].shape for o in outputs):
            # Same-size outputs (the decision every rank makes alike): a plain all-gather.
            if outputs[0].numel() != inp.numel():
                raise ValueError(
                    f"hccl {name}: input tensor size ({inp.numel()} elements) must equal the "
                    f"output tensor size ({outputs[0].numel()})"
                )
            outs = [o.view(src.shape) for o in outs]
            opts = self._gloo_opts(AllgatherOptions, timeout)
            self._gloo.allgather([outs], [src], opts).wait()
        else:
            # NCCL accepts uneven outputs and broadcasts each rank's tensor from that rank.
            self._sizes_agree(name, inp.numel(), [o.numel() for o in outputs], timeout)
            for root, out in enumerate(outs):
                flat = out.view(-1)
                if root == self.rank():
                    flat.copy_(src.reshape(-1))
                self._broadcast_host(flat, root, timeout)
        st.finish()

    def allgather(
        self, output_tensors: list[list[torch.Tensor]], input_tensors: list[torch.Tensor], opts=None
    ) -> dist.Work:
        opts = opts if opts is not None else AllgatherOptions()
        for outs, inp in zip(output_tensors, input_tensors, strict=True):
            self._allgather_one(outs, inp, opts.timeout, "allgather")
        return _completed(output_tensors)

    def allgather_coalesced(
        self, output_lists: list[list[torch.Tensor]], input_list: list[torch.Tensor], opts=None
    ) -> dist.Work:
        opts = opts if opts is not None else AllgatherOptions()
        for outs, inp in zip(output_lists, input_list, strict=True):
            self._allgather_one(outs, inp, opts.timeout, "allgather_coalesced")
        return _completed(output_lists)

    def _gather_into(
        self, output: torch.Tensor, inp: torch.Tensor, timeout: Any, name: str
    ) -> None:
        if output.numel() != inp.numel() * self.size():
            raise ValueError(
                f"hccl {name}: output tensor size ({output.numel()} elements) must equal "
                f"world_size ({self.size()}) times input tensor size ({inp.numel()})"
            )
        if output.dtype != inp.dtype:
            raise TypeError(f"hccl {name}: output dtype {output.dtype} != input {inp.dtype}")
        st = _Staging(name)
        src = st.host(inp, False)
        out = st.host(output, True).view(-1)
        n = inp.numel()
        parts = [out[i * n : (i + 1) * n].view(src.shape) for i in range(self.size())]
        self._gloo.allgather([parts], [src], self._gloo_opts(AllgatherOptions, timeout)).wait()
        st.finish()

    def all_gather_single(self, output: torch.Tensor, input: torch.Tensor, opts=None):
        opts = opts if opts is not None else AllgatherOptions()
        self._gather_into(output, input, opts.timeout, "all_gather_into_tensor")
        return _completed([output])

    _allgather_base = all_gather_single

    def all_gather_single_coalesced(
        self, outputs: list[torch.Tensor], inputs: list[torch.Tensor], opts=None
    ) -> dist.Work:
        opts = opts if opts is not None else AllgatherOptions()
        for out, inp in zip(outputs, inputs, strict=True):
            self._gather_into(out, inp, opts.timeout, "all_gather_into_tensor_coalesced")
        return _completed(outputs)

    allgather_into_tensor_coalesced = all_gather_single_coalesced

    # ------------------------------------------------------------ reduce-scatter
    def _scatter_reduce_list(
        self, output: torch.Tensor, inputs: list[torch.Tensor], op: Any, timeout: Any, name: str
    ) -> None:
        if len(inputs) != self.size():
            raise ValueError(
                f"hccl {name}: expected {self.size()} input tensors (one per rank), got "
                f"{len(inputs)}"
            )
        if inputs[self.rank()].numel() != output.numel():
            raise ValueError(
                f"hccl {name}: input {self.rank()} has {inputs[self.rank()].numel()} elements "
                f"but the output {output.numel()}"
            )
        st = _Staging(name)
        out = st.host(output, True)
        if all(i.numel() == output.numel() for i in inputs):
            stacked = torch.stack([st.host(i, False).reshape(-1) for i in inputs])
            self._allreduce_host([stacked], op, timeout)
            out.view(-1).copy_(stacked[self.rank()])
        else:  # uneven: a reduce to each rank (what NCCL falls back to)
            for root, inp in enumerate(inputs):
                buf = st.host(inp, False).reshape(-1).clone()
                self._reduce_host(buf, root, op, timeout)
                if root == self.rank():
                    out.view(-1).copy_(buf)
        st.finish()

    def reduce_scatter(
        self, output_tensors: list[torch.Tensor], input_tensors: list[list[torch.Tensor]], opts=None
    ) -> dist.Work:
        opts = opts if opts is not None else ReduceScatterOptions()
        _check_op("reduce_scatter", opts.reduceOp)
        for out, inputs in zip(output_tensors, input_tensors, strict=True):
            self._scatter_reduce_list(out, inputs, opts.reduceOp, opts.timeout, "reduce_scatter")
        return _completed(output_tensors)

    def _scatter_reduce_tensor(
        self, output: torch.Tensor, inp: torch.Tensor, op: Any, timeout: Any, name: str
    ) -> None:
        if inp.numel() != output.numel() * self.size():
            raise ValueError(
                f"hccl {name}: input tensor size ({inp.numel()} elements) must equal "
                f"world_size ({self.size()}) times output tensor size ({output.numel()})"
            )
        flat = inp.reshape(-1) if inp.is_contiguous() else inp.contiguous().reshape(-1)
        n = output.numel()
        chunks = [flat[i * n : (i + 1) * n] for i in range(self.size())]
        self._scatter_reduce_list(output, chunks, op, timeout, name)

    def reduce_scatter_single(self, output: torch.Tensor, input: torch.Tensor, opts=None):
        opts = opts if opts is not None else ReduceScatterOptions()
        _check_op("reduce_scatter_tensor", opts.reduceOp)
        self._scatter_reduce_tensor(
            output, input, opts.reduceOp, opts.timeout, "reduce_scatter_tensor"
        )
        return _completed([output])

    _reduce_scatter_base = reduce_scatter_single

    def reduce_scatter_single_coalesced(
        self, outputs: list[torch.Tensor], inputs: list[torch.Tensor], opts=None
    ) -> dist.Work:
        opts = opts if opts is not None else ReduceScatterOptions()
        _check_op("reduce_scatter_tensor_coalesced", opts.reduceOp)
        for out, inp in zip(outputs, inputs, strict=True):
            self._scatter_reduce_tensor(
                out, inp, opts.reduceOp, opts.timeout, "reduce_scatter_tensor_coalesced"
            )
        return _completed(outputs)

    reduce_scatter_tensor_coalesced = reduce_scatter_single_coalesced

    # ------------------------------------------------------------ gather / scatter
    def gather(
        self, output_tensors: list[list[torch.Tensor]], input_tensors: list[torch.Tensor], opts=None
    ) -> dist.Work:
        opts = opts if opts is not None else GatherOptions()
        st = _Staging("gather")
        outs = [[st.host(o, True) for o in lst] for lst in output_tensors]
        ins = [st.host(t, False) for t in input_tensors]
        self._gloo.gather(outs, ins, opts).wait()
        st.finish()
        return _completed(output_tensors)

    def scatter(
        self, output_tensors: list[torch.Tensor], input_tensors: list[list[torch.Tensor]], opts=None
    ) -> dist.Work:
        opts = opts if opts is not None else ScatterOptions()
        st = _Staging("scatter")
        outs = [st.host(o, True) for o in output_tensors]
        ins = [[st.host(t, False) for t in lst] for lst in input_tensors]
        self._gloo.scatter(outs, ins, opts).wait()
        st.finish()
        return _completed(output_tensors)

    # ------------------------------------------------------------ all-to-all
    def all_to_all_single(
        self,
        output: torch.Tensor,
        input: torch.Tensor,
        output_split_sizes: list[int],
        input_split_sizes: list[int],
        opts=None,
    ) -> dist.Work:
        opts = opts if opts is not None else AllToAllOptions()
        if output.dtype != input.dtype:
            raise TypeError(
                f"hccl all_to_all_single: dtypes differ ({output.dtype}, {input.dtype})"
            )
        st = _Staging("all_to_all_single")
        out = st.host(output, True)
        src = st.host(input, False)
        self._gloo.alltoall_base(
            out, src, list(output_split_sizes), list(input_split_sizes), opts
        ).wait()
        st.finish()
        return _completed([output])

    alltoall_base = all_to_all_single

    def alltoall(
        self, output_tensors: list[torch.Tensor], input_tensors: list[torch.Tensor], opts=None
    ) -> dist.Work:
        opts = opts if opts is not None else AllToAllOptions()
        n = self.size()
        if len(output_tensors) != n or len(input_tensors) != n:
            raise ValueError(f"hccl all_to_all: expected {n} input and {n} output tensors")
        dtypes = {t.dtype for t in (*output_tensors, *input_tensors)}
        if len(dtypes) != 1:
            raise TypeError(f"hccl all_to_all: tensors must share one dtype, got {dtypes}")
        st = _Staging("all_to_all")
        ins = [st.host(t, False).reshape(-1) for t in input_tensors]
        outs = [st.host(t, True) for t in output_tensors]
        send = torch.cat(ins) if ins else torch.empty(0)
        recv = torch.empty(sum(o.numel() for o in outs), dtype=send.dtype)
        self._gloo.alltoall_base(
            recv, send, [o.numel() for o in outs], [i.numel() for i in ins], opts
        ).wait()
        offset = 0
        for o in outs:
            o.view(-1).copy_(recv[offset : offset + o.numel()])
            offset += o.numel()
        st.finish()
        return _completed(output_tensors)

    # ------------------------------------------------------------ point to point
    def send(self, tensors: list[torch.Tensor], dstRank: int, tag: int) -> dist.Work:  # noqa: N803
        st = _Staging("send")
        hosts = [st.host(t, False) for t in tensors]
        return _PendingWork(self._gloo.send(hosts, dstRank, tag), st, tensors)

    def recv(self, tensors: list[torch.Tensor], srcRank: int, tag: int) -> dist.Work:  # noqa: N803
        st = _Staging("recv")
        hosts = [st.host(t, True) for t in tensors]
        return _PendingWork(self._gloo.recv(hosts, srcRank, tag), st, tensors)

    def recv_anysource(self, tensors: list[torch.Tensor], tag: int) -> dist.Work:
        st = _Staging("recv_anysource")
        hosts = [st.host(t, True) for t in tensors]
        return _PendingWork(self._gloo.recv_anysource(hosts, tag), st, tensors)

    # ------------------------------------------------------------ barrier
    def barrier(self, opts: Any = None) -> dist.Work:
        timeout = opts.timeout if opts is not None else None
        self._gloo.barrier(self._gloo_opts(BarrierOptions, timeout)).wait()
        return _completed([])


# --------------------------------------------------------------------------- registration


def _create(dist_backend_opts: Any, backend_options: Any) -> ProcessGroupHCCL:
    """torch.distributed's creator for ``hccl`` (extended API: it gets the group options)."""
    if backend_options is None:
        options = ProcessGroupHCCL.Options()
    elif isinstance(backend_options, ProcessGroupHCCL.Options):
        options = backend_options
    else:
        raise TypeError(
            "Expected backend_options argument to be of type ProcessGroupHCCL.Options, got "
            f"{type(backend_options).__name__}"
        )
    options._timeout = dist_backend_opts.timeout
    options.global_ranks_in_group = list(dist_backend_opts.global_ranks_in_group)
    options.group_id = dist_backend_opts.group_id
    options.group_name = dist_backend_opts.group_id
    return ProcessGroupHCCL(
        dist_backend_opts.store,
        dist_backend_opts.group_rank,
        dist_backend_opts.group_size,
        options,
    )


def is_hccl_available() -> bool:
    return BACKEND in dist.Backend.backend_list


def register() -> None:
    """Register ``hccl`` with torch.distributed for the ``npu`` device (idempotent)."""
    if not dist.is_available():
        return
    if BACKEND.upper() not in dist.Backend._plugins:
        dist.Backend.register_backend(BACKEND, _create, extended_api=True, devices=[DEVICE])
    if not hasattr(dist, "is_hccl_available"):
        dist.is_hccl_available = is_hccl_available
