"""kernels/embed_grad.py (embed_grad.patch) in triton's interpreter on the CPU against ops.accumulate_gathered_grad
(XLA on the CPU, whose scatter-add sums each token's rows in row order): with R = 1 row per chunk bit for bit, with
R > 1 to within a bf16 step. Zipf-drawn tokens, several tables, a column count that is not a multiple of the block,
fewer programs than distinct tokens. triton_interpreter.py (beside it) makes triton 3.6's interpreter faithful here: a
tensor as a loop bound, and f32 -> bf16 rounding to nearest even, as the GPU rounds.

    git apply docs/results/2026-12-02-h200-levers/next_lease/embed_grad.patch
    python docs/results/2026-12-02-h200-levers/next_lease/embed_grad_interpreter_check.py
"""
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
import triton_interpreter  # noqa: E402,F401  (before any kernel: the interpreter and its fixes)
import numpy as np  # noqa: E402
import torch  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
jax.config.update("jax_platforms", "cpu")
from jaxrun import ops
from jaxrun.kernels import embed_grad as eg

fails = 0
for t, v, d, n, r, seed in ((200, 50, 40, 5, 1, 0), (257, 30, 300, 1, 1, 1), (200, 50, 40, 5, 4, 2), (64, 1000, 8, 2, 16, 3)):
    rng = np.random.default_rng(seed)
    tokens = np.minimum(rng.zipf(1.3, t) - 1, v - 1).astype(np.int32)
    rows = rng.standard_normal((n, t, d)).astype(np.float32)
    rows_bf = jnp.asarray(rows, jnp.bfloat16)
    acc = rng.standard_normal((n, v, d)).astype(np.float32)
    want = np.asarray(ops.accumulate_gathered_grad(jnp.asarray(acc), jnp.asarray(tokens), rows_bf))
    order, starts, seg_token, count = (np.asarray(x) for x in eg.sorted_segments(jnp.asarray(tokens)))
    out = torch.tensor(acc.copy())
    rows_t = torch.tensor(np.asarray(rows_bf.astype(jnp.float32))).to(torch.bfloat16)
    programs = 3
    grid = (programs, n, -(-d // 32))
    eg._segment_accumulate_kernel[grid](out, rows_t, torch.tensor(order), torch.tensor(starts), torch.tensor(seg_token),
                                        torch.tensor(count), out, T=t, V=v, D=d, R=r, BLOCK_D=32, NUM_PROGRAMS=programs)
    got = out.numpy()
    same = np.array_equal(got, want)
    diff = np.abs(got - want)
    # one bf16 ulp of the row sum at most where the chunked sum rounds differently
    print(f"T={t} V={v} D={d} tables={n} R={r}: bitwise {same}; max |diff| {diff.max():.3g}; rows differing "
          f"{int((diff.max(-1) > 0).sum())} of {n * v}", flush=True)
    if r == 1:
        fails += not same
    else:
        fails += not np.allclose(got, want, rtol=2 ** -7, atol=2 ** -7)
print("ALL OK" if not fails else f"{fails} FAILED")
sys.exit(1 if fails else 0)
