"""kernels/embed_grad.py (the chunked version, embed_grad_chunked.patch) in triton's interpreter on the CPU, against an
independent reference: each distinct token's rows summed in fp64, rounded to bf16 (nearest even, as ml_dtypes and the
GPU round), added to the f32 row. The kernels sum in f32 in their own order, so a bf16 sum may sit one bf16 step from
the reference where the fp64 sum is near a rounding boundary: the check allows that step (plus the f32 addition's
rounding) and no more, and untouched rows must keep their bits. Cases: runs cut by one and by many chunk edges, a
chunk that is all one run, every token distinct, one token everywhere, ragged T and D, several tables. It also prints
how often the result differs from XLA's op (ops.accumulate_gathered_grad on the CPU), for information.

    git apply docs/results/2026-12-02-h200-tenth/next_lease/embed_grad_chunked.patch   # (or with it landed)
    python docs/results/2026-12-02-h200-tenth/next_lease/embed_grad_interpreter_check.py
"""
import os
import sys

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(here, "..", "..", "2026-12-02-h200-levers", "next_lease"))
import triton_interpreter  # noqa: E402,F401  (before any kernel: the interpreter and its fixes)
import ml_dtypes  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

jax.config.update("jax_platforms", "cpu")
from jaxrun import ops  # noqa: E402
from jaxrun.kernels import embed_grad as eg  # noqa: E402


def reference(acc, tokens, rows):
    order = np.argsort(tokens, kind="stable")
    unique, starts = np.unique(tokens[order], return_index=True)
    totals = np.add.reduceat(rows[..., order, :].astype(np.float64), starts, axis=-2)
    want = acc.astype(np.float64)
    want[..., unique, :] += totals.astype(np.float32).astype(ml_dtypes.bfloat16).astype(np.float64)
    return want, unique, want - acc.astype(np.float64)


def bf16_step(x):
    return 2.0 ** (np.floor(np.log2(np.maximum(np.abs(x), 2.0 ** -126))) - 7)


def run_kernels(acc, tokens, rows, c, r, block_d):
    n, v, d = acc.shape
    t = tokens.shape[0]
    order, tok, head_tok, tail_tok, chain_end = (np.asarray(x) for x in eg.sorted_chunks(jnp.asarray(tokens), c))
    nc = head_tok.shape[0]
    out = torch.tensor(acc.copy())
    rows_t = torch.tensor(rows.astype(np.float32)).to(torch.bfloat16)
    part = torch.full((n, nc, 2, d), float("nan"))  # unwritten slots read as NaN: a wrong read shows
    grid = (nc, n, -(-d // block_d))
    eg._run_sums_kernel[grid](out, rows_t, torch.tensor(order), torch.tensor(tok), torch.tensor(head_tok),
                              torch.tensor(tail_tok), out, part, T=t, V=v, D=d, NC=nc, C=c, R=r, BLOCK_D=block_d)
    eg._chain_sums_kernel[grid](part, torch.tensor(tail_tok), torch.tensor(chain_end), out, out, V=v, D=d, NC=nc,
                                BLOCK_D=block_d)
    return out.numpy(), (head_tok >= 0).sum(), (tail_tok >= 0).sum(), nc


cases = [  # (name, T, V, D, tables, C, R, BLOCK_D, tokens(rng))
    ("zipf 1.2, runs over many chunks", 300, 50, 40, 3, 8, 4, 32, lambda g, t, v: np.minimum(g.zipf(1.2, t) - 1, v - 1)),
    ("zipf 1.5, ragged T and D", 257, 1000, 300, 1, 16, 8, 128, lambda g, t, v: np.minimum(g.zipf(1.5, t) - 1, v - 1)),
    ("every token distinct", 100, 500, 24, 2, 8, 8, 32, lambda g, t, v: g.permutation(v)[:t]),
    ("one token everywhere", 70, 10, 16, 2, 16, 4, 16, lambda g, t, v: np.full(t, 3)),
    ("uniform, short runs", 512, 64, 64, 5, 32, 32, 64, lambda g, t, v: g.integers(0, v, t)),
    ("chunk = tile", 96, 20, 8, 1, 4, 4, 8, lambda g, t, v: np.minimum(g.zipf(1.3, t) - 1, v - 1)),
]
fails = 0
for seed, (name, t, v, d, n, c, r, block_d, draw) in enumerate(cases):
    g = np.random.default_rng(seed)
    tokens = draw(g, t, v).astype(np.int32)
    rows = g.standard_normal((n, t, d)).astype(ml_dtypes.bfloat16)
    acc = g.standard_normal((n, v, d)).astype(np.float32)
    got, heads, tails, nc = run_kernels(acc, tokens, rows, c, r, block_d)
    want, unique, sums = reference(acc, tokens, rows)
    touched = np.isin(np.arange(v), unique)
    untouched_ok = np.array_equal(got[:, ~touched], acc[:, ~touched])
    err = np.abs(got[:, touched] - want[:, touched])
    bound = bf16_step(sums[:, touched]) + np.abs(want[:, touched]) * 2.0 ** -23
    within = bool(np.all(err <= bound * 1.0001)) and not np.isnan(got).any()
    off = float(np.mean(err > np.abs(want[:, touched]) * 2.0 ** -23))
    xla = np.asarray(ops.accumulate_gathered_grad(jnp.asarray(acc), jnp.asarray(tokens), jnp.asarray(rows)))
    ok = untouched_ok and within and off < 0.01
    fails += not ok
    print(f"{name:32s} T={t} V={v} D={d} tables={n} C={c} R={r}: {nc} chunks, {heads} heads, {tails} tails; "
          f"untouched rows kept {untouched_ok}; within a bf16 step {within} (off by a step: {off:.4%}); "
          f"elements differing from XLA's op {np.mean(got != xla):.4%}  {'OK' if ok else 'FAIL'}", flush=True)
print("ALL OK" if not fails else f"{fails} FAILED")
sys.exit(1 if fails else 0)
