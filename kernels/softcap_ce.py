"""The fused soft-capped multi-token cross entropy (recipe §2.1, §7.2) as jax-triton kernels.

z = a · σ((ℓ + b) / c) in fp32 from the bf16 logits (formed as ℓ·(1/c) + b/c, as the reference kernel does);
lse_i = log Σ_j exp(z_ij) over all V columns; loss_i = Σ_k [i+k < T] · w_k · (lse_i − z_{i, tgt[i+k]}), where the rows
may be several sequences of ROW tokens end to end (several virtual ranks in one forward), i and T then counting within
each (ROW = T: one sequence, and the kernels are the one-sequence kernels instruction for instruction).
The forward streams each row once and saves lse (and the small (T, K) table of lse_i − z_{i, tgt[i+k]}, from which
the weights' gradient follows); the backward streams the row again, recomputes z and writes
dℓ_ij = g_i · (S_i·p_ij − Σ_k [i+k < T]·w_k·[j = tgt[i+k]]) · (1/c)·z_ij·(1 − σ_ij) in bf16, S_i = Σ_k [i+k < T]·w_k:
every column first without the target sum, then the row's ≤ K target columns again with it.
No fp32 copy of the logits is ever made.

Weights are used as given on both sides (zero padding contributes nothing). The reference's forward skips weights
≤ 0 while its backward does not; every scheduled weight is positive, so we keep the two sides consistent instead
(recipe §14.7). A target outside [0, V) is skipped in the forward, as in the reference; targets are token ids, so this
never happens with real data.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Sequence

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np

from jaxrun import ops  # the xla FP8 head's quantiser and products, which the fused head loss runs around its kernel
from jaxrun.kernels.triton_runtime import jax_triton, tl, triton


@dataclass(frozen=True)
class RowLaunch:
    """One program per row: columns per loop step, columns per step of the masked tail (V need not be a multiple of
    block), and warps per program."""

    block: int
    tail_block: int
    num_warps: int


# The fastest of a sweep on an H100 at T = 16,384 (forward: 0.99-1.08 ms for every launch tried, within noise;
# backward 1.68 ms, 1.74-2.47 ms for the others).
FORWARD_LAUNCH = RowLaunch(block=1024, tail_block=1024, num_warps=4)
BACKWARD_LAUNCH = RowLaunch(block=4096, tail_block=1024, num_warps=8)

# The kernels sum exp(z − a), which is ≤ 1 since z < a; each term stays ≥ exp(−a) > 0 in fp32 only while a is below
# about 87 (fp32's smallest normal is e^-87), so larger caps are refused.
MAX_CAP = 80.0

# The fused FP8-head loss (head_loss below): the forward pass of the row is the forward kernel's, with its launch, so
# lse and the loss are bit for bit the forward kernel's. The gradient pass's block, swept on an H200 at T = 16,384
# (4 warps): 1024 columns 2.61 ms, 2048 2.63, 4096 2.90; with 8 warps 2.63-3.31 (against 0.75 + 1.41 + 1.00 ms for the
# forward kernel, the backward kernel and XLA's quantiser). Since the bare MUFU instructions (_ex2, _reciprocal) and the target
# rewrite (_grad_row), timed alone with triton's do_bench on an H200 (2.25 ms before): 1024 columns 1.55 ms, 2048 1.53;
# 8 warps 1.55, with a different reduction order and so other bits. ncu: 3.06 M cycles against 2.34 M for the six
# special-function instructions per logit at 16 per cycle per multiprocessor. The sweep below points to that pipe also
# running each element's F2F (its bf16 rounding) and the packed e5m2 F2FPs: 7.5 per logit, 2.9 M cycles. Since the
# rounding is one packed cvt per two elements (_round_bf16) and the forward pass's reciprocal is on the FMA pipe
# (_reciprocal_newton): 1.659 -> 1.334 ms at T = 16,384 on an H200 (the forward kernel 0.721 -> 0.578 ms), a sweep of
# eight variants in docs/results/2026-12-03-h200-thirteenth (the gradient pass's reciprocal there instead, or in both
# passes, or integer rounding: 1.338-1.441 ms).
FUSED_GRAD_BLOCK = 1024

if triton is not None:
    LOG2E = tl.constexpr(1.4426950408889634)
    # Where the sigmoid's reciprocal runs in each pass: the gradient pass does more FMA-pipe work per logit (the
    # gradient's products, the bf16 rounding, e5m2), so its reciprocal stays on the MUFU (recipe §7 item 2: the
    # record's formulas to fp32 rounding).
    FORWARD_NEWTON = tl.constexpr(True)
    GRAD_NEWTON = tl.constexpr(False)

    @triton.jit
    def _ex2(x):
        """2^x as the bare MUFU.EX2 (ex2.approx.ftz). tl.exp's ex2.approx (no ftz) wraps the same instruction in range
        checks and scaling for results below fp32's normal range (x < -126). The exponents here stay above it
        ((z − cap)·log2 e ≥ −cap·log2 e; (z − lse)·log2 e ≥ −(cap + ln V)·log2 e, for caps below ~76: the record's is
        23), but for the sigmoid's 2^t at logits above ~650, where σ = 1 either way. Past that cap, p below 1e-38
        becomes 0, not a denormal."""
        return tl.inline_asm_elementwise("ex2.approx.ftz.f32 $0, $1;", "=f,f", [x], dtype=tl.float32, is_pure=True,
                                         pack=1)

    @triton.jit
    def _reciprocal(x):
        """1/x as the bare MUFU.RCP (rcp.approx.ftz). For the sigmoid's 1 + e ≥ 1 it gives the bits of tl.sigmoid's
        division (div.full, the same MUFU.RCP wrapped in checks for |x| > 2^126, where both are ~0)."""
        return tl.inline_asm_elementwise("rcp.approx.ftz.f32 $0, $1;", "=f,f", [x], dtype=tl.float32, is_pure=True,
                                         pack=1)

    @triton.jit
    def _reciprocal_newton(x):
        """1/x on the FMA pipe for x in [1, 2^125 + 1], 0.77 ulp at most (rcp.approx: 1): the integer seed
        0x7EF311C3 − bits(x) (5% off), a cubic step (error e -> e³) and a Newton step (e -> e²), five FFMAs and an
        IADD in place of one MUFU.RCP, which shares the 16-per-cycle special-function pipe with the EX2s."""
        y = (0x7EF311C3 - x.to(tl.int32, bitcast=True)).to(tl.float32, bitcast=True)
        e = tl.fma(-x, y, 1.0)
        y = tl.fma(y, tl.fma(e, e, e), y)
        return tl.fma(y, tl.fma(-x, y, 1.0), y)

    @triton.jit
    def _sigmoid(logit, inv_temp, shift, NEWTON: tl.constexpr):
        """σ(logit · inv_temp + shift) = 1 / (1 + 2^t), t = logit · (−inv_temp · log2 e) + (−shift · log2 e): one FFMA
        to the exponent. NEWTON: the reciprocal on the FMA pipe; t is then held ≤ 125 (NaN kept) so that 1 + 2^t
        stays in the seed's range (a normal seed); σ < 2^-125 there either way."""
        t = logit * (-inv_temp * LOG2E) + (-shift * LOG2E)
        if NEWTON:
            sig = _reciprocal_newton(1.0 + _ex2(tl.minimum(t, 125.0, propagate_nan=tl.PropagateNan.ALL)))
        else:
            sig = _reciprocal(1.0 + _ex2(t))
        return sig

    @triton.jit
    def _in_sequence(row, k, T: tl.constexpr, ROW: tl.constexpr):
        """Whether targets[row + k] is one of row's MTP targets: inside row's own sequence of ROW rows."""
        if ROW == T:
            inside = row + k < T
        else:
            inside = row % ROW + k < ROW
        return inside

    @triton.jit
    def _exp_terms(row_ptr, cols, cap, inv_temp, shift, V: tl.constexpr, MASKED: tl.constexpr):
        """exp(z − cap) for these columns of one row (0 past the row's end)."""
        if MASKED:
            logit = tl.load(row_ptr + cols, mask=cols < V, other=0.0).to(tl.float32)
        else:
            logit = tl.load(row_ptr + cols).to(tl.float32)
        sig = _sigmoid(logit, inv_temp, shift, FORWARD_NEWTON)
        terms = _ex2(sig * (cap * LOG2E) - cap * LOG2E)  # exp(z − cap) = 2^((σ − 1) · cap · log2 e), one FFMA
        if MASKED:
            terms = tl.where(cols < V, terms, 0.0)
        return terms

    @triton.jit
    def _row_loss(
        row_ptr,
        targets_ptr,
        weights_ptr,
        row,
        cap,
        inv_temp,
        shift,
        loss_ptr,
        lse_ptr,
        terms_ptr,
        T: tl.constexpr,
        V: tl.constexpr,
        NUM_WEIGHTS: tl.constexpr,
        BLOCK: tl.constexpr,
        TAIL_BLOCK: tl.constexpr,
        ROW: tl.constexpr,
    ):
        """Streams one row once: stores its loss, lse and terms, returns lse (the forward of both kernels below)."""
        full_cols: tl.constexpr = V - V % BLOCK
        # Per-lane partial sums; one reduction at the end.
        sums = tl.zeros([BLOCK], dtype=tl.float32)
        for start in range(0, full_cols, BLOCK):
            sums += _exp_terms(row_ptr, start + tl.arange(0, BLOCK), cap, inv_temp, shift, V, False)
        tail_sums = tl.zeros([TAIL_BLOCK], dtype=tl.float32)
        for start in range(full_cols, V, TAIL_BLOCK):
            tail_sums += _exp_terms(row_ptr, start + tl.arange(0, TAIL_BLOCK), cap, inv_temp, shift, V, True)
        lse = cap + tl.log(tl.sum(sums, axis=0) + tl.sum(tail_sums, axis=0))
        loss = 0.0
        for k in tl.static_range(NUM_WEIGHTS):
            has_target = _in_sequence(row, k, T, ROW)
            target = tl.load(targets_ptr + row + k, mask=has_target, other=0)
            in_vocab = has_target & (target >= 0) & (target < V)
            logit = tl.load(row_ptr + target, mask=in_vocab, other=0.0).to(tl.float32)
            term = tl.where(in_vocab, lse - cap * _sigmoid(logit, inv_temp, shift, FORWARD_NEWTON), 0.0)
            tl.store(terms_ptr + row * NUM_WEIGHTS + k, term)
            loss += tl.load(weights_ptr + k) * term
        tl.store(loss_ptr + row, loss)
        tl.store(lse_ptr + row, lse)
        return lse

    @triton.jit
    def _ce_forward_kernel(
        logits_ptr,
        targets_ptr,
        weights_ptr,
        cap,
        inv_temp,
        shift,
        loss_ptr,
        lse_ptr,
        terms_ptr,
        T: tl.constexpr,
        V: tl.constexpr,
        NUM_WEIGHTS: tl.constexpr,
        BLOCK: tl.constexpr,
        TAIL_BLOCK: tl.constexpr,
        ROW: tl.constexpr,
    ):
        row = tl.program_id(0)
        row_ptr = logits_ptr + row.to(tl.int64) * V
        _row_loss(row_ptr, targets_ptr, weights_ptr, row, cap, inv_temp, shift, loss_ptr, lse_ptr, terms_ptr, T, V,
                  NUM_WEIGHTS, BLOCK, TAIL_BLOCK, ROW)  # fmt: skip

    @triton.jit
    def _round_bf16(x):
        """bf16(x), round to nearest even, back in fp32: the bits of x.to(bf16).to(fp32) (NaN stays NaN). That pair
        is an F2F per element, on the special-function pipe with the MUFUs; this is one packed cvt (F2FP) per two
        elements and two integer moves (1.433 against 1.572 ms for the fused kernel, the sweep in FUSED_GRAD_BLOCK's
        note)."""
        bits = tl.inline_asm_elementwise(
            "{ .reg .b32 t; cvt.rn.bf16x2.f32 t, $3, $2; shl.b32 $0, t, 16; and.b32 $1, t, 0xffff0000; }",
            "=r,=r,r,r", [x.to(tl.int32, bitcast=True)], dtype=tl.int32, is_pure=True, pack=2)
        return bits.to(tl.float32, bitcast=True)

    @triton.jit
    def _to_e5m2(grad, grad_scale, BY_RECIPROCAL: tl.constexpr):
        """ops.quantize_fp8 of the bf16-rounded gradient: its bf16 value over the scale in fp32, clamped to e5m2's
        range, rounded to nearest even: the number the head's backward would have quantised. The conversion is
        cvt.rn.satfinite: rounding, then ±57,344 for what rounds past it, which are the bits of the clamp first
        (NaN stays NaN, as in XLA's clip, where a clamp by min/max would make it ±57,344). BY_RECIPROCAL: grad_scale
        holds fl32(1 / scale) and the kernel multiplies by it, which the host has checked gives the IEEE quotient's
        fp8 bits for every bf16 input (reciprocal_is_exact); else it divides (div_rn, several times dearer)."""
        if BY_RECIPROCAL:
            x = _round_bf16(grad) * grad_scale
        else:
            x = tl.math.div_rn(_round_bf16(grad), grad_scale)
        return x.to(tl.float8e5, fp_downcast_rounding="rtne")

    @triton.jit
    def _grad_value(logit, hits, lse, g, weight_sum, cap, inv_temp, shift):
        """dℓ = g · (S · p − hits) · inv_temp · z · (1 − σ) with z = cap · σ and p = exp(z − lse) (recipe §2.1), of a
        column whose MTP weights sum to hits (0 for every column but the row's targets), as
        (p · S − hits) · (σ(1 − σ) · (g · inv_temp · cap)), p = 2^(σ · cap · log2 e − lse · log2 e): one FFMA to each
        exponent and σ(1 − σ) = fma(−σ, σ, σ), exact but for its one rounding."""
        sig = _sigmoid(logit, inv_temp, shift, GRAD_NEWTON)
        p = _ex2(sig * (cap * LOG2E) - lse * LOG2E)
        return (p * weight_sum - hits) * (tl.fma(-sig, sig, sig) * (g * inv_temp * cap))

    @triton.jit
    def _grad_out(grad, grad_scale, QUANT: tl.constexpr, BY_RECIPROCAL: tl.constexpr):
        """What is stored of dℓ: bf16, or (QUANT) the e5m2 of it."""
        if QUANT:
            out = _to_e5m2(grad, grad_scale, BY_RECIPROCAL)
        else:
            out = grad.to(tl.bfloat16)
        return out

    @triton.jit
    def _grad_block(row_ptr, grad_row_ptr, cols, lse, g, weight_sum, cap, inv_temp, shift, grad_scale,
                    V: tl.constexpr, MASKED: tl.constexpr, QUANT: tl.constexpr, BY_RECIPROCAL: tl.constexpr):
        """Writes dℓ for these columns of one row as if none were a target (_grad_row mends the targets)."""
        if MASKED:
            logit = tl.load(row_ptr + cols, mask=cols < V, other=0.0).to(tl.float32)
        else:
            logit = tl.load(row_ptr + cols).to(tl.float32)
        out = _grad_out(_grad_value(logit, 0.0, lse, g, weight_sum, cap, inv_temp, shift), grad_scale, QUANT,
                        BY_RECIPROCAL)
        if MASKED:
            tl.store(grad_row_ptr + cols, out, mask=cols < V)
        else:
            tl.store(grad_row_ptr + cols, out)

    @triton.jit
    def _grad_row(row_ptr, grad_row_ptr, targets_ptr, weights_ptr, row, lse, g, cap, inv_temp, shift, grad_scale,
                  T: tl.constexpr, V: tl.constexpr, NUM_WEIGHTS: tl.constexpr, BLOCK: tl.constexpr,
                  TAIL_BLOCK: tl.constexpr, QUANT: tl.constexpr, BY_RECIPROCAL: tl.constexpr, ROW: tl.constexpr):
        """Writes dℓ of one row (the gradient pass of both kernels below). Every column first as a non-target, with no
        per-column compare against the K targets; then, after a barrier that lands those stores, the ≤ K target columns
        again with their weights summed in k's order (a column that is two targets gets both), which are the bits a
        per-column sum of the K terms gives (1.71 vs 2.25 ms for the fused kernel on an H200, same bits)."""
        weight_sum = 0.0
        for k in tl.static_range(NUM_WEIGHTS):
            weight_sum += tl.where(_in_sequence(row, k, T, ROW), tl.load(weights_ptr + k), 0.0)
        full_cols: tl.constexpr = V - V % BLOCK
        for start in range(0, full_cols, BLOCK):
            _grad_block(row_ptr, grad_row_ptr, start + tl.arange(0, BLOCK), lse, g, weight_sum, cap, inv_temp, shift,
                        grad_scale, V, False, QUANT, BY_RECIPROCAL)  # fmt: skip
        for start in range(full_cols, V, TAIL_BLOCK):
            _grad_block(row_ptr, grad_row_ptr, start + tl.arange(0, TAIL_BLOCK), lse, g, weight_sum, cap, inv_temp,
                        shift, grad_scale, V, True, QUANT, BY_RECIPROCAL)  # fmt: skip
        tl.debug_barrier()  # bar.sync: the loops' stores of the target columns are ordered before their rewrite
        for k in tl.static_range(NUM_WEIGHTS):
            has_target = _in_sequence(row, k, T, ROW)
            target = tl.load(targets_ptr + row + k, mask=has_target, other=-1)
            in_vocab = has_target & (target >= 0) & (target < V)
            hits = 0.0
            for j in tl.static_range(NUM_WEIGHTS):
                other = tl.load(targets_ptr + row + j, mask=_in_sequence(row, j, T, ROW), other=-1)
                hits += tl.where(other == target, tl.load(weights_ptr + j), 0.0)
            logit = tl.load(row_ptr + target, mask=in_vocab, other=0.0).to(tl.float32)
            grad = _grad_value(logit, hits, lse, g, weight_sum, cap, inv_temp, shift)
            tl.store(grad_row_ptr + target, _grad_out(grad, grad_scale, QUANT, BY_RECIPROCAL), mask=in_vocab)

    @triton.jit
    def _ce_backward_kernel(
        logits_ptr,
        targets_ptr,
        weights_ptr,
        lse_ptr,
        dloss_ptr,
        cap,
        inv_temp,
        shift,
        dlogits_ptr,
        T: tl.constexpr,
        V: tl.constexpr,
        NUM_WEIGHTS: tl.constexpr,
        BLOCK: tl.constexpr,
        TAIL_BLOCK: tl.constexpr,
        ROW: tl.constexpr,
    ):
        row = tl.program_id(0)
        _grad_row(logits_ptr + row.to(tl.int64) * V, dlogits_ptr + row.to(tl.int64) * V, targets_ptr, weights_ptr, row,
                  tl.load(lse_ptr + row), tl.load(dloss_ptr + row), cap, inv_temp, shift, 1.0, T, V, NUM_WEIGHTS,
                  BLOCK, TAIL_BLOCK, False, False, ROW)  # fmt: skip

    @triton.jit
    def _ce_fused_fp8_kernel(
        logits_ptr,
        targets_ptr,
        weights_ptr,
        cap,
        inv_temp,
        shift,
        grad_scale,
        loss_ptr,
        lse_ptr,
        terms_ptr,
        gq_ptr,
        T: tl.constexpr,
        V: tl.constexpr,
        NUM_WEIGHTS: tl.constexpr,
        BLOCK: tl.constexpr,
        TAIL_BLOCK: tl.constexpr,
        GRAD_BLOCK: tl.constexpr,
        BY_RECIPROCAL: tl.constexpr,
        ROW: tl.constexpr,
    ):
        """The forward and, for a unit upstream gradient, the e5m2 gradient of one row, streamed twice by one program
        (the second pass mostly from HBM again: ncu gives a 20% L2 hit rate at the record's shape)."""
        row = tl.program_id(0)
        row_ptr = logits_ptr + row.to(tl.int64) * V
        grad_row_ptr = gq_ptr + row.to(tl.int64) * V
        lse = _row_loss(row_ptr, targets_ptr, weights_ptr, row, cap, inv_temp, shift, loss_ptr, lse_ptr, terms_ptr, T,
                        V, NUM_WEIGHTS, BLOCK, TAIL_BLOCK, ROW)  # fmt: skip
        _grad_row(row_ptr, grad_row_ptr, targets_ptr, weights_ptr, row, lse, 1.0, cap, inv_temp, shift, grad_scale, T, V,
                  NUM_WEIGHTS, GRAD_BLOCK, TAIL_BLOCK, True, BY_RECIPROCAL, ROW)  # fmt: skip


@functools.lru_cache(maxsize=None)
def reciprocal_is_exact(scale: float) -> bool:
    """Whether quantising bf16 x to e5m2 as x · fl32(1/scale) gives the bits of x / scale (IEEE fp32 division) for
    every finite bf16 x: an exhaustive check of the 65,280 values (a millisecond, once per scale). It holds for the
    record's gradient scale; where it does not, the fused kernel divides."""
    x = np.arange(65536, dtype=np.uint32).astype(np.uint16).view(ml_dtypes.bfloat16).astype(np.float32)
    x = x[np.isfinite(x)]
    s = np.float32(scale)
    limit = np.float32(float(ml_dtypes.finfo(ml_dtypes.float8_e5m2).max))
    with np.errstate(over="ignore"):
        by_division = np.clip(x / s, -limit, limit).astype(ml_dtypes.float8_e5m2).view(np.uint8)
        by_reciprocal = np.clip(x * (np.float32(1) / s), -limit, limit).astype(ml_dtypes.float8_e5m2).view(np.uint8)
    return bool(np.array_equal(by_division, by_reciprocal))


def _softcap_scalars(softcap: tuple[float, float, float]) -> tuple[np.float32, np.float32, np.float32]:
    cap, offset, temperature = softcap
    return np.float32(cap), np.float32(1.0 / temperature), np.float32(offset / temperature)


def _launch_meta(launch: RowLaunch, t: int, v: int, num_weights: int, seq_len: int | None) -> dict:
    return dict(grid=(t,), num_warps=launch.num_warps, T=t, V=v, NUM_WEIGHTS=num_weights, BLOCK=launch.block,
                TAIL_BLOCK=launch.tail_block, ROW=ops.checked_seq_len(seq_len, t, "softcap_ce"))  # fmt: skip


def softcap_ce_forward(logits, targets, weights, softcap, *, launch: RowLaunch = FORWARD_LAUNCH,
                       seq_len: int | None = None):
    """The forward kernel: loss (T,) f32, lse (T,) f32 and terms (T, K) f32, terms[i, k] = lse_i − z_{i, tgt[i+k]}
    where i + k < T (else 0); logits (T, V) bf16, targets (T,) int32, weights (K,) f32. seq_len: the rows are
    sequences of that many rows end to end, i and T counting within each (None: one sequence)."""
    jt = jax_triton()
    (t, v), k = logits.shape, weights.shape[0]
    row = jax.ShapeDtypeStruct((t,), jnp.float32)
    return jt.triton_call(
        logits,
        targets,
        weights,
        *_softcap_scalars(softcap),
        kernel=_ce_forward_kernel,
        out_shape=(row, row, jax.ShapeDtypeStruct((t, k), jnp.float32)),
        name="softcap_ce_fwd",
        **_launch_meta(launch, t, v, k, seq_len),
    )


def softcap_ce_backward(logits, targets, weights, lse, dloss, softcap, *, launch: RowLaunch = BACKWARD_LAUNCH,
                        seq_len: int | None = None):
    """The backward kernel: d_logits (T, V) bf16 for the upstream per-row gradient dloss (T,) f32."""
    jt = jax_triton()
    t, v = logits.shape
    return jt.triton_call(
        logits,
        targets,
        weights,
        lse,
        dloss,
        *_softcap_scalars(softcap),
        kernel=_ce_backward_kernel,
        out_shape=jax.ShapeDtypeStruct((t, v), jnp.bfloat16),
        name="softcap_ce_bwd",
        **_launch_meta(launch, t, v, weights.shape[0], seq_len),
    )


def softcap_ce_fused_fp8(logits, targets, weights, softcap, grad_scale: float, *, launch: RowLaunch = FORWARD_LAUNCH,
                         grad_block: int = FUSED_GRAD_BLOCK, seq_len: int | None = None):
    """The forward kernel's loss, lse and terms, and, in the same program per row, the gradient of the SUMMED loss
    (upstream gradient 1 on every row) as the e5m2 array the FP8 head's backward multiplies:
    gq = quantize_fp8(bf16 dℓ, grad_scale, e5m2), (T, V). One read of the logits from HBM instead of three, and no
    bf16 (T, V) gradient written and read back."""
    jt = jax_triton()
    (t, v), k = logits.shape, weights.shape[0]
    row = jax.ShapeDtypeStruct((t,), jnp.float32)
    by_reciprocal = reciprocal_is_exact(grad_scale)
    return jt.triton_call(
        logits,
        targets,
        weights,
        *_softcap_scalars(softcap),
        np.float32(1) / np.float32(grad_scale) if by_reciprocal else np.float32(grad_scale),
        kernel=_ce_fused_fp8_kernel,
        out_shape=(row, row, jax.ShapeDtypeStruct((t, k), jnp.float32), jax.ShapeDtypeStruct((t, v), jnp.float8_e5m2)),
        name="softcap_ce_fused_fp8",
        GRAD_BLOCK=grad_block,
        BY_RECIPROCAL=by_reciprocal,
        **_launch_meta(launch, t, v, k, seq_len),
    )


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def _softcap_ce(logits, targets, weights, softcap, seq_len):
    return softcap_ce_forward(logits, targets, weights, softcap, seq_len=seq_len)[0]


def _softcap_ce_fwd(logits, targets, weights, softcap, seq_len):
    loss, lse, terms = softcap_ce_forward(logits, targets, weights, softcap, seq_len=seq_len)
    return loss, (logits, targets, weights, lse, terms)


def _softcap_ce_bwd(softcap, seq_len, residuals, dloss):
    logits, targets, weights, lse, terms = residuals
    dloss = dloss.astype(jnp.float32)
    dlogits = softcap_ce_backward(logits, targets, weights, lse, dloss, softcap, seq_len=seq_len)
    # d loss_i / d w_k = terms[i, k]; the schedule's weights never need it, and XLA drops it when unused.
    return dlogits, None, dloss @ terms


_softcap_ce.defvjp(_softcap_ce_fwd, _softcap_ce_bwd)


def _check_softcap(softcap: Sequence[float]) -> tuple[float, float, float]:
    values = tuple(softcap) if isinstance(softcap, (tuple, list)) else ()
    if len(values) != 3 or not all(isinstance(x, (int, float)) and math.isfinite(x) for x in values):
        raise ValueError(f"cross_entropy: softcap must be three numbers (a, b, c) as in ModelConfig.softcap, got {softcap!r}")
    cap, _, temperature = (float(x) for x in values)
    if not 0 < cap <= MAX_CAP or temperature <= 0:
        raise ValueError(
            f"cross_entropy: the triton kernel needs 0 < a <= {MAX_CAP} and c > 0 in softcap (a, b, c), got {softcap!r}"
        )
    return tuple(float(x) for x in values)


def cross_entropy(
    logits: jax.Array, targets: jax.Array, mtp_weights: jax.Array, *, softcap: tuple[float, float, float],
    seq_len: int | None = None,
) -> jax.Array:
    """Per-row soft-capped multi-token CE loss (T,) f32 of logits (T, V) bf16, targets (T,) int and mtp_weights (K,);
    seq_len: the rows are sequences of that many end to end, each with its own MTP targets (None: one sequence).

    Differentiable in the logits through the custom VJP (the caller sums the rows, recipe §2.1).
    """
    checked = _check_softcap(softcap)
    if logits.ndim != 2 or logits.dtype != jnp.bfloat16:
        raise ValueError(f"cross_entropy: logits must be a (T, V) bfloat16 array, got {logits.shape} {logits.dtype}")
    _check_targets_and_weights("cross_entropy", logits.shape[0], targets, mtp_weights)
    seq_len = ops.checked_seq_len(seq_len, logits.shape[0], "cross_entropy")
    return _softcap_ce(logits, targets.astype(jnp.int32), mtp_weights.astype(jnp.float32), checked, seq_len)


def _check_targets_and_weights(op: str, rows: int, targets, mtp_weights) -> None:
    if targets.shape != (rows,) or not jnp.issubdtype(targets.dtype, jnp.integer):
        raise ValueError(f"{op}: targets must be ({rows},) integers, got {targets.shape} {targets.dtype}")
    if mtp_weights.ndim != 1 or mtp_weights.shape[0] < 1:
        raise ValueError(f"{op}: mtp_weights must be a non-empty 1-D array (zero-padded), got {mtp_weights.shape}")


# ----------------------------------------------------------------------------------------------------------------------
# The training loss of the FP8 head and the cross entropy in one op (the head_loss op's triton backend)
# ----------------------------------------------------------------------------------------------------------------------


def head_loss(h, w, targets, mtp_weights, *, fp8: bool, scales, softcap, lm_head, cross_entropy,
              seq_len: int | None = None) -> jax.Array:
    """The summed training loss Σ_i loss_i of the head and the soft-capped MTP cross entropy (ops.head_loss_xla's
    signature and number), with the FP8 head's backward fed by softcap_ce_fused_fp8.

    The separate ops cost, per micro-batch of the record (T = 16,384, V = 50,304, an H200): the CE forward (0.78 ms)
    and backward (1.45 ms) kernels each stream the bf16 logits, the backward writes a bf16 gradient, and XLA reads it
    back to quantise it to e5m2 (1.19 ms). Here the forward kernel's program also writes the e5m2 gradient of its row
    while the row is in L2. The gradient is formed for an upstream gradient of 1 (the training loss is this sum, and
    jax.grad seeds 1); for another cotangent c the head's products are multiplied by c, which is exact for c = 1 and
    otherwise c times the quantised unit gradient rather than the quantisation of c times it.

    fp8=False (the bf16 head) has no quantisation to fuse: the two ops run as ops.head_loss_xla composes them.
    ``lm_head`` and ``cross_entropy`` are those ops' functions, used only then; the FP8 products are the xla head's
    cuBLASLt GEMMs (ops.scaled_fp8_dot), whatever lm_head's backend.
    """
    if not fp8:
        return ops.head_loss_xla(h, w, targets, mtp_weights, fp8=False, scales=scales, softcap=softcap,
                                 lm_head=lm_head, cross_entropy=cross_entropy, seq_len=seq_len)
    checked = _check_softcap(softcap)
    ops.check_head_shapes(h, w, "head_loss")
    _check_targets_and_weights("head_loss", h.shape[0], targets, mtp_weights)
    return _fused_head_loss(h, w, targets.astype(jnp.int32), mtp_weights.astype(jnp.float32),
                            ops.checked_fp8_scales(scales, "head_loss"), checked,
                            ops.checked_seq_len(seq_len, h.shape[0], "head_loss"))


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5, 6))
def _fused_head_loss(h, w, targets, weights, scales, softcap, seq_len):
    return _fused_head_loss_fwd(h, w, targets, weights, scales, softcap, seq_len)[0]


def _fused_head_loss_fwd(h, w, targets, weights, scales, softcap, seq_len):
    logits, quantised = ops.fp8_head_forward(h, w, scales)  # the xla head's forward, recipe §1.9
    loss, _, terms, gq = softcap_ce_fused_fp8(logits, targets, weights, softcap, scales[2], seq_len=seq_len)
    return jnp.sum(loss), (quantised, gq, terms)  # the logits die here: only their e5m2 gradient (half the bytes) is kept


def _fused_head_loss_bwd(scales, softcap, seq_len, residuals, c):
    quantised, gq, terms = residuals
    dh, dw = ops.fp8_head_backward_products(gq, quantised, scales)  # the xla head's backward products (issue #20)
    c = c.astype(jnp.float32)  # 1 in training: the products pass through unchanged
    scaled = lambda x: (x.astype(jnp.float32) * c).astype(x.dtype)  # noqa: E731
    return scaled(dh), scaled(dw), None, c * jnp.sum(terms, axis=0)


_fused_head_loss.defvjp(_fused_head_loss_fwd, _fused_head_loss_bwd)
