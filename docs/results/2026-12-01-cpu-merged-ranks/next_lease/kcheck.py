"""The new CE kernels against the previous commit's (beff1a0, unpacked in /tmp/o): bits of every output, and time."""
import importlib.util, json, os, statistics, sys, time
import numpy as np
import jax, jax.numpy as jnp
from jaxrun.kernels import softcap_ce as new

spec = importlib.util.spec_from_file_location("old_softcap_ce", "/tmp/o/kernels/softcap_ce.py")
old = importlib.util.module_from_spec(spec); sys.modules[spec.name] = old  # its dataclasses look it up
spec.loader.exec_module(old)
SOFTCAP, GS = (23.0, 5.0, 7.5), 0.75 / 448

def timeit(f, *a, reps=20):
    jax.block_until_ready(f(*a)); ts = []
    for _ in range(reps):
        t = time.perf_counter(); jax.block_until_ready(f(*a)); ts.append(time.perf_counter() - t)
    return statistics.median(ts) * 1e3

def bits(x):
    x = np.asarray(x)
    return x.view(np.uint8) if x.dtype.itemsize == 1 else x.view(np.uint16 if x.dtype.itemsize == 2 else np.uint32)

rows = []
for t, v, weights, spread, seed in ((16384, 50304, (1.0, 0.5, 0.25), 3.0, 0), (16384, 50304, (1.0, 0.5, 0.25), 12.0, 1),
                                    (300, 50304, (0.7, 0.2, 0.0), 3.0, 2), (9, 4096 * 2 + 128, (1.0, 0.5), 6.0, 3),
                                    (5, 50, (1.0,), 6.0, 4)):
    k1, k2, k3 = jax.random.split(jax.random.key(seed), 3)
    logits = (jax.random.normal(k1, (t, v), jnp.float32) * spread).astype(jnp.bfloat16)
    targets = jax.random.randint(k2, (t,), 0, v, jnp.int32)
    if t > 6:
        targets = targets.at[5].set(targets[6])  # one column that is two rows' targets
    w = jnp.asarray(weights, jnp.float32)
    dloss = jax.random.uniform(k3, (t,), jnp.float32, 0.5, 2.0)
    row = {"T": t, "V": v, "weights": weights, "spread": spread}
    for name, mod in (("new", new), ("old", old)):
        fused = jax.jit(lambda lg, m=mod: m.softcap_ce_fused_fp8(lg, targets, w, SOFTCAP, GS))
        fwd = jax.jit(lambda lg, m=mod: m.softcap_ce_forward(lg, targets, w, SOFTCAP))
        bwd = jax.jit(lambda lg, lse, m=mod: m.softcap_ce_backward(lg, targets, w, lse, dloss, SOFTCAP))
        f_out = fused(logits); lse = fwd(logits)[1]
        row[name] = {"fused": [bits(x) for x in f_out], "fwd": [bits(x) for x in fwd(logits)], "bwd": bits(bwd(logits, lse))}
        if t == 16384:
            row[name + "_ms"] = {"fused": timeit(fused, logits), "fwd": timeit(fwd, logits), "bwd": timeit(bwd, logits, lse)}
    n, o = row.pop("new"), row.pop("old")
    row["fused_same"] = [bool(np.array_equal(a, b)) for a, b in zip(n["fused"], o["fused"])]
    row["fwd_same"] = [bool(np.array_equal(a, b)) for a, b in zip(n["fwd"], o["fwd"])]
    row["bwd_same"] = bool(np.array_equal(n["bwd"], o["bwd"]))
    if not row["bwd_same"]:
        row["bwd_differ"] = int((n["bwd"] != o["bwd"]).sum())
    if not row["fused_same"][3]:
        row["gq_differ"] = int((n["fused"][3] != o["fused"][3]).sum())
    rows.append(row); print(json.dumps(row), flush=True)
ok = all(all(r["fused_same"]) and all(r["fwd_same"]) and r["bwd_same"] for r in rows)
print("ALL BITWISE THE SAME" if ok else "SOME OUTPUTS DIFFER")
json.dump(rows, open(os.environ.get("R", ".") + "/kcheck.json", "w"), indent=1)
