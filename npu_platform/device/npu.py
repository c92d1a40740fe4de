"""The device backend: each method is one call into ``torch.npu`` / ``torch_npu``, kept thin."""

from __future__ import annotations

from typing import Any


class NPUBackend:
    device_type = "npu"

    def __init__(self) -> None:
        import torch
        import torch_npu  # registers torch.npu

        self._torch = torch
        self._torch_npu = torch_npu
        self._npu = torch.npu

    def torch_device(self, index: int | None = None) -> Any:
        return self._torch.device("npu", self.current_device() if index is None else index)

    def device_count(self) -> int:
        return int(self._npu.device_count())

    def current_device(self) -> int:
        return int(self._npu.current_device())

    def set_device(self, index: Any) -> None:
        self._npu.set_device(index)

    def synchronize(self, index: int | None = None) -> None:
        self._npu.synchronize(index)

    def new_stream(self, *args: Any, **kwargs: Any) -> Any:
        return self._npu.Stream(*args, **kwargs)

    def new_event(self, *args: Any, **kwargs: Any) -> Any:
        return self._npu.Event(*args, **kwargs)

    def current_stream(self, index: int | None = None) -> Any:
        return self._npu.current_stream(index)

    def stream_context(self, s: Any) -> Any:
        return self._npu.stream(s)

    def mem_get_info(self, index: int | None = None) -> tuple[int, int]:
        free, total = self._npu.mem_get_info(index)
        return int(free), int(total)

    def get_device_name(self, index: int | None = None) -> str:
        return str(self._npu.get_device_name(index))

    def get_device_properties(self, index: int | None = None) -> Any:
        return self._npu.get_device_properties(index)

    def memory_allocated(self, index: int | None = None) -> int:
        return int(self._npu.memory_allocated(index))

    def max_memory_allocated(self, index: int | None = None) -> int:
        return int(self._npu.max_memory_allocated(index))

    def memory_reserved(self, index: int | None = None) -> int:
        return int(self._npu.memory_reserved(index))

    def reset_peak_memory_stats(self, index: int | None = None) -> None:
        self._npu.reset_peak_memory_stats(index)

    def empty_cache(self) -> None:
        self._npu.empty_cache()

    def manual_seed_all(self, seed: int) -> None:
        self._npu.manual_seed_all(seed)

    # Memory pools over a pluggable allocator (npu_platform.memory.torch_route).
    def pluggable_allocator(self, path: str, alloc_fn_name: str, free_fn_name: str) -> Any:
        return self._torch_npu.npu.memory.NPUPluggableAllocator(path, alloc_fn_name, free_fn_name)

    def mem_pool(self, allocator: Any = None) -> Any:
        return self._npu.MemPool(allocator=allocator)

    def use_mem_pool(self, pool: Any, index: int | None = None) -> Any:
        return self._npu.use_mem_pool(pool, index)

    def graph(self, npu_graph: Any, **kwargs: Any) -> Any:
        return self._npu.graph(npu_graph, **kwargs)

    def graph_class(self) -> Any:
        """``torch.npu.NPUGraph``, or None where this torch_npu has no graph capture."""
        return getattr(self._npu, "NPUGraph", None)

    def hccl_process_group_class(self) -> Any:
        from torch_npu._C._distributed_c10d import ProcessGroupHCCL

        return ProcessGroupHCCL
