"""The fused linear + ReLU² MLP (recipe §1.8, §7.1) as a jax-triton kernel: `mlp(u, fc, proj) = relu(u·fcᵀ)²·proj`.

Forward: one pass over u·fcᵀ writes pre (bf16) and post = relu(pre)² (bf16, squared from the bf16 pre); out = post·proj
is an XLA matrix product. Backward: one pass over G·projᵀ writes d_pre = bf16(2·relu(pre)·d_post) with
d_post = bf16(G·projᵀ) (recipe §14.3: rounded twice; the product of two bf16 numbers and 2 is exact in fp32, so one
rounding at the end equals the reference's bf16 arithmetic). d_proj = postᵀ·G, d_fc = d_preᵀ·u and du = d_pre·fc are
XLA matrix products, as in the reference.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxrun.kernels.triton_runtime import MatmulTiles, jax_triton, tl, triton

# Tile shapes of the persistent kernel: the fastest of six in a sweep on an H200 at the record's shapes (2026-12-02,
# docs/results/2026-12-02-h200-tenth): at M = 65,536 forward 0.556 ms (557 TFLOP/s) and backward 0.577 ms, against
# 0.638 / 0.587 ms for the non-persistent kernel it replaced (forward (64, 256, 64), 4 warps, 4 stages; backward
# (128, 256, 64), 8 warps, 3 stages) and 0.641 / 0.694 ms for XLA's matmul with its fusions.
FORWARD_TILES = MatmulTiles(block_m=128, block_n=256, block_k=64, group_m=8, num_warps=8, num_stages=4)
BACKWARD_TILES = MatmulTiles(block_m=128, block_n=256, block_k=64, group_m=8, num_warps=8, num_stages=4)

if triton is not None:

    @triton.jit
    def _relu2_matmul_kernel(
        a_ptr,
        b_ptr,
        pre_ptr,
        out_ptr,
        M: tl.constexpr,
        N: tl.constexpr,
        K: tl.constexpr,
        FORWARD: tl.constexpr,
        BLOCK_M: tl.constexpr,
        BLOCK_N: tl.constexpr,
        BLOCK_K: tl.constexpr,
        GROUP_M: tl.constexpr,
        NUM_PROGRAMS: tl.constexpr,
    ):
        """acc = a · bᵀ for a (M, K), b (N, K), both row-major bf16.

        FORWARD: writes pre_ptr = bf16(acc) and out_ptr = bf16(relu(pre)²).
        Otherwise reads pre_ptr and writes out_ptr = bf16(2 · bf16(acc) · relu(pre)).
        Persistent, as the FP8 head's GEMM: NUM_PROGRAMS programs (one per SM) stride over the output tiles, and the
        tile loop is flattened with the K loop, so the next tile's loads overlap this tile's epilogue. Both products
        here have K = 768, a tile's few K steps against an epilogue of two (pre, post) or one store and a load.
        """
        start = tl.program_id(0)
        grid_m = tl.cdiv(M, BLOCK_M)
        grid_n = tl.cdiv(N, BLOCK_N)
        for tile in tl.range(start, grid_m * grid_n, NUM_PROGRAMS, flatten=True):
            pid_m, pid_n = tl.swizzle2d(tile // grid_n, tile % grid_n, grid_m, grid_n, GROUP_M)
            _relu2_matmul_tile(a_ptr, b_ptr, pre_ptr, out_ptr, pid_m, pid_n, M, N, K, FORWARD, BLOCK_M, BLOCK_N, BLOCK_K)

    @triton.jit
    def _relu2_matmul_tile(a_ptr, b_ptr, pre_ptr, out_ptr, pid_m, pid_n, M: tl.constexpr, N: tl.constexpr,
                           K: tl.constexpr, FORWARD: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                           BLOCK_K: tl.constexpr):
        """One (BLOCK_M, BLOCK_N) output tile of _relu2_matmul_kernel."""
        rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
        rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
        rk = tl.arange(0, BLOCK_K)
        a_ptrs = a_ptr + rm[:, None].to(tl.int64) * K + rk[None, :]
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
            acc = tl.dot(a, b, acc)
            a_ptrs += BLOCK_K
            b_ptrs += BLOCK_K
        c = acc.to(tl.bfloat16).to(tl.float32)
        offsets = rm[:, None].to(tl.int64) * N + rn[None, :]
        mask = (rm[:, None] < M) & (rn[None, :] < N)
        if FORWARD:
            tl.store(pre_ptr + offsets, c.to(tl.bfloat16), mask=mask)
            relu = tl.maximum(c, 0.0)
            tl.store(out_ptr + offsets, (relu * relu).to(tl.bfloat16), mask=mask)
        else:
            pre = tl.load(pre_ptr + offsets, mask=mask, other=0.0).to(tl.float32)
            tl.store(out_ptr + offsets, (2.0 * c * tl.maximum(pre, 0.0)).to(tl.bfloat16), mask=mask)


def relu2_matmul(a: jax.Array, b: jax.Array, pre: jax.Array | None = None, *, tiles: MatmulTiles | None = None):
    """The fused kernel on a (M, K) and b (N, K), both bf16.

    pre=None (forward): returns (pre, post) = (bf16(a·bᵀ), bf16(relu(pre)²)).
    pre given (backward, a = G, b = proj): returns d_pre = bf16(2 · bf16(a·bᵀ) · relu(pre)).
    """
    jt = jax_triton()
    forward = pre is None
    tiles = tiles or (FORWARD_TILES if forward else BACKWARD_TILES)
    (m, k), n = a.shape, b.shape[0]
    out = jax.ShapeDtypeStruct((m, n), jnp.bfloat16)
    num_programs = tiles.persistent_programs(m, n)
    return jt.triton_call(
        *((a, b) if forward else (a, b, pre)),
        kernel=_relu2_matmul_kernel,
        out_shape=(out, out) if forward else out,
        grid=(num_programs,),
        num_warps=tiles.num_warps,
        num_stages=tiles.num_stages,
        name="relu2_matmul_fwd" if forward else "relu2_matmul_bwd",
        M=m,
        N=n,
        K=k,
        FORWARD=forward,
        NUM_PROGRAMS=num_programs,
        **tiles.meta(),
    )


@jax.custom_vjp
def _mlp(u: jax.Array, fc: jax.Array, proj: jax.Array) -> jax.Array:
    return _mlp_fwd(u, fc, proj)[0]


def _mlp_fwd(u, fc, proj):
    pre, post = relu2_matmul(u, fc)
    return jnp.dot(post, proj), (u, fc, proj, pre, post)


def _mlp_bwd(residuals, g):
    u, fc, proj, pre, post = residuals
    d_pre = relu2_matmul(g, proj, pre)
    return jnp.dot(d_pre, fc), jnp.dot(d_pre.T, u), jnp.dot(post.T, g)


_mlp.defvjp(_mlp_fwd, _mlp_bwd)


def mlp(u: jax.Array, fc: jax.Array, proj: jax.Array) -> jax.Array:
    """relu(u · fcᵀ)² · proj for u (..., D), fc (F, D), proj (F, D) (used untransposed), all bf16; recipe §1.8."""
    if fc.ndim != 2 or proj.shape != fc.shape or u.ndim < 1 or u.shape[-1] != fc.shape[1]:
        raise ValueError(
            f"mlp: expected u (..., D), fc (F, D) and proj (F, D), got u {u.shape}, fc {fc.shape}, proj {proj.shape}"
        )
    for name, x in (("u", u), ("fc", fc), ("proj", proj)):
        if x.dtype != jnp.bfloat16:
            raise ValueError(f"mlp: the triton kernel takes bf16 operands; {name} is {x.dtype} (cast it to bfloat16)")
    flat = u.reshape(-1, u.shape[-1])
    return _mlp(flat, fc, proj).reshape(*u.shape[:-1], proj.shape[1])
