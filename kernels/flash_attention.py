"""Doc-masked, causal, sliding-window flash attention in jax-triton (the `triton` attention backend).

Row i sees key j iff seg_ids[j] == seg_ids[i] and i - window <= j <= i (recipe §1.5.6, §5.4). Because seg_ids is
non-decreasing and j <= i, "same segment" is the same as j >= segment_start[i], so the whole mask is one per-row lower
bound, lower[i] = max(segment_start[i], i - window), and the upper bound j <= i. The kernels read per-row segment starts
computed here in JAX; no T x T array exists anywhere.

Work is proportional to the visible pairs: a query block visits only the key blocks in
[max(qs - window, segment_start[qs]), qs + BLOCK_M), and a key block only the query blocks in
[ks, min(ke - 1 + window, segment_end[ke - 1] - 1)]. That block plan is computed in JAX (`query_block_ranges`,
`key_block_ranges`, tested on CPU against a brute-force mask) and read by each program. Blocks that are entirely
visible run without a mask; only the blocks cut by the window edge, a document start or the diagonal are masked.

Forward: FlashAttention-2 (online softmax in base 2, fp32 accumulation, P rounded to bf16 for P.V), saving the output
and the base-2 log-sum-exp.

Backward, with delta = rowsum(dO * O) computed in JAX:
- one kernel per key block for dK and dV. It also writes every dS tile it computes to a scratch buffer, in bf16, the
  rounding the dQ product uses anyway;
- then one kernel per query block for dQ = dS.K, which reads those tiles instead of recomputing S, P and dP. That is
  one exp per score in the backward instead of two, and one matrix product in dQ instead of three.
No atomics: the backward is deterministic.

The softmax scale is a traced 1-element array (YaRN changes it, recipe §1.7), and its gradient is returned too:
dL/dscale = sum_i q_i . dq_i / scale, accumulated per row inside the dQ kernel before the scale is applied.

Sequences whose length is not a multiple of the block size are padded here: padded rows form their own segment, so
no real row can see them, and their cotangents are zero.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import jax
import jax.numpy as jnp

try:
    import jax_triton as jt
    import triton
    import triton.language as tl

    _TRITON_IMPORT_ERROR = None
    _jit = triton.jit
except ImportError as e:  # CPU-only installs: input checks and segment bounds still work, the kernels do not.
    _TRITON_IMPORT_ERROR = e

    def _jit(fn):
        return fn


SUPPORTED_HEAD_DIMS = (64, 128)


@dataclass(frozen=True)
class KernelConfig:
    """Tile shape and launch settings of one kernel (BLOCK_M query rows x BLOCK_N key rows per tile)."""

    block_m: int
    block_n: int
    num_warps: int
    num_stages: int


@dataclass(frozen=True)
class AttentionConfig:
    fwd: KernelConfig
    dq: KernelConfig
    dkdv: KernelConfig

    def __post_init__(self):
        # dQ reads the dK dV kernel's dS tiles: a dQ key block must be one of its key blocks, and a dQ query block
        # must be made of whole tiles
        if self.dq.block_n != self.dkdv.block_n or self.dq.block_m % self.dkdv.block_m:
            raise ValueError(f"dq tiles {self.dq.block_m}x{self.dq.block_n} must be whole dK dV tiles "
                             f"{self.dkdv.block_m}x{self.dkdv.block_n}: the same key block, a multiple of its queries")

    @property
    def row_multiple(self) -> int:
        """Sequences are padded to a multiple of every tile dimension."""
        return max(max(c.block_m, c.block_n) for c in (self.fwd, self.dq, self.dkdv))  # all powers of two


# One entry per window class: (largest window in rows, head dim) -> config. Candidates were first screened offline
# with ptxas's register report for sm_90a, then timed on an H100 80GB HBM3 (jax 0.11.2, triton 3.6) with
# `python -m jaxrun.bench tune-attention`: at T=16,384 / W=128 and T=49,152 / W=1,664 the forward is fastest at
# 128 x 64 (0.089 / 0.442 ms; 128 x 128 within noise at the long window), dQ at 128 x 64 (0.33 / 1.71 ms fwd+bwd) and
# dK dV at 32 queries x 64 keys with 4 warps (0.29 / 1.53 ms fwd+bwd, against 0.32 / 1.76 at 32 x 128 with 8 warps).
# A second sweep at T=65,536 / W=384 (paired) and T=49,152 / W=768 found the same dK dV tile with 3 stages 3-4%
# faster (0.70 vs 0.72, 1.18 vs 1.23 ms). A third, on an H200 at phase 3's calls (T=49,152 / W=640 and 1,408, and
# T=98,304 / W=640 paired), found the forward 11-15% faster at 64 x 64 with 4 warps (0.366 vs 0.411 ms long, 0.302 vs
# 0.355 paired; smaller query tiles also skip more of the masked pairs) and dK dV with 3 stages 2-3% faster (1.448 vs
# 1.487, 1.231 vs 1.263 ms). Both adopted: the 28 attention GPU tests pass with them; the whole step is 1.1% / 0.3% /
# 0.6% faster in phases 1 / 2 / 3 and the same in the extension (ratios 0.989 / 0.997 / 0.994 / 1.001, noise ~0.3-0.7%),
# and the 300-step curve moves 0.002 at step 300 (docs/results/2026-12-02-h200-levers/). The row multiple stays 128.
# Since dQ reads the dK dV kernel's dS tiles (one product per score, no exp2), its fastest tile on an H200 at phase 3's
# calls is 64 x 64 with 4 warps: fwd+bwd 0.974 / 1.207 / 1.053 ms (short / long / paired) against 1.079 / 1.378 / 1.144
# for the recomputing kernels, and against 1.056 / 1.320 / 1.139 with the new kernel at 128 x 64 x 8 warps; the sweep
# at phase 1 short and extension long keeps dQ 64 x 64 (32 x 64 within noise) and dK dV 32 x 64 x 3 stages. Whole
# step 0.990 / 0.986 / 0.986 / 0.990 of the recomputing kernels; the 300-step curve moves +0.004 at step 300
# (docs/results/2026-12-03-h200-fifteenth/).
_CONFIGS: dict[tuple[int, int], AttentionConfig] = {
    (1 << 30, 128): AttentionConfig(KernelConfig(64, 64, 4, 3), KernelConfig(64, 64, 4, 3), KernelConfig(32, 64, 4, 3)),
    (1 << 30, 64): AttentionConfig(KernelConfig(64, 64, 4, 3), KernelConfig(64, 64, 4, 3), KernelConfig(64, 64, 4, 3)),
}


def config_for(window: int, head_dim: int) -> AttentionConfig:
    """The tile table entry for this window and head dim (the smallest window class that holds it)."""
    for (max_window, d), cfg in sorted(_CONFIGS.items()):
        if d == head_dim and window <= max_window:
            return cfg
    raise ValueError(f"no flash-attention tile config for head_dim={head_dim}; supported: {SUPPORTED_HEAD_DIMS}")


# ----------------------------------------------------------------------------------------------------------------
# Segment bounds (pure JAX)


def segment_bounds(seg_ids: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Per row: the first row of its segment and one past the last (segments = runs of equal ids)."""
    t = seg_ids.shape[0]
    rows = jnp.arange(t, dtype=jnp.int32)
    changes = seg_ids[1:] != seg_ids[:-1]
    is_start = jnp.concatenate([jnp.ones((1,), bool), changes])
    is_last = jnp.concatenate([changes, jnp.ones((1,), bool)])
    start = jax.lax.cummax(jnp.where(is_start, rows, 0), axis=0)
    end = jax.lax.cummin(jnp.where(is_last, rows + 1, t), axis=0, reverse=True)
    return start, end


def padded_segment_bounds(seg_ids: jax.Array, multiple: int) -> tuple[jax.Array, jax.Array]:
    """segment_bounds, padded to a multiple of `multiple` rows; the padded rows are one segment of their own, so no
    real row can see them and their (zero) cotangents reach no real row."""
    t = seg_ids.shape[0]
    start, end = segment_bounds(seg_ids)
    pad = -t % multiple
    if pad:
        start = jnp.concatenate([start, jnp.full((pad,), t, jnp.int32)])
        end = jnp.concatenate([end, jnp.full((pad,), t + pad, jnp.int32)])
    return start, end


@jax.tree_util.register_pytree_node_class
@dataclass(frozen=True)
class BlockPlan:
    """(programs, 4) int32 block ranges per kernel: [first, full_lo) masked, [full_lo, full_hi) unmasked,
    [full_hi, end) masked; the unmasked middle holds the blocks whose every pair is visible."""

    fwd: jax.Array
    dq: jax.Array
    dkdv: jax.Array

    def tree_flatten(self):
        return (self.fwd, self.dq, self.dkdv), None

    @classmethod
    def tree_unflatten(cls, _, children):
        return cls(*children)


def _ranges(first, full_lo, full_hi, end):
    full_lo = jnp.clip(full_lo, first, end)
    full_hi = jnp.clip(full_hi, full_lo, end)
    return jnp.stack([first, full_lo, full_hi, end], axis=-1).astype(jnp.int32)


def query_block_ranges(seg_start: jax.Array, window: int, block_m: int, block_n: int) -> jax.Array:
    """Key blocks of each query block [qs, qs + block_m): row i sees keys [lower_i, i], lower_i = max(seg_start_i,
    i - window), non-decreasing in i, so the block needs keys [lower_qs, qs + block_m - 1] and every row sees
    keys [lower_last, qs]."""
    qs = jnp.arange(0, seg_start.shape[0], block_m, dtype=jnp.int32)
    last = qs + block_m - 1
    first_key = jnp.maximum(seg_start[qs], qs - window)
    common_key = jnp.maximum(seg_start[last], last - window)
    return _ranges(first_key // block_n, -(-common_key // block_n), (qs + 1) // block_n, -(-(qs + block_m) // block_n))


def key_block_ranges(seg_end: jax.Array, window: int, block_m: int, block_n: int) -> jax.Array:
    """Query blocks of each key block [ks, ke): key j is seen by rows [j, min(j + window, seg_end_j - 1)], so the
    block is seen by rows [ks, min(ke - 1 + window, seg_end[ke - 1] - 1)], and every key by rows
    [ke - 1, min(ks + window, seg_end[ks] - 1)]."""
    ks = jnp.arange(0, seg_end.shape[0], block_n, dtype=jnp.int32)
    ke = ks + block_n
    last_row = jnp.minimum(ke - 1 + window, seg_end[ke - 1] - 1)
    common_last_row = jnp.minimum(ks + window, seg_end[ks] - 1)
    return _ranges(ks // block_m, -(-(ke - 1) // block_m), (common_last_row + 1) // block_m, last_row // block_m + 1)


def check_inputs(q, k, v, seg_ids, scale, window) -> None:
    """Shapes, dtypes and the window, with what to change when one is wrong."""
    if q.ndim != 3:
        raise ValueError(f"attention expects q, k, v of shape (T, heads, head_dim); got q.shape={q.shape}")
    if k.shape != q.shape or v.shape != q.shape:
        raise ValueError(f"q, k and v must have one shape; got q {q.shape}, k {k.shape}, v {v.shape}")
    for name, x in (("q", q), ("k", k), ("v", v)):
        if x.dtype != jnp.bfloat16:
            raise ValueError(f"{name} must be bfloat16 (got {x.dtype}); cast with .astype(jnp.bfloat16)")
    if q.shape[2] not in SUPPORTED_HEAD_DIMS:
        raise ValueError(f"head_dim {q.shape[2]} is not supported; supported: {SUPPORTED_HEAD_DIMS}")
    if seg_ids.shape != q.shape[:1] or not jnp.issubdtype(seg_ids.dtype, jnp.integer):
        raise ValueError(f"seg_ids must be an integer array of shape ({q.shape[0]},); got {seg_ids.dtype}{seg_ids.shape}")
    if jnp.shape(scale) not in ((), (1,)):
        raise ValueError(f"scale must be a scalar (a 0-d array is fine); got shape {jnp.shape(scale)}")
    if not isinstance(window, int) or isinstance(window, bool) or window < 0:
        raise ValueError(f"window must be a non-negative Python int (rows a query reaches back); got {window!r}")
    if q.shape[0] * q.shape[1] * q.shape[2] >= 2**31:
        raise ValueError(f"T * heads * head_dim = {q.shape[0] * q.shape[1] * q.shape[2]} overflows the kernels' int32 offsets")


# ----------------------------------------------------------------------------------------------------------------
# Triton kernels. Layout: q, k, v, out (T, H, D) row-major; lse, delta, dscale rows (H, T).


@_jit
def _load_ranges(ranges_ptr):
    """This program's [first, full_lo) masked, [full_lo, full_hi) unmasked, [full_hi, end) masked blocks."""
    row = ranges_ptr + tl.program_id(0) * 4
    return tl.load(row), tl.load(row + 1), tl.load(row + 2), tl.load(row + 3)


@_jit
def _fwd_inner(acc, l_i, m_i, q, k_ptr, v_ptr, offs_m, lower, start_blk, end_blk, qk_scale,
               ROW: tl.constexpr, D: tl.constexpr, BLOCK_N: tl.constexpr, MASKED: tl.constexpr):
    offs_d = tl.arange(0, D)
    for blk in range(start_blk, end_blk):
        offs_n = blk * BLOCK_N + tl.arange(0, BLOCK_N)
        k = tl.load(k_ptr + offs_n[:, None] * ROW + offs_d[None, :])
        qk = tl.dot(q, tl.trans(k)) * qk_scale
        if MASKED:
            visible = (offs_n[None, :] >= lower[:, None]) & (offs_n[None, :] <= offs_m[:, None])
            qk = tl.where(visible, qk, -1.0e6)  # finite: a row with no visible key yet gets alpha = 0 later, not NaN
        m_new = tl.maximum(m_i, tl.max(qk, 1))
        p = tl.math.exp2(qk - m_new[:, None])
        alpha = tl.math.exp2(m_i - m_new)
        l_i = l_i * alpha + tl.sum(p, 1)
        v = tl.load(v_ptr + offs_n[:, None] * ROW + offs_d[None, :])
        acc = tl.dot(p.to(tl.bfloat16), v, acc * alpha[:, None])
        m_i = m_new
    return acc, l_i, m_i


@_jit
def _attn_fwd_kernel(q_ptr, k_ptr, v_ptr, seg_start_ptr, ranges_ptr, scale_ptr, window, seq_len, out_ptr, lse_ptr,
                     H: tl.constexpr, D: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    qs = tl.program_id(0) * BLOCK_M
    head = tl.program_id(1)
    ROW: tl.constexpr = H * D
    offs_m = qs + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, D)
    q_ptr += head * D
    k_ptr += head * D
    v_ptr += head * D
    qk_scale = tl.load(scale_ptr) * 1.4426950408889634  # log2(e): the softmax runs in base 2
    q = tl.load(q_ptr + offs_m[:, None] * ROW + offs_d[None, :])
    lower = tl.maximum(tl.load(seg_start_ptr + offs_m), offs_m - window)

    first, full_lo, full_hi, end = _load_ranges(ranges_ptr)
    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, D], tl.float32)
    acc, l_i, m_i = _fwd_inner(acc, l_i, m_i, q, k_ptr, v_ptr, offs_m, lower, first, full_lo, qk_scale,
                               ROW, D, BLOCK_N, True)
    acc, l_i, m_i = _fwd_inner(acc, l_i, m_i, q, k_ptr, v_ptr, offs_m, lower, full_lo, full_hi, qk_scale,
                               ROW, D, BLOCK_N, False)
    acc, l_i, m_i = _fwd_inner(acc, l_i, m_i, q, k_ptr, v_ptr, offs_m, lower, full_hi, end, qk_scale,
                               ROW, D, BLOCK_N, True)
    acc = acc / l_i[:, None]
    tl.store(out_ptr + head * D + offs_m[:, None] * ROW + offs_d[None, :], acc.to(tl.bfloat16))
    tl.store(lse_ptr + head * seq_len + offs_m, m_i + tl.math.log2(l_i))


@_jit
def _attn_dq_kernel(q_ptr, k_ptr, ds_ptr, ranges_ptr, kv_ranges_ptr, scale_ptr, seq_len, max_tiles, dq_ptr, dscale_ptr,
                    H: tl.constexpr, D: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                    TILE_M: tl.constexpr):
    """dQ of BLOCK_M query rows = sum over key blocks of dS (read, TILE_M x BLOCK_N tiles) . K."""
    qs = tl.program_id(0) * BLOCK_M
    head = tl.program_id(1)
    ROW: tl.constexpr = H * D
    TILE: tl.constexpr = TILE_M * BLOCK_N
    offs_m = qs + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, D)
    offs_nl = tl.arange(0, BLOCK_N)
    tile = offs_m[:, None] * ROW + head * D + offs_d[None, :]
    k_ptr += head * D
    ds_ptr += head.to(tl.int64) * (seq_len // BLOCK_N) * max_tiles * TILE
    scale = tl.load(scale_ptr)
    qsub = offs_m // TILE_M  # each row's dK dV query block
    within = (offs_m % TILE_M)[:, None] * BLOCK_N + offs_nl[None, :]

    first, _, _, end = _load_ranges(ranges_ptr)
    dq = tl.zeros([BLOCK_M, D], tl.float32)
    for blk in range(first, end):
        kv = kv_ranges_ptr + blk * 4
        kv_first = tl.load(kv)
        kv_end = tl.load(kv + 3)
        # tiles the dK dV kernel visited for this key block; the others hold no visible pair (their dS is zero)
        seen = (qsub >= kv_first) & (qsub < kv_end)
        slot = (blk * max_tiles + qsub - kv_first).to(tl.int64) * TILE
        ds = tl.load(ds_ptr + slot[:, None] + within, mask=seen[:, None], other=0.0)
        offs_n = blk * BLOCK_N + offs_nl
        k = tl.load(k_ptr + offs_n[:, None] * ROW + offs_d[None, :])
        dq = tl.dot(ds, k, dq)
    q = tl.load(q_ptr + tile)
    # dL/dscale = sum_ij dS_ij (q_i . k_j) = sum_i q_i . (sum_j dS_ij k_j): this row's share, before dq is scaled.
    tl.store(dscale_ptr + head * seq_len + offs_m, tl.sum(q.to(tl.float32) * dq, 1))
    tl.store(dq_ptr + tile, (dq * scale).to(tl.bfloat16))


@_jit
def _dkdv_inner(dk, dv, k, v, q_ptr, do_ptr, lse_ptr, delta_ptr, seg_start_ptr, ds_ptr, offs_n, window, first_blk,
                start_blk, end_blk, qk_scale, ROW: tl.constexpr, D: tl.constexpr, BLOCK_M: tl.constexpr,
                BLOCK_N: tl.constexpr, MASKED: tl.constexpr):
    offs_d = tl.arange(0, D)
    # dS tile j of this key block at ds_ptr + j * BLOCK_M * BLOCK_N, stored (query, key) row-major for the dQ kernel
    ds_within = tl.arange(0, BLOCK_N)[:, None] + tl.arange(0, BLOCK_M)[None, :] * BLOCK_N
    for blk in range(start_blk, end_blk):
        offs_m = blk * BLOCK_M + tl.arange(0, BLOCK_M)
        q = tl.load(q_ptr + offs_m[:, None] * ROW + offs_d[None, :])
        lse = tl.load(lse_ptr + offs_m)
        p_t = tl.math.exp2(tl.dot(k, tl.trans(q)) * qk_scale - lse[None, :])  # (BLOCK_N keys, BLOCK_M queries)
        if MASKED:
            lower = tl.maximum(tl.load(seg_start_ptr + offs_m), offs_m - window)
            visible = (offs_n[:, None] >= lower[None, :]) & (offs_n[:, None] <= offs_m[None, :])
            p_t = tl.where(visible, p_t, 0.0)
        do = tl.load(do_ptr + offs_m[:, None] * ROW + offs_d[None, :])
        dv = tl.dot(p_t.to(tl.bfloat16), do, dv)
        delta = tl.load(delta_ptr + offs_m)
        ds_t = (p_t * (tl.dot(v, tl.trans(do)) - delta[None, :])).to(tl.bfloat16)
        tl.store(ds_ptr + (blk - first_blk).to(tl.int64) * (BLOCK_M * BLOCK_N) + ds_within, ds_t)
        dk = tl.dot(ds_t, q, dk)
    return dk, dv


@_jit
def _attn_dkdv_kernel(q_ptr, k_ptr, v_ptr, do_ptr, seg_start_ptr, ranges_ptr, lse_ptr, delta_ptr, scale_ptr, window,
                      seq_len, max_tiles, dk_ptr, dv_ptr, ds_ptr,
                      H: tl.constexpr, D: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    ks = tl.program_id(0) * BLOCK_N
    head = tl.program_id(1)
    ROW: tl.constexpr = H * D
    offs_n = ks + tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, D)
    tile = offs_n[:, None] * ROW + head * D + offs_d[None, :]
    q_ptr += head * D
    do_ptr += head * D
    lse_ptr += head * seq_len
    delta_ptr += head * seq_len
    ds_ptr += ((head * (seq_len // BLOCK_N) + tl.program_id(0)).to(tl.int64) * max_tiles) * (BLOCK_M * BLOCK_N)
    scale = tl.load(scale_ptr)
    qk_scale = scale * 1.4426950408889634
    k = tl.load(k_ptr + tile)
    v = tl.load(v_ptr + tile)

    first, full_lo, full_hi, end = _load_ranges(ranges_ptr)
    dk = tl.zeros([BLOCK_N, D], tl.float32)
    dv = tl.zeros([BLOCK_N, D], tl.float32)
    dk, dv = _dkdv_inner(dk, dv, k, v, q_ptr, do_ptr, lse_ptr, delta_ptr, seg_start_ptr, ds_ptr, offs_n, window, first,
                         first, full_lo, qk_scale, ROW, D, BLOCK_M, BLOCK_N, True)
    dk, dv = _dkdv_inner(dk, dv, k, v, q_ptr, do_ptr, lse_ptr, delta_ptr, seg_start_ptr, ds_ptr, offs_n, window, first,
                         full_lo, full_hi, qk_scale, ROW, D, BLOCK_M, BLOCK_N, False)
    dk, dv = _dkdv_inner(dk, dv, k, v, q_ptr, do_ptr, lse_ptr, delta_ptr, seg_start_ptr, ds_ptr, offs_n, window, first,
                         full_hi, end, qk_scale, ROW, D, BLOCK_M, BLOCK_N, True)
    tl.store(dk_ptr + tile, (dk * scale).to(tl.bfloat16))
    tl.store(dv_ptr + tile, dv.to(tl.bfloat16))


# ----------------------------------------------------------------------------------------------------------------
# JAX side


def _require_triton():
    if _TRITON_IMPORT_ERROR is not None:
        raise RuntimeError(
            "the triton attention backend needs a CUDA GPU with jax-triton and triton installed "
            f"(pip install -e '.[cuda13]'); import failed with: {_TRITON_IMPORT_ERROR}. "
            "Use the 'xla' attention backend on this machine."
        )


def _forward(q, k, v, seg_start, ranges, scale, window, cfg: KernelConfig):
    t, h, d = q.shape
    return jt.triton_call(
        q, k, v, seg_start, ranges, scale, window, t,
        kernel=_attn_fwd_kernel,
        out_shape=(jax.ShapeDtypeStruct(q.shape, q.dtype), jax.ShapeDtypeStruct((h, t), jnp.float32)),
        grid=(t // cfg.block_m, h),
        num_warps=cfg.num_warps,
        num_stages=cfg.num_stages,
        name="flash_attention_fwd",
        H=h, D=d, BLOCK_M=cfg.block_m, BLOCK_N=cfg.block_n,
    )


def max_tiles_per_key_block(window: int, block_m: int, block_n: int) -> int:
    """The most query blocks one key block [ks, ks + block_n) is seen by: rows [ks, ks + block_n - 1 + window], so
    (block_n - 1 + window) // block_m + 1 of them (ks is a multiple of block_n, which block_m divides)."""
    return (block_n - 1 + window) // block_m + 1


def _backward(q, k, v, seg_start, plan, scale, out, lse, dout, window, cfgs: AttentionConfig):
    t, h, d = q.shape
    delta = jnp.sum(out.astype(jnp.float32) * dout.astype(jnp.float32), axis=-1).T  # (H, T)
    kv = cfgs.dkdv
    max_tiles = max_tiles_per_key_block(window, kv.block_m, kv.block_n)
    # every (head, key block) has max_tiles slots; only the visited ones are written, and only those are read
    ds_elems = h * (t // kv.block_n) * max_tiles * kv.block_m * kv.block_n
    dk, dv, ds = jt.triton_call(
        q, k, v, dout, seg_start, plan.dkdv, lse, delta, scale, window, t, max_tiles,
        kernel=_attn_dkdv_kernel,
        out_shape=(jax.ShapeDtypeStruct(k.shape, k.dtype), jax.ShapeDtypeStruct(v.shape, v.dtype),
                   jax.ShapeDtypeStruct((ds_elems,), jnp.bfloat16)),
        grid=(t // kv.block_n, h),
        num_warps=kv.num_warps,
        num_stages=kv.num_stages,
        name="flash_attention_dkdv",
        H=h, D=d, BLOCK_M=kv.block_m, BLOCK_N=kv.block_n,
    )
    dq, dscale_rows = jt.triton_call(
        q, k, ds, plan.dq, plan.dkdv, scale, t, max_tiles,
        kernel=_attn_dq_kernel,
        out_shape=(jax.ShapeDtypeStruct(q.shape, q.dtype), jax.ShapeDtypeStruct((h, t), jnp.float32)),
        grid=(t // cfgs.dq.block_m, h),
        num_warps=cfgs.dq.num_warps,
        num_stages=cfgs.dq.num_stages,
        name="flash_attention_dq",
        H=h, D=d, BLOCK_M=cfgs.dq.block_m, BLOCK_N=cfgs.dq.block_n, TILE_M=kv.block_m,
    )
    return dq, dk, dv, jnp.sum(dscale_rows).reshape(1)


@functools.partial(jax.custom_vjp, nondiff_argnums=(6, 7))
def _flash(q, k, v, seg_start, plan, scale, window, cfgs):
    return _forward(q, k, v, seg_start, plan.fwd, scale, window, cfgs.fwd)[0]


def _flash_fwd(q, k, v, seg_start, plan, scale, window, cfgs):
    out, lse = _forward(q, k, v, seg_start, plan.fwd, scale, window, cfgs.fwd)
    return out, (q, k, v, seg_start, plan, scale, out, lse)


def _flash_bwd(window, cfgs, res, dout):
    q, k, v, seg_start, plan, scale, out, lse = res
    dq, dk, dv, dscale = _backward(q, k, v, seg_start, plan, scale, out, lse, dout, window, cfgs)
    return dq, dk, dv, None, None, dscale


_flash.defvjp(_flash_fwd, _flash_bwd)


def attention(q, k, v, seg_ids, scale, *, window: int, config: AttentionConfig | None = None):
    """Doc-masked causal sliding-window attention: (T, H, d) bf16 q, k, v -> (T, H, d) bf16, differentiable.

    seg_ids: (T,) int, non-decreasing (documents are contiguous runs); scale: f32 scalar, may be traced;
    window: static int, rows a query reaches back (key j visible iff same segment and i - window <= j <= i).
    config: tile settings; default from the tuned table for this window and head dim.
    """
    check_inputs(q, k, v, seg_ids, scale, window)
    _require_triton()
    t = q.shape[0]
    window = min(window, t)  # same mask; keeps window + row inside int32
    cfgs = config or config_for(window, q.shape[2])
    seg_start, seg_end = padded_segment_bounds(seg_ids, cfgs.row_multiple)
    pad = seg_start.shape[0] - t
    if pad:
        q, k, v = (jnp.pad(x, ((0, pad), (0, 0), (0, 0))) for x in (q, k, v))
    plan = BlockPlan(
        fwd=query_block_ranges(seg_start, window, cfgs.fwd.block_m, cfgs.fwd.block_n),
        dq=query_block_ranges(seg_start, window, cfgs.dq.block_m, cfgs.dq.block_n),
        dkdv=key_block_ranges(seg_end, window, cfgs.dkdv.block_m, cfgs.dkdv.block_n),
    )
    scale = jnp.asarray(scale, jnp.float32).reshape(1)
    out = _flash(q, k, v, seg_start, plan, scale, window, cfgs)
    return out[:t] if pad else out
