"""vLLM V1 attention backend for the NPU: ``NPU_ATTN``.

Per step and KV-cache group, :class:`NPUAttentionMetadataBuilder` builds one
:class:`NPUAttentionMetadata` (host-side lengths, block table, slot mapping), shared by every
layer. Per layer, :class:`NPUAttentionImpl` then makes exactly two kernel calls:

* ``do_kv_cache_update``: one :func:`npu_platform.ops.write_kv_cache`
  (``npu_scatter_pa_kv_cache``) storing the step's keys and values in their slots;
* ``forward``: one attention kernel over the paged cache. For float16 / bfloat16 that is
  :func:`npu_platform.ops.paged_attention` (``npu_fused_infer_attention_score``, TND layout,
  ``block_table``), which covers prefill, chunked prefill, decode and mixed batches, GQA
  and sliding windows. The fused inference kernel has no float32 mode, so float32 models
  gather their context from the paged cache (a plain index_select) and run
  :func:`npu_platform.ops.fusion_attention` (``npu_fusion_attention``, TND varlen), which has.

KV-cache layout. vLLM 0.32 describes a layer's cache as a logical ``[B, H, N, C]`` view
(blocks, head slots, tokens per block, content) over one allocation, with a physical order
chosen from the backends' :meth:`supported_kv_cache_layouts`. The NPU kernels want separate,
contiguous key and value caches of shape ``(num_blocks, block_size, num_kv_heads,
head_size)``. :meth:`NPUAttentionBackend.customize_spec` therefore publishes two head slots
(slot 0 keys, slot 1 values) whose content is a whole token's ``num_kv_heads * head_size``
values, and the only layout we accept is ``LHBNC`` (per layer ``[H, B, N, C]``): slot 0 of
every block is one contiguous key plane and slot 1 the value plane.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from vllm.v1.attention.backend import (
    AttentionBackend,
    AttentionCGSupport,
    AttentionImpl,
    AttentionMetadataBuilder,
    AttentionType,
    CommonAttentionMetadata,
    MultipleOf,
)
from vllm.v1.kv_cache_interface import AttentionSpec, KVCacheLayout

from npu_platform import ops
from npu_platform.spec import rules

if TYPE_CHECKING:
    from vllm.config import VllmConfig
    from vllm.v1.kv_cache_interface import KVCacheSpec

#: Paged-KV block sizes (tokens) the attention kernel takes: our calls are TND with head
#: sizes below 512, which npu_fused_infer_attention_score serves in its prompt branch even
#: for decode-only steps, and there a paged block is a multiple of 128 of at most 512 (the
#: rule ``fia.paged.block_size.prompt`` in :mod:`npu_platform.spec.rules`, with its
#: citation). 128 is also the one size vllm-ascend declares.
KERNEL_BLOCK_MULTIPLE = rules.FIA_PROMPT_BLOCK_MULTIPLE
MAX_KERNEL_BLOCK_SIZE = rules.FIA_MAX_BLOCK_SIZE
#: Head sizes: multiples of 16 (``fia.head_dim``); at most 256, because D = 512 takes the
#: kernel's other TND branch, which no hardware-proven user runs (vllm-ascend routes such
#: heads away from this kernel; see docs/kernel-precedents.md).
MAX_HEAD_SIZE = 256

_build_lock = threading.Lock()
_build_count = 0


def metadata_build_count() -> int:
    """How many times attention metadata was built in this process (tests read this)."""
    return _build_count


def reset_metadata_build_count() -> None:
    global _build_count
    with _build_lock:
        _build_count = 0


def _dtype_size(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()


class NPUAttentionBackend(AttentionBackend):
    forward_includes_kv_cache_update: bool = False

    supported_dtypes: ClassVar[list[torch.dtype]] = [
        torch.float16,
        torch.bfloat16,
        torch.float32,
    ]
    supported_kv_cache_dtypes: ClassVar[list[Any]] = ["auto", "float16", "bfloat16"]

    @staticmethod
    def get_name() -> str:
        return "NPU_ATTN"

    @staticmethod
    def get_impl_cls() -> type[NPUAttentionImpl]:
        return NPUAttentionImpl

    @staticmethod
    def get_builder_cls() -> type[NPUAttentionMetadataBuilder]:
        return NPUAttentionMetadataBuilder

    @staticmethod
    def get_supported_kernel_block_sizes(
        kv_cache_spec: KVCacheSpec | None = None,
    ) -> list[int | MultipleOf]:
        return [MultipleOf(KERNEL_BLOCK_MULTIPLE)]

    @classmethod
    def supports_block_size(cls, block_size: int | None) -> bool:
        if block_size is None:
            return True
        return 0 < block_size <= MAX_KERNEL_BLOCK_SIZE and block_size % KERNEL_BLOCK_MULTIPLE == 0

    @classmethod
    def get_preferred_block_size(cls, default_block_size: int) -> int:
        from npu_platform.vllm.platform import DEFAULT_BLOCK_SIZE

        return DEFAULT_BLOCK_SIZE

    @classmethod
    def supports_head_size(cls, head_size: int) -> bool:
        return 0 < head_size <= MAX_HEAD_SIZE and head_size % 16 == 0

    @classmethod
    def supports_sliding_window(cls) -> bool:
        return True

    @classmethod
    def supports_attn_type(cls, attn_type: str) -> bool:
        return attn_type == AttentionType.DECODER

    @classmethod
    def customize_spec(cls, spec: AttentionSpec) -> AttentionSpec:
        """Two head slots (keys, values), each holding one token's keys or values."""
        if spec.state_content_bytes is not None or spec.num_head_slots is not None:
            return spec
        if spec.head_size != spec.head_size_v:
            raise ValueError(
                "NPU_ATTN needs equal key and value head sizes, got "
                f"{spec.head_size} and {spec.head_size_v}."
            )
        return replace(
            spec,
            num_head_slots=2,
            state_content_bytes=spec.num_kv_heads * spec.head_size * _dtype_size(spec.dtype),
        )

    @classmethod
    def supported_kv_cache_layouts(cls) -> tuple[KVCacheLayout, ...]:
        # Key plane and value plane each span every block: the head-slot axis outermost.
        return (KVCacheLayout.LHBNC,)


def split_kv_cache(
    kv_cache: torch.Tensor, num_kv_heads: int, head_size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The layer's ``[B, 2, N, H*D]`` view -> contiguous key and value caches ``(B, N, H, D)``."""
    planes = kv_cache.transpose(0, 1)
    num_blocks, block_size = planes.shape[1], planes.shape[2]
    shape = (num_blocks, block_size, num_kv_heads, head_size)
    key_cache = planes[0].view(shape)
    value_cache = planes[1].view(shape)
    return key_cache, value_cache


@dataclass
class NPUAttentionMetadata:
    """One step's attention inputs, shared by every layer of a KV-cache group."""

    num_actual_tokens: int
    """Query tokens of real requests (padding excluded)."""
    num_reqs: int
    max_query_len: int
    max_seq_len: int
    query_start_loc: torch.Tensor
    """(num_reqs + 1,) cumulative query offsets on the device."""
    query_start_loc_cpu: torch.Tensor
    """The same on the host: the kernels take lengths as host integer lists."""
    seq_lens: torch.Tensor
    """(num_reqs,) KV length (context + this step's tokens) per request, on the device."""
    seq_lens_cpu: torch.Tensor
    block_table: torch.Tensor
    """(num_reqs, max_blocks) int32 block ids."""
    slot_mapping: torch.Tensor
    """(num_actual_tokens,) cache slot of each query token."""
    causal: bool = True
    kv_gather_index: torch.Tensor | None = None
    """Float32 path only: the cache slot of every context token, request after request."""
    cu_seqlens_kv_cpu: torch.Tensor | None = None
    """Float32 path only: cumulative KV lengths ``[0, L0, L0 + L1, ...]``."""


class NPUAttentionMetadataBuilder(AttentionMetadataBuilder[NPUAttentionMetadata]):
    _cudagraph_support: ClassVar[AttentionCGSupport] = AttentionCGSupport.NEVER
    # The kernel takes prefills and decodes in any order: no batch reordering.
    reorder_batch_threshold: int | None = None

    def __init__(
        self,
        kv_cache_spec: KVCacheSpec,
        layer_names: list[str],
        vllm_config: VllmConfig,
        device: torch.device,
    ) -> None:
        super().__init__(kv_cache_spec, layer_names, vllm_config, device)
        self.block_size = kv_cache_spec.block_size
        self.dtype = getattr(kv_cache_spec, "dtype", None)
        # Only without speculative decoding are the host-side sequence lengths exact.
        self.exact_cpu_seq_lens = vllm_config.speculative_config is None

    def build(
        self,
        common_prefix_len: int,
        common_attn_metadata: CommonAttentionMetadata,
        fast_build: bool = False,
    ) -> NPUAttentionMetadata:
        global _build_count
        with _build_lock:
            _build_count += 1
        cm = common_attn_metadata
        if isinstance(cm.causal, torch.Tensor) or not cm.causal:
            raise NotImplementedError("NPU_ATTN supports causal decoder attention only.")
        num_reqs = cm.num_reqs
        query_start_loc_cpu = cm.query_start_loc_cpu[: num_reqs + 1]
        num_actual_tokens = int(query_start_loc_cpu[-1])
        if self.exact_cpu_seq_lens and cm.seq_lens_cpu_upper_bound is not None:
            seq_lens_cpu = cm.seq_lens_cpu_upper_bound[:num_reqs]
        else:
            seq_lens_cpu = cm.seq_lens[:num_reqs].to("cpu")
        block_table = cm.block_table_tensor[:num_reqs]
        if block_table.dtype != torch.int32:
            block_table = block_table.to(torch.int32)
        metadata = NPUAttentionMetadata(
            num_actual_tokens=num_actual_tokens,
            num_reqs=num_reqs,
            max_query_len=cm.max_query_len,
            max_seq_len=cm.max_seq_len,
            query_start_loc=cm.query_start_loc[: num_reqs + 1],
            query_start_loc_cpu=query_start_loc_cpu,
            seq_lens=cm.seq_lens[:num_reqs],
            seq_lens_cpu=seq_lens_cpu,
            block_table=block_table,
            slot_mapping=cm.slot_mapping[:num_actual_tokens],
        )
        if self.dtype == torch.float32:
            self._add_gather_index(metadata)
        return metadata

    def _add_gather_index(self, md: NPUAttentionMetadata) -> None:
        """Slots of every context token (float32 path): one index for all layers."""
        lens = md.seq_lens_cpu.to(torch.int64)
        cu = torch.zeros(md.num_reqs + 1, dtype=torch.int64)
        torch.cumsum(lens, 0, out=cu[1:])
        total = int(cu[-1])
        req = torch.repeat_interleave(torch.arange(md.num_reqs), lens)
        pos = torch.arange(total) - torch.repeat_interleave(cu[:-1], lens)
        req = req.to(self.device)
        pos = pos.to(self.device)
        blocks = md.block_table.to(torch.int64)[req, pos // self.block_size]
        md.kv_gather_index = blocks * self.block_size + pos % self.block_size
        md.cu_seqlens_kv_cpu = cu


class NPUAttentionImpl(AttentionImpl[NPUAttentionMetadata]):
    def __init__(
        self,
        num_heads: int,
        head_size: int,
        scale: float,
        num_kv_heads: int | None = None,
        alibi_slopes: list[float] | None = None,
        sliding_window: int | None = None,
        kv_cache_dtype: str = "auto",
        logits_soft_cap: float | None = None,
        attn_type: str = AttentionType.DECODER,
        kv_sharing_target_layer_name: str | None = None,
        **unsupported: Any,
    ) -> None:
        problems = []
        if alibi_slopes is not None:
            problems.append("ALiBi slopes (the fused attention kernel has no ALiBi bias)")
        if logits_soft_cap not in (None, 0, 0.0):
            problems.append(
                f"logits soft cap {logits_soft_cap} (the fused attention kernel cannot cap logits)"
            )
        if attn_type != AttentionType.DECODER:
            problems.append(f"attention type {attn_type!r} (decoder self-attention only)")
        if kv_cache_dtype not in ("auto", "float16", "bfloat16"):
            problems.append(f"kv_cache_dtype {kv_cache_dtype!r} (use 'auto')")
        if unsupported:
            problems.append(f"options {sorted(unsupported)}")
        if problems:
            raise NotImplementedError(
                "NPU_ATTN cannot run this attention layer: " + "; ".join(problems) + "."
            )
        self.num_heads = num_heads
        self.head_size = head_size
        self.scale = float(scale)
        self.num_kv_heads = num_heads if num_kv_heads is None else num_kv_heads
        if self.num_heads % self.num_kv_heads != 0:
            raise ValueError(
                f"NPU_ATTN: {self.num_heads} query heads are not a multiple of "
                f"{self.num_kv_heads} KV heads."
            )
        self.sliding_window = sliding_window
        self.kv_cache_dtype = kv_cache_dtype
        self.attn_type = attn_type
        self.kv_sharing_target_layer_name = kv_sharing_target_layer_name

    def do_kv_cache_update(
        self,
        layer: Any,
        key: torch.Tensor,
        value: torch.Tensor,
        kv_cache: torch.Tensor,
        slot_mapping: torch.Tensor,
    ) -> None:
        """Write this step's keys and values into their cache slots: one kernel call."""
        if kv_cache.numel() == 0:
            return
        metadata = _layer_metadata(layer)
        if metadata is None:  # dummy/profiling run: slots are placeholders, nothing to keep
            return
        num_tokens = metadata.num_actual_tokens
        key_cache, value_cache = split_kv_cache(kv_cache, self.num_kv_heads, self.head_size)
        ops.write_kv_cache(
            key[:num_tokens],
            value[:num_tokens],
            key_cache,
            value_cache,
            slot_mapping[:num_tokens],
        )

    def forward(
        self,
        layer: Any,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        kv_cache: torch.Tensor,
        attn_metadata: NPUAttentionMetadata,
        output: torch.Tensor,
        output_scale: torch.Tensor | None = None,
        output_block_scale: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Attention of every query token over its request's cached context: one kernel."""
        if output_scale is not None or output_block_scale is not None:
            raise NotImplementedError("NPU_ATTN does not fuse output quantization.")
        if attn_metadata is None:  # profiling run: no cache, nothing to attend to
            return output.fill_(0)
        md = attn_metadata
        n = md.num_actual_tokens
        key_cache, value_cache = split_kv_cache(kv_cache, self.num_kv_heads, self.head_size)
        if query.dtype == torch.float32:
            out = self._attend_float32(query[:n], key_cache, value_cache, md)
        else:
            out = ops.paged_attention(
                query[:n],
                key_cache,
                value_cache,
                block_table=md.block_table,
                query_start_loc=md.query_start_loc_cpu,
                seq_lens_kv=md.seq_lens_cpu,
                num_heads=self.num_heads,
                num_kv_heads=self.num_kv_heads,
                scale=self.scale,
                causal=True,
                sliding_window=self.sliding_window,
            )
        output[:n].copy_(out.view(n, self.num_heads, -1))
        return output

    def _attend_float32(
        self,
        query: torch.Tensor,
        key_cache: torch.Tensor,
        value_cache: torch.Tensor,
        md: NPUAttentionMetadata,
    ) -> torch.Tensor:
        assert md.kv_gather_index is not None and md.cu_seqlens_kv_cpu is not None
        flat = (-1, self.num_kv_heads, self.head_size)
        keys = key_cache.view(flat).index_select(0, md.kv_gather_index)
        values = value_cache.view(flat).index_select(0, md.kv_gather_index)
        window = None if self.sliding_window is None else (self.sliding_window - 1, 0)
        return ops.fusion_attention(
            query,
            keys,
            values,
            num_heads=self.num_heads,
            scale=self.scale,
            layout="TND",
            cu_seqlens_q=md.query_start_loc_cpu,
            cu_seqlens_kv=md.cu_seqlens_kv_cpu,
            causal=True,
            window=window,
        )


def _layer_metadata(layer: Any) -> NPUAttentionMetadata | None:
    """This step's metadata for ``layer`` from vLLM's forward context (None when profiling)."""
    from vllm.forward_context import get_forward_context, is_forward_context_available

    if not is_forward_context_available():
        return None
    metadata = get_forward_context().attn_metadata
    if isinstance(metadata, list):
        metadata = metadata[0]
    if isinstance(metadata, dict):
        metadata = metadata.get(getattr(layer, "layer_name", None))
    return metadata if isinstance(metadata, NPUAttentionMetadata) else None
