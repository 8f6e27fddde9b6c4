"""The `cudnn` attention backend: exact doc-masked causal sliding-window attention through cuDNN's packed layout.

The public jax.nn.dot_product_attention(implementation='cudnn') does causal + window but has no document mask, so
this uses JAX's private cuDNN entry point (jax._src.cudnn.fused_attention_stablehlo.dot_product_attention), which
takes packed segments as per-segment offsets and lengths of a static maximum count M. It is exact but measured
3-5x slower than the same window without documents (GPU.md); it is here as a second exact GPU backend and for
comparison. Differences from the triton backend: the softmax scale is a static float in cuDNN, so the traced scale
is multiplied into q (one extra bf16 rounding of q); and more than `max_segments` documents cannot be expressed, so
such a call returns NaN (loud, never silently wrong).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxrun.kernels.flash_attention import check_inputs

# cuDNN keeps softmax statistics of shape (max_segments, heads, T) in fp32: the default bound allows one document
# per this many rows on average, keeping that buffer at a few hundred MB for the training shapes.
ROWS_PER_SEGMENT_BOUND = 128


def default_max_segments(t: int) -> int:
    return max(1, -(-t // ROWS_PER_SEGMENT_BOUND))


def packed_segments(seg_ids: jax.Array, max_segments: int) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(offsets (M + 1,), lengths (M,), count) of the runs of equal ids, padded with -1 as cuDNN's packed layout wants."""
    t = seg_ids.shape[0]
    is_start = jnp.concatenate([jnp.ones((1,), bool), seg_ids[1:] != seg_ids[:-1]])
    count = jnp.sum(is_start)
    starts = jnp.nonzero(is_start, size=max_segments + 1, fill_value=t)[0].astype(jnp.int32)
    lengths = jnp.diff(starts)
    slot = jnp.arange(max_segments + 1)
    offsets = jnp.where(slot < count, starts, -1)
    lengths = jnp.where(slot[:-1] < count, lengths, -1)
    return offsets, lengths, count


def attention(q, k, v, seg_ids, scale, *, window: int, max_segments: int | None = None):
    """Same contract as jaxrun.kernels.flash_attention.attention; max_segments: static bound on the documents in
    seg_ids (default one per ROWS_PER_SEGMENT_BOUND rows); a call with more returns NaN."""
    from jax._src.cudnn.fused_attention_stablehlo import MaskType, dot_product_attention

    check_inputs(q, k, v, seg_ids, scale, window)
    t = q.shape[0]
    max_segments = max_segments or default_max_segments(t)
    offsets, lengths, count = packed_segments(seg_ids, max_segments)
    q_scaled = (q.astype(jnp.float32) * jnp.asarray(scale, jnp.float32).reshape(())).astype(q.dtype)
    out = dot_product_attention(
        q_scaled[None], k[None], v[None],
        q_seqlen=lengths[None], kv_seqlen=lengths[None], q_offsets=offsets[None], kv_offsets=offsets[None],
        scale=1.0,
        mask_type=MaskType.CAUSAL,
        sliding_window_length=min(window, t) + 1,  # cuDNN's window counts the query itself: keys (i - W - 1, i]
        qkv_layout="BTNH",
    )[0]
    return jnp.where(count <= max_segments, out, jnp.nan).astype(q.dtype)
