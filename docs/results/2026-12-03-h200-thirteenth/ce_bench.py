"""Times variant copies of the fused CE kernel (ce_variants.py writes them) at the record's micro-batch, T = 16,384
rows x V = 50,304, and checks each one's outputs against the shipped kernel's (ce_base.py) and against fp64 numpy.
python ce_bench.py FOLDER NAME...   (one line per variant; FOLDER/ce_bench.json)"""
import importlib.util, json, sys
import jax, jax.numpy as jnp, ml_dtypes, numpy as np
from jaxrun.bench import time_ms
from jaxrun.config import CONFIG_DIR, load_config

folder, names = sys.argv[1], sys.argv[2:]
model = load_config(CONFIG_DIR / "record60.py").model
SOFTCAP, GSCALE = model.softcap, model.fp8_scales[2]
T, V = 16_384, model.vocab_size
W = jnp.asarray((1.0, 0.5, 0.25), jnp.float32)
kl, kt = jax.random.split(jax.random.key(0))
logits = (jax.random.normal(kl, (T, V), jnp.float32) * 4.0).astype(jnp.bfloat16)  # std 4, tails to ~±20
targets = jax.random.randint(kt, (T,), 0, V, jnp.int32)

def load(name):
    spec = importlib.util.spec_from_file_location(f"ce_{name}", f"{folder}/ce_{name}.py")
    mod = importlib.util.module_from_spec(spec); sys.modules[spec.name] = mod; spec.loader.exec_module(mod)
    return mod

def fp64_rows(rows):
    """loss and the e5m2 gradient of these rows, recipe §2.1 in fp64 (bf16 rounding, then e5m2 as ops.quantize_fp8)."""
    cap, off, temp = SOFTCAP
    lg = np.asarray(logits[rows].astype(jnp.float32), np.float64)
    sig = 1 / (1 + np.exp(-(lg + off) / temp)); z = cap * sig
    lse = np.log(np.exp(z - z.max(1, keepdims=True)).sum(1)) + z.max(1)
    tg = np.asarray(targets); w = np.asarray(W, np.float64)
    loss = np.zeros(len(rows)); hits = np.zeros_like(z); S = np.zeros(len(rows))
    for r, i in enumerate(rows):
        for k in range(3):
            if i + k < T:
                loss[r] += w[k] * (lse[r] - z[r, tg[i + k]]); hits[r, tg[i + k]] += w[k]; S[r] += w[k]
    grad = (S[:, None] * np.exp(z - lse[:, None]) - hits) * (z * (1 - sig) / temp)
    g16 = grad.astype(np.float32).astype(ml_dtypes.bfloat16).astype(np.float32)
    lim = float(ml_dtypes.finfo(ml_dtypes.float8_e5m2).max)
    return loss, np.clip(g16 / np.float32(GSCALE), -lim, lim).astype(ml_dtypes.float8_e5m2).astype(np.float32)

rows = np.r_[0:32, T - 32:T]
ref_loss, ref_gq = fp64_rows(rows)
results, base = {}, None
for name in names:
    mod = load(name)
    fused = lambda lg, tg: mod.softcap_ce_fused_fp8(lg, tg, W, SOFTCAP, GSCALE)  # noqa: E731
    fwd = lambda lg, tg: mod.softcap_ce_forward(lg, tg, W, SOFTCAP)  # noqa: E731
    bwd = lambda lg, tg, lse: mod.softcap_ce_backward(lg, tg, W, lse, jnp.ones((T,), jnp.float32), SOFTCAP)  # noqa: E731
    ms, cs = time_ms(fused, (logits, targets), samples=7)
    fms, _ = time_ms(fwd, (logits, targets), samples=7)
    loss, lse, terms, gq = jax.jit(fused)(logits, targets)
    bms, _ = time_ms(bwd, (logits, targets, lse), samples=7)
    out = dict(fused_ms=ms, forward_ms=fms, backward_ms=bms, compile_s=cs)
    gqf = np.asarray(gq).astype(np.float32)
    l = np.asarray(loss)
    out["fp64_loss_max_rel"] = float(np.max(np.abs(l[rows] - ref_loss) / np.abs(ref_loss)))
    d = gqf[rows] != ref_gq
    out["fp64_gq_differ_frac"] = float(d.mean())
    out["fp64_gq_max_step"] = float(np.max(np.abs(gqf[rows][d] / np.where(ref_gq[d] == 0, np.nan, ref_gq[d]) - 1), initial=0))
    if base is None:
        base = (l, np.asarray(lse), gqf)
    else:
        out["vs_base_loss_max_rel"] = float(np.max(np.abs(l - base[0]) / np.abs(base[0])))
        out["vs_base_lse_max_abs"] = float(np.max(np.abs(np.asarray(lse) - base[1])))
        dd = gqf != base[2]
        out["vs_base_gq_differ_frac"] = float(dd.mean())
        out["nan_or_inf"] = int(np.sum(~np.isfinite(gqf)))
    results[name] = out
    print(name, " ".join(f"{k}={v:.4g}" for k, v in out.items()), flush=True)
b = results[names[0]]["fused_ms"]
for name in names:
    print(f"{name:18s} fused {results[name]['fused_ms']:.3f} ms ({results[name]['fused_ms'] / b:.3f}x)  forward "
          f"{results[name]['forward_ms']:.3f}  backward {results[name]['backward_ms']:.3f}")
json.dump(results, open(f"{folder}/ce_bench.json", "w"), indent=1)
