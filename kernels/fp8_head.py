"""The FP8 LM head (recipe §1.9) as jax-triton kernels: `lm_head(h, w, fp8=True, scales=...)`.

Forward: logits = (xq · wqᵀ) · x_scale · w_scale, rounded to bf16, with xq = e4m3(h / x_scale) and
wq = e4m3(W / w_scale) formed in fp32 and rounded once (recipe §14.2). The reference casts without a clamp (in range by
design); we clamp to ±448 first, a safe deviation, since e4m3fn has no infinity. The product accumulates in the FP8
tensor cores' fast mode, like cuBLAS "fast accumulation".
Backward: gq = e5m2(dlogits / g_scale); dh = (gq · wq) · g_scale · w_scale → bf16 and dW = (gqᵀ · xq) · g_scale ·
x_scale → fp32 → bf16, both accumulating accurately, as cuBLAS without fast accumulation does in the reference. They
multiply the exact FP8 values on the bf16 tensor cores, which accumulate in fp32: the FP8 tensor cores' accumulator
keeps ~14 significant bits, and Triton 3.6's `max_num_imprecise_acc` did not change that here (measured on an H200 at
step 101 of record60: with it set to 128, dh and dW were 8% and 6% from the exact product, exactly as with fast
accumulation; 32 and 64 do not compile; the bf16 form gives 0.19% and 0.21%, the bf16 rounding of the output, at 3.5x
the time of the xla head's cuBLASLt FP8 GEMMs, which is why `auto` keeps the xla head). The kernels round
dlogits to e5m2 as they load it, so no quantised copy of the (T, V) gradient is written to memory; they multiply by
1/g_scale where the reference divides by g_scale, which can move a value by one fp32 ulp before the e5m2 rounding
(it changes the e5m2 value only on an exact rounding tie).

One kernel computes all three products: c = (a · bᵀ) · scale for b (N, K) row-major and a read through strides,
either (M, K) row-major or the transpose of a (K, M) array (dW reads dlogits (T, V) as a (V, T) operand).
`fp8=False` is the bf16 evaluation head, a plain XLA matrix product.
"""

from __future__ import annotations

import functools
import math
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxrun.kernels.triton_runtime import MatmulTiles, jax_triton, tl, triton
from jaxrun.ops import quantize_fp8  # the one quantiser: the xla backend's, so both backends round alike

# Tile shapes: the fastest of sweeps on an H100 at T = 16,384. Non-persistent: forward 1.90 ms, dh 1.56 ms, dW 1.96 ms
# (128x128 tiles: 1.93 / 2.18 / 3.16 ms). Persistent forward: 1.27 ms at (128, 256, 128), 4 stages; 3 stages 1.42 ms,
# 128x128 tiles 1.48 ms, 256x128 1.47 ms, BLOCK_K 64 1.54 ms.
FORWARD_TILES = MatmulTiles(block_m=128, block_n=256, block_k=128, group_m=8, num_warps=8, num_stages=4)
GRAD_INPUT_TILES = MatmulTiles(block_m=128, block_n=256, block_k=128, group_m=8, num_warps=8, num_stages=3)
GRAD_WEIGHT_TILES = MatmulTiles(block_m=128, block_n=256, block_k=128, group_m=8, num_warps=8, num_stages=3)

if triton is not None:

    @triton.jit
    def _scaled_fp8_matmul_kernel(
        a_ptr,
        b_ptr,
        out_scale,
        a_inv_scale,
        c_ptr,
        M: tl.constexpr,
        N: tl.constexpr,
        K: tl.constexpr,
        STRIDE_AM: tl.constexpr,
        STRIDE_AK: tl.constexpr,
        QUANTIZE_A: tl.constexpr,
        ACCURATE: tl.constexpr,
        BLOCK_M: tl.constexpr,
        BLOCK_N: tl.constexpr,
        BLOCK_K: tl.constexpr,
        GROUP_M: tl.constexpr,
        NUM_PROGRAMS: tl.constexpr,
    ):
        """c (M, N) = (a · bᵀ) · out_scale; b is (N, K) row-major, a[m, k] sits at a_ptr + m·STRIDE_AM + k·STRIDE_AK.

        QUANTIZE_A: a is bf16 and is rounded to e5m2 after multiplying by a_inv_scale, in registers.
        Persistent: NUM_PROGRAMS programs (one per SM) stride over the output tiles, and the tile loop is flattened
        with the K loop so the next tile's loads overlap this tile's epilogue. With K = 768 a tile is only six K
        steps, so its (128 x 256 bf16) store would otherwise leave the tensor cores idle: 1.27 ms instead of 1.65 ms
        for the forward at T = 16,384 on an H100.
        """
        start = tl.program_id(0)
        grid_m = tl.cdiv(M, BLOCK_M)
        grid_n = tl.cdiv(N, BLOCK_N)
        for tile in tl.range(start, grid_m * grid_n, NUM_PROGRAMS, flatten=True):
            pid_m, pid_n = tl.swizzle2d(tile // grid_n, tile % grid_n, grid_m, grid_n, GROUP_M)
            rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
            rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
            rk = tl.arange(0, BLOCK_K)
            # 64-bit offsets: a (T, V) operand has more than 2**31 elements.
            a_ptrs = a_ptr + rm[:, None].to(tl.int64) * STRIDE_AM + rk[None, :] * STRIDE_AK
            b_ptrs = b_ptr + rn[None, :].to(tl.int64) * K + rk[:, None]
            acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
            for k0 in range(0, K, BLOCK_K):
                # Masks only where a dimension is not a multiple of its block (constexpr tests, no cost otherwise).
                if M % BLOCK_M == 0 and K % BLOCK_K == 0:
                    a = tl.load(a_ptrs)
                else:
                    a = tl.load(a_ptrs, mask=(rm[:, None] < M) & (rk[None, :] < K - k0), other=0.0)
                if N % BLOCK_N == 0 and K % BLOCK_K == 0:
                    b = tl.load(b_ptrs)
                else:
                    b = tl.load(b_ptrs, mask=(rn[None, :] < N) & (rk[:, None] < K - k0), other=0.0)
                if QUANTIZE_A:
                    a = (a.to(tl.float32) * a_inv_scale).to(tl.float8e5)
                if ACCURATE:  # bf16 tensor cores: exact products of the FP8 values, accumulated in fp32
                    acc = tl.dot(a.to(tl.bfloat16), b.to(tl.bfloat16), acc)
                else:  # FP8 tensor cores, whose accumulator keeps ~14 significant bits (fast accumulation)
                    acc = tl.dot(a, b, acc)
                a_ptrs += BLOCK_K * STRIDE_AK
                b_ptrs += BLOCK_K
            c = (acc * out_scale).to(c_ptr.dtype.element_ty)
            tl.store(c_ptr + rm[:, None].to(tl.int64) * N + rn[None, :], c, mask=(rm[:, None] < M) & (rn[None, :] < N))


def scaled_fp8_matmul(
    a: jax.Array,
    b: jax.Array,
    *,
    out_scale: float,
    fast_accum: bool,
    tiles: MatmulTiles,
    a_transposed: bool = False,
    a_quant_scale: float | None = None,
) -> jax.Array:
    """(a · bᵀ) · out_scale in bf16 for an fp8 b (N, K); a is (M, K), or (K, M) with a_transposed.

    With a_quant_scale, a is bf16 and the kernel uses e5m2(a / a_quant_scale) in its place.
    """
    jt = jax_triton()
    k, m = a.shape if a_transposed else a.shape[::-1]
    n = b.shape[0]
    if b.shape[1] != k:
        raise ValueError(f"scaled_fp8_matmul: a {a.shape} (transposed={a_transposed}) and b {b.shape} disagree on K")
    stride_am, stride_ak = (1, m) if a_transposed else (k, 1)
    num_programs = tiles.persistent_programs(m, n)
    return jt.triton_call(
        a,
        b,
        np.float32(out_scale),
        np.float32(1.0 / a_quant_scale if a_quant_scale is not None else 1.0),
        kernel=_scaled_fp8_matmul_kernel,
        out_shape=jax.ShapeDtypeStruct((m, n), jnp.bfloat16),
        grid=(num_programs,),
        num_warps=tiles.num_warps,
        num_stages=tiles.num_stages,
        name="scaled_fp8_matmul",
        M=m,
        N=n,
        K=k,
        STRIDE_AM=stride_am,
        STRIDE_AK=stride_ak,
        QUANTIZE_A=a_quant_scale is not None,
        ACCURATE=not fast_accum,
        NUM_PROGRAMS=num_programs,
        **tiles.meta(),
    )


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _fp8_lm_head(h: jax.Array, w: jax.Array, scales: tuple[float, float, float]) -> jax.Array:
    return _fp8_lm_head_fwd(h, w, scales)[0]


def _fp8_lm_head_fwd(h, w, scales):
    x_scale, w_scale, _ = scales
    xq = quantize_fp8(h, x_scale, jnp.float8_e4m3fn)
    wq = quantize_fp8(w, w_scale, jnp.float8_e4m3fn)
    logits = scaled_fp8_matmul(xq, wq, out_scale=x_scale * w_scale, fast_accum=True, tiles=FORWARD_TILES)
    return logits, (xq, wq)


def _fp8_lm_head_bwd(scales, residuals, dlogits):
    x_scale, w_scale, g_scale = scales
    xq, wq = residuals
    # The kernel wants its b operand (N, K) row-major: wq (V, D) -> (D, V) and xq (T, D) -> (D, T), small copies.
    dh = scaled_fp8_matmul(
        dlogits, wq.T, out_scale=g_scale * w_scale, fast_accum=False, tiles=GRAD_INPUT_TILES, a_quant_scale=g_scale
    )
    dw = scaled_fp8_matmul(
        dlogits,
        xq.T,
        out_scale=g_scale * x_scale,
        fast_accum=False,
        tiles=GRAD_WEIGHT_TILES,
        a_transposed=True,
        a_quant_scale=g_scale,
    )
    return dh, dw


_fp8_lm_head.defvjp(_fp8_lm_head_fwd, _fp8_lm_head_bwd)


def _check_scales(scales: Sequence[float]) -> tuple[float, float, float]:
    values = tuple(scales) if isinstance(scales, (tuple, list)) else ()
    if len(values) != 3 or not all(isinstance(s, (int, float)) and math.isfinite(s) and s > 0 for s in values):
        raise ValueError(
            f"lm_head: scales must be three positive numbers (x_scale, w_scale, g_scale), e.g. "
            f"ModelConfig.fp8_scales; got {scales!r}"
        )
    return tuple(float(s) for s in values)


def lm_head(h: jax.Array, w: jax.Array, *, fp8: bool, scales: tuple[float, float, float]) -> jax.Array:
    """Logits (..., V) in bf16 of hidden states h (..., D) and the head weight w (V, D); recipe §1.9.

    fp8=True: the FP8 training head (static scales = (x_scale, w_scale, g_scale)), differentiable through its custom
    VJP; fp8=False: the bf16 evaluation head h · wᵀ.
    """
    if w.ndim != 2 or h.ndim < 1 or h.shape[-1] != w.shape[1]:
        raise ValueError(f"lm_head: expected h (..., D) and w (V, D) with the same D, got h {h.shape} and w {w.shape}")
    for name, x in (("h", h), ("w", w)):
        if not jnp.issubdtype(x.dtype, jnp.floating):
            raise ValueError(f"lm_head: {name} must be a floating-point array (bf16 in the model), got {x.dtype}")
    if not fp8:
        return jnp.dot(h, w.T)
    checked = _check_scales(scales)
    flat = h.reshape(-1, h.shape[-1])
    return _fp8_lm_head(flat, w, checked).reshape(*h.shape[:-1], w.shape[0])
