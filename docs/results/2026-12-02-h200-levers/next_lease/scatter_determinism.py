"""The embedding tables' gradient accumulation (ops.accumulate_gathered_grad, as the engine runs it: a scan of 8
micro-batches at phase 3's shapes, untied and tied) timed, and checked for determinism: two separate compiles, each run
twice, must give the same bits. Run it with and without XLA_FLAGS=--xla_gpu_exclude_nondeterministic_ops=true (XLA's
scatter then goes through its sort-and-prefix-scan expander instead of atomics).

    python docs/results/2026-12-02-h200-levers/next_lease/scatter_determinism.py [T V D]   # small shapes on a CPU

With TRACE_DIR set (on a GPU), one call of each is also traced there and its kernels listed: which of the op's
kernels (the sort, the segment sum, the scatter into the table) takes the time.
"""
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from jaxrun import ops, profiling


def compiled(tied):
    def run(acc, tokens, rows, ve_rows, head_grad):
        def micro(a, i):
            embed = ops.accumulate_gathered_grad(a["embed"], tokens[i], rows[i], head_grad if tied else None)
            return {"embed": embed, "ve": ops.accumulate_gathered_grad(a["ve"], tokens[i], ve_rows[i])}, None
        return jax.lax.scan(micro, acc, jnp.arange(tokens.shape[0]))[0]
    return jax.jit(run)


def main():
    t, v, d = (int(x) for x in sys.argv[1:4]) if len(sys.argv) > 3 else (49152, 50304, 768)
    n = 8
    rng = np.random.default_rng(0)
    tokens = jnp.asarray(np.minimum(rng.zipf(1.2, (n, t)) - 1, v - 1).astype(np.int32))  # text-like repeats
    rows = jnp.asarray(rng.standard_normal((n, t, d)), jnp.bfloat16)
    ve_rows = jnp.asarray(rng.standard_normal((n, 5, t, d)), jnp.bfloat16)
    head_grad = jnp.asarray(rng.standard_normal((v, d)), jnp.bfloat16)
    acc = {"embed": jnp.zeros((v, d), jnp.float32), "ve": jnp.zeros((5, v, d), jnp.float32)}
    args = (acc, tokens, rows, ve_rows, head_grad)
    print(f"{jax.devices()[0].device_kind}: T={t} V={v} D={d}, {n} micro-batches; "
          f"XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}", flush=True)
    for tied in (False, True):
        outs, times = [], []
        for _ in range(2):  # two compiles (two jit objects), each run twice
            f = compiled(tied)
            outs.append(jax.block_until_ready(f(*args)))
            for _ in range(5):
                start = time.perf_counter()
                out = jax.block_until_ready(f(*args))
                times.append(time.perf_counter() - start)
            outs.append(out)
        same = all(np.array_equal(np.asarray(o[k]), np.asarray(outs[0][k])) for o in outs[1:] for k in o)
        print(f"{'tied' if tied else 'untied':6s} {1e3 * sorted(times)[len(times) // 2]:8.2f} ms for {n} micro-batches"
              f" | 4 results (2 compiles x 2 runs) bit for bit the same: {same}", flush=True)
        if os.environ.get("TRACE_DIR") and jax.default_backend() == "gpu":
            with profiling.trace(os.path.join(os.environ["TRACE_DIR"], "tied" if tied else "untied")) as where:
                jax.block_until_ready(f(*args))
            profiling.print_summary(profiling.summarize(where), top=12)


if __name__ == "__main__":
    main()
