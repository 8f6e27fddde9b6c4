"""The embedding tables' gradient accumulation alone, at phase 3's shapes (one rank of 49,152 tokens per forward,
V = 50,304, D = 768; the token embedding (V, D) and the five value embeddings (5, V, D)): ops.accumulate_gathered_grad
as shipped against the two candidates of accumulate_hints.patch and accumulate_dense_embed.patch, written out here,
each inside a scan of 8 micro-batches as the engine carries its fp32 sums. Checks the three agree bit for bit, then
times them (median of 5, after a warm-up).

    python docs/results/2026-12-02-h200-table/next_lease/accumulate_micro.py [T V D]   # small shapes on a CPU
"""
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from jaxrun import ops


def hinted(acc, tokens, row_grads, dense_grad=None):
    """accumulate_hints.patch: distinct padding ids, unique_indices / indices_are_sorted on both scatters."""
    t, vocab = tokens.shape[0], acc.shape[-2]
    unique, inverse = jnp.unique(tokens, return_inverse=True, size=t, fill_value=vocab)
    unique = jnp.where(unique < vocab, unique, vocab + jnp.arange(t, dtype=unique.dtype))
    moved = jnp.moveaxis(row_grads.astype(jnp.float32), -2, 0)
    sums = jnp.moveaxis(jax.ops.segment_sum(moved, inverse.reshape(-1), num_segments=t), 0, -2)
    rounded = sums.astype(jnp.bfloat16)
    hints = dict(mode="drop", unique_indices=True, indices_are_sorted=True)
    if dense_grad is None:
        return acc.at[..., unique, :].add(rounded.astype(jnp.float32), **hints)
    return acc + dense_grad.at[..., unique, :].add(rounded, **hints).astype(jnp.float32)


def dense_embed(acc, tokens, row_grads, dense_grad=None):
    """accumulate_dense_embed.patch: a 2-D table without a dense gradient goes through a zero bf16 one."""
    if dense_grad is None and acc.ndim == 2:
        dense_grad = jnp.zeros(acc.shape, jnp.bfloat16)
    return ops.accumulate_gathered_grad(acc, tokens, row_grads, dense_grad)


def step(fn, tied):
    def run(acc, tokens, rows, ve_rows, head_grad):
        def micro(a, i):
            embed = fn(a["embed"], tokens[i], rows[i], head_grad if tied else None)
            return {"embed": embed, "ve": fn(a["ve"], tokens[i], ve_rows[i])}, None
        return jax.lax.scan(micro, acc, jnp.arange(tokens.shape[0]))[0]
    return jax.jit(run)


def main():
    t, v, d = (int(x) for x in sys.argv[1:4]) if len(sys.argv) > 3 else (49152, 50304, 768)
    n = 8
    rng = np.random.default_rng(0)
    zipf = np.minimum(rng.zipf(1.2, (n, t)) - 1, v - 1).astype(np.int32)  # frequent tokens repeat, as text's do
    tokens = jnp.asarray(zipf)
    rows = jnp.asarray(rng.standard_normal((n, t, d)), jnp.bfloat16)
    ve_rows = jnp.asarray(rng.standard_normal((n, 5, t, d)), jnp.bfloat16)
    head_grad = jnp.asarray(rng.standard_normal((v, d)), jnp.bfloat16)
    acc = {"embed": jnp.zeros((v, d), jnp.float32), "ve": jnp.zeros((5, v, d), jnp.float32)}
    print(f"{jax.devices()[0].device_kind}: T={t} V={v} D={d}, {n} micro-batches", flush=True)
    for tied in (True, False):
        outs = {}
        for name, fn in (("shipped", ops.accumulate_gathered_grad), ("hints", hinted), ("dense embed", dense_embed)):
            f = step(fn, tied)
            out = jax.block_until_ready(f(acc, tokens, rows, ve_rows, head_grad))
            times = []
            for _ in range(5):
                start = time.perf_counter()
                jax.block_until_ready(f(acc, tokens, rows, ve_rows, head_grad))
                times.append(time.perf_counter() - start)
            outs[name] = out
            same = all(np.array_equal(np.asarray(out[k]), np.asarray(outs["shipped"][k])) for k in out)
            print(f"{'tied' if tied else 'untied':6s} {name:12s} {1e3 * sorted(times)[2]:8.2f} ms for {n} micro-batches"
                  f" | same bits as shipped: {same}", flush=True)


if __name__ == "__main__":
    main()
