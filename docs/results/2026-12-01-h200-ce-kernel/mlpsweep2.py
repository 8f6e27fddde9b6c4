"""Clean (alone on the GPU) timing of the fused ReLU^2 matmul's tiles against XLA, at the three phases' shapes."""
import json, os, statistics, time
import jax, jax.numpy as jnp
from jaxrun.kernels import relu2_mlp as R
from jaxrun.kernels.triton_runtime import MatmulTiles

def timeit(f, *a, reps=40):
    jax.block_until_ready(f(*a))
    ts = []
    for _ in range(reps):
        t = time.perf_counter(); jax.block_until_ready(f(*a)); ts.append(time.perf_counter() - t)
    return statistics.median(ts) * 1e3 / 10

def rep(fn):
    return jax.jit(lambda *x: [fn(*x) for _ in range(10)])

cands = [(64, 256, 64, 4, 4), (128, 256, 64, 8, 3), (128, 256, 64, 8, 4), (256, 128, 64, 8, 3), (256, 128, 64, 8, 4),
         (128, 256, 128, 8, 2)]
out = []
key = jax.random.PRNGKey(0)
for M in (16384, 49152):
    K, N = 768, 3072
    a = jax.random.normal(key, (M, K), jnp.bfloat16)
    b = (jax.random.normal(key, (N, K), jnp.bfloat16) * 0.03).astype(jnp.bfloat16)
    pre = jax.random.normal(key, (M, N), jnp.bfloat16)
    r = {"M": M,
         "xla_dot": timeit(rep(lambda a, b: jnp.dot(a, b.T)), a, b),
         "xla_fwd": timeit(rep(lambda a, b: (lambda p: (p, jnp.square(jnp.maximum(p, 0))))(jnp.dot(a, b.T))), a, b),
         "xla_bwd": timeit(rep(lambda a, b, pre: (2 * jnp.dot(a, b.T).astype(jnp.float32) * jnp.maximum(pre, 0).astype(jnp.float32)).astype(jnp.bfloat16)), a, b, pre)}
    print(json.dumps(r), flush=True); out.append(r)
    for bm, bn, bk, w, st in cands:
        t = MatmulTiles(bm, bn, bk, 8, w, st)
        try:
            f = timeit(rep(lambda a, b: R.relu2_matmul(a, b, tiles=t)), a, b)
            g = timeit(rep(lambda a, b, pre: R.relu2_matmul(a, b, pre, tiles=t)), a, b, pre)
        except Exception as e:
            print("fail", t, str(e)[:100], flush=True); continue
        row = {"M": M, "tiles": [bm, bn, bk, w, st], "fwd": f, "bwd": g}
        out.append(row); print(json.dumps(row), flush=True)
json.dump(out, open(os.environ.get("R", ".") + "/mlpsweep2.json", "w"), indent=1)
