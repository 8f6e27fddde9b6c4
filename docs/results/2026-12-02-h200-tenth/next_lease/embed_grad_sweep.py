"""The embed_grad op per call at the step's shapes: XLA's op (ops.accumulate_gathered_grad, as shipped), then the
chunked triton kernels (kernels/embed_grad.py, with embed_grad_chunked.patch) at their defaults and at each candidate
launch shape given. Zipf(1.1) tokens, a skew steeper than text's. Shapes: 65,536 rows (phases 1 and 2's forward) and
49,152 (phase 3's), the five value-embedding tables at once, and the token table alone.

    python docs/results/2026-12-02-h200-tenth/next_lease/embed_grad_sweep.py [C,R,BLOCK_D,WARPS ...]
"""
import sys

import jax
import jax.numpy as jnp
import numpy as np

from jaxrun import bench, ops
from jaxrun.kernels import embed_grad


def main():
    candidates = [None] + [tuple(int(x) for x in arg.split(",")) for arg in sys.argv[1:]]
    v, d = 50304, 768
    for t in (65536, 49152):
        tokens = jnp.asarray(np.minimum(np.random.default_rng(t).zipf(1.1, t) - 1, v - 1).astype(np.int32))
        for label, lead in (("5 value-embedding tables", (5,)), ("token table", ())):
            acc = jnp.zeros((*lead, v, d), jnp.float32)
            rows = jax.random.normal(jax.random.key(t), (*lead, t, d), jnp.bfloat16)
            xla_ms, _ = bench.time_ms(ops.accumulate_gathered_grad, (acc, tokens, rows))
            print(f"T={t} {label:26s} xla    {xla_ms:.4f} ms", flush=True)
            for shape in candidates:
                name = "defaults" if shape is None else ",".join(map(str, shape))
                kw = {} if shape is None else dict(zip(("chunk_rows", "rows_per_tile", "block_d", "num_warps"), shape))
                try:
                    ms, _ = bench.time_ms(lambda a, k, r, kw=kw: embed_grad.accumulate_rows(a, k, r, **kw),
                                          (acc, tokens, rows))
                except Exception as err:  # a launch shape that does not fit: say so, go on
                    print(f"T={t} {label:26s} triton {name}: {type(err).__name__}: {str(err).splitlines()[0][:120]}",
                          flush=True)
                    continue
                print(f"T={t} {label:26s} triton {name:16s} {ms:.4f} ms ({xla_ms / ms:.2f}x xla)", flush=True)


if __name__ == "__main__":
    main()
