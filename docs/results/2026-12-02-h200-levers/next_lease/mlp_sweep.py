"""The ReLU² matmul kernel (kernels/relu2_mlp.py, as checked out: shipped, or with mlp_persistent.patch) per call at
the step's shapes, for its table's tiles and for each candidate given, forward and backward, beside XLA's product with
the same epilogue. M = 65,536 (phases 1 and 2: 65,536 tokens per forward) and 49,152 (phase 3), K = 768, N = 3,072.

    python docs/results/2026-12-02-h200-levers/next_lease/mlp_sweep.py [BM,BN,BK,WARPS,STAGES ...]
"""
import sys

import jax
import jax.numpy as jnp

from jaxrun import bench
from jaxrun.kernels import relu2_mlp
from jaxrun.kernels.triton_runtime import MatmulTiles


def xla_forward(a, b):
    pre = jnp.dot(a, b.T)
    relu = jnp.maximum(pre.astype(jnp.float32), 0.0)
    return pre, (relu * relu).astype(jnp.bfloat16)


def xla_backward(g, b, pre):
    d_post = jnp.dot(g, b.T).astype(jnp.float32)
    return (2.0 * d_post * jnp.maximum(pre.astype(jnp.float32), 0.0)).astype(jnp.bfloat16)


def main():
    candidates = [None] + [MatmulTiles(bm, bn, bk, 8, w, st) for bm, bn, bk, w, st in
                           (tuple(int(x) for x in arg.split(",")) for arg in sys.argv[1:])]
    for m in (65536, 49152):
        keys = jax.random.split(jax.random.key(m), 3)
        a = jax.random.normal(keys[0], (m, 768), jnp.bfloat16)
        b = jax.random.normal(keys[1], (3072, 768), jnp.bfloat16) * 0.03
        g = jax.random.normal(keys[2], (m, 768), jnp.bfloat16)
        pre = jnp.dot(a, b.T)
        flops = 2 * m * 768 * 3072
        fwd, _ = bench.time_ms(xla_forward, (a, b))
        bwd, _ = bench.time_ms(xla_backward, (g, b, pre))
        print(f"M={m} xla                        fwd {fwd:.4f} ms ({flops / fwd / 1e9:.0f} TFLOP/s)  "
              f"bwd {bwd:.4f} ms ({flops / bwd / 1e9:.0f})", flush=True)
        for tiles in candidates:
            name = "table" if tiles is None else ",".join(map(str, (tiles.block_m, tiles.block_n, tiles.block_k,
                                                                    tiles.num_warps, tiles.num_stages)))
            try:
                fwd, _ = bench.time_ms(lambda a, b, t=tiles: relu2_mlp.relu2_matmul(a, b, tiles=t), (a, b))
                bwd, _ = bench.time_ms(lambda g, b, pre, t=tiles: relu2_mlp.relu2_matmul(g, b, pre, tiles=t),
                                       (g, b, pre))
            except Exception as err:  # a tile that does not fit (shared memory, registers): say so, go on
                print(f"M={m} triton {name:20s} {type(err).__name__}: {str(err).splitlines()[0][:120]}", flush=True)
                continue
            print(f"M={m} triton {name:20s} fwd {fwd:.4f} ms ({flops / fwd / 1e9:.0f} TFLOP/s)  "
                  f"bwd {bwd:.4f} ms ({flops / bwd / 1e9:.0f})", flush=True)


if __name__ == "__main__":
    main()
