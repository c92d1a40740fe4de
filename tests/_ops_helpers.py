"""Shared helpers of the tests of npu_platform.ops: naive math the references are checked
against, written independently of the references (different gathers, explicit loops)."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

import torch

from npu_platform.spec.rules import FIA_PROMPT_BLOCK_MULTIPLE

# Tolerances: fp32 results against fp32 math; low-precision results against fp32 math on the
# same (already rounded) inputs.
TOL = {
    torch.float32: {"atol": 1e-5, "rtol": 1e-5},
    torch.float16: {"atol": 2e-3, "rtol": 2e-3},
    torch.bfloat16: {"atol": 2e-2, "rtol": 2e-2},
}


def assert_close(actual: torch.Tensor, expected: torch.Tensor, dtype: torch.dtype) -> None:
    torch.testing.assert_close(actual.float(), expected.float(), **TOL[dtype])


def causal_mask_2048(dtype: torch.dtype = torch.bool) -> torch.Tensor:
    return torch.triu(torch.ones(2048, 2048), diagonal=1).to(dtype)


def naive_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    scale: float,
    *,
    causal: bool,
    window: int | None = None,
    left_up: bool = False,
) -> torch.Tensor:
    """One request in float32: q (Sq, N, D), k/v (Skv, Nkv, D) -> (Sq, N, Dv).

    Causal is bottom-right aligned (query i sits at absolute position Skv - Sq + i) unless
    ``left_up``; ``window`` W keeps keys with ``pos_q - W < pos_k``.
    """
    sq, n, _ = q.shape
    skv, nkv, dv = v.shape
    group = n // nkv
    blocked = torch.zeros(sq, skv, dtype=torch.bool)  # the same for every head
    for i in range(sq):
        pos = i if left_up else skv - sq + i
        for j in range(skv):
            if (causal and j > pos) or (window is not None and j <= pos - window):
                blocked[i, j] = True
    out = torch.zeros(sq, n, dv)
    for h in range(n):
        kh = h // group
        scores = (q[:, h].double() @ k[:, kh].double().T) * scale  # (Sq, Skv)
        scores = scores.masked_fill(blocked, -math.inf)
        probs = torch.softmax(scores, dim=-1)
        probs = torch.nan_to_num(probs, nan=0.0)
        out[:, h] = (probs @ v[:, kh].double()).float()
    return out


@dataclass
class PagedBatch:
    query: torch.Tensor  # (T, N, D)
    key_cache: torch.Tensor  # (num_blocks, block_size, Nkv, D)
    value_cache: torch.Tensor
    block_table: torch.Tensor  # (B, max_blocks) int32
    q_lens: list[int]
    kv_lens: list[int]
    block_size: int

    @property
    def query_start_loc(self) -> list[int]:
        out = [0]
        for n in self.q_lens:
            out.append(out[-1] + n)
        return out

    def gather(self, b: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Request b's keys and values, one position at a time through the block table."""
        ks, vs = [], []
        for pos in range(self.kv_lens[b]):
            block = int(self.block_table[b, pos // self.block_size])
            ks.append(self.key_cache[block, pos % self.block_size])
            vs.append(self.value_cache[block, pos % self.block_size])
        nkv, d = self.key_cache.shape[2:]
        if not ks:
            return torch.zeros(0, nkv, d), torch.zeros(0, nkv, d)
        return torch.stack(ks).float(), torch.stack(vs).float()

    def expected(self, scale: float, *, causal: bool, window: int | None = None) -> torch.Tensor:
        outs = []
        start = 0
        for b, ql in enumerate(self.q_lens):
            k, v = self.gather(b)
            q = self.query[start : start + ql].float()
            outs.append(naive_attention(q, k, v, scale, causal=causal, window=window))
            start += ql
        return torch.cat(outs)


def mixed_requests(rng: random.Random, block_size: int) -> tuple[list[int], list[int]]:
    """(q_lens, kv_lens): decodes, a whole prefill, chunked prefills with a prefix."""
    reqs = [
        (1, rng.randint(2, 3 * block_size)),  # decode
        (rng.randint(2, 12), 0),  # prefill: kv_len = q_len
        (rng.randint(2, 9), rng.randint(1, 2 * block_size)),  # chunked prefill / prefix hit
        (1, 1),  # first decode step of a one-token prompt
        (1, rng.randint(block_size, 4 * block_size)),  # decode over several blocks
        (rng.randint(block_size, block_size + 5), rng.randint(0, block_size)),  # long chunk
    ]
    rng.shuffle(reqs)
    q_lens = [q for q, _ in reqs]
    kv_lens = [q + extra for q, extra in reqs]
    return q_lens, kv_lens


def make_paged_batch(
    seed: int,
    dtype: torch.dtype,
    *,
    num_heads: int = 8,
    num_kv_heads: int = 2,
    head_size: int = 32,
    block_size: int = FIA_PROMPT_BLOCK_MULTIPLE,
) -> PagedBatch:
    """A mixed batch over randomly permuted paged caches. The default block size is the one
    ``npu_fused_infer_attention_score`` documents for batches with prefills (128)."""
    rng = random.Random(seed)
    torch.manual_seed(seed)
    q_lens, kv_lens = mixed_requests(rng, block_size)
    blocks_per_req = [-(-n // block_size) for n in kv_lens]
    max_blocks = max(blocks_per_req) + 1  # a spare column of junk ids
    num_blocks = sum(blocks_per_req) + 3  # some blocks belong to nobody
    ids = list(range(num_blocks))
    rng.shuffle(ids)  # randomly permuted block tables
    table = torch.zeros(len(q_lens), max_blocks, dtype=torch.int32)
    it = iter(ids)
    for b, nb in enumerate(blocks_per_req):
        for i in range(max_blocks):
            table[b, i] = next(it) if i < nb else rng.randrange(num_blocks)
    shape = (num_blocks, block_size, num_kv_heads, head_size)
    key_cache = torch.randn(shape).to(dtype)  # junk everywhere, including unused slots
    value_cache = torch.randn(shape).to(dtype)
    query = torch.randn(sum(q_lens), num_heads, head_size).to(dtype)
    return PagedBatch(query, key_cache, value_cache, table, q_lens, kv_lens, block_size)


def neox_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """vLLM's rotate-half formula: x (T, N, rot), cos/sin (T, rot // 2)."""
    x = x.float()
    c, s = cos.float().unsqueeze(1), sin.float().unsqueeze(1)
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((x1 * c - x2 * s, x2 * c + x1 * s), dim=-1)


def gptj_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """GPT-J pairs as complex numbers: (x0 + i x1) * (cos + i sin)."""
    z = torch.view_as_complex(x.double().reshape(*x.shape[:-1], -1, 2).contiguous())
    w = torch.complex(cos.double(), sin.double())
    rotated = z * w.unsqueeze(1)
    return torch.view_as_real(rotated).reshape(x.shape).float()
