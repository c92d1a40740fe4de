"""``sgl_kernel_npu.mem_cache.allocator`` on the emulated NPU (CPU reference).

``alloc_extend_kernel[grid](prefix_lens, seq_lens, last_loc, free_pages, out_indices,
bs_upper, page_size, max_num_extend_tokens)`` is the paged KV allocator's extend step,
launched Triton-style (the grid is ignored). Request ``i`` grows from ``prefix_lens[i]`` to
``seq_lens[i]`` tokens; its new token slots are written to ``out_indices`` (requests one
after the other, in order) as:

1. the rest of its last, partly used page: ``last_loc[i] + 1, last_loc[i] + 2, ...`` up to
   the page boundary;
2. whole new pages, then
3. the start of one more new page for the remainder,

new pages taken from ``free_pages`` in order, each request after the pages of the requests
before it (a request needs ``ceil(seq / page_size) - ceil(prefix / page_size)`` of them);
slot ``p * page_size + offset`` for page ``p``. ``bs_upper`` and ``max_num_extend_tokens``
are launch sizes of the kernel and change nothing.
"""

from __future__ import annotations

import torch

from sgl_kernel_npu._emulation import TritonKernel, host

__all__ = ["alloc_extend_kernel"]


def _alloc_extend(
    pre_lens_ptr,
    seq_lens_ptr,
    last_loc_ptr,
    free_page_ptr,
    out_indices,
    bs_upper,
    page_size,
    max_num_extend_tokens,
    BLOCK_SIZE=2048,  # noqa: N803 - the kernel's parameter name
):
    del bs_upper, max_num_extend_tokens, BLOCK_SIZE
    pre = [int(v) for v in host(pre_lens_ptr).tolist()]
    seq = [int(v) for v in host(seq_lens_ptr).tolist()]
    last = [int(v) for v in host(last_loc_ptr).tolist()]
    if len(pre) != len(seq) or len(last) < len(seq):
        raise ValueError(
            f"prefix_lens ({len(pre)}), seq_lens ({len(seq)}) and last_loc ({len(last)}) "
            "must hold one entry per request"
        )
    free = host(free_page_ptr).reshape(-1).to(torch.int64)
    out = host(out_indices)
    ps = int(page_size)
    pos = 0  # write offset in out_indices
    page = 0  # next unused entry of free_pages
    pieces = []
    for i, (p, s) in enumerate(zip(pre, seq, strict=True)):
        if s < p:
            raise ValueError(f"request {i}: seq_len {s} is shorter than prefix_len {p}")
        ceil_pre = -(-p // ps) * ps
        n1 = min(s, ceil_pre) - p
        pieces.append(torch.arange(last[i] + 1, last[i] + 1 + n1, dtype=torch.int64))
        new_pages = -(-s // ps) - (-(-p // ps))
        if p + n1 < s:
            if page + new_pages > free.numel():
                raise ValueError(
                    f"request {i} needs {new_pages} new pages from entry {page} of free_pages, "
                    f"which holds {free.numel()}"
                )
            pages = free[page : page + new_pages]
            slots = (pages[:, None] * ps + torch.arange(ps)[None, :]).reshape(-1)
            pieces.append(slots[: s - p - n1])
        page += new_pages
        pos += s - p
    values = torch.cat(pieces) if pieces else torch.empty(0, dtype=torch.int64)
    if pos > out.numel():
        raise ValueError(f"out_indices holds {out.numel()} slots but {pos} are allocated")
    out[:pos] = values.to(out.dtype)


alloc_extend_kernel = TritonKernel("alloc_extend_kernel", _alloc_extend)
alloc_extend_kernel.__name__ = "alloc_extend_kernel"
