"""Times variant copies of the triton attention kernels (attn_variants.py writes them) at phase 3's calls, forward
alone and forward + backward, and compares each one's output and gradients with the committed kernels'.
python attn_bench.py FOLDER NAME...   (one line per variant and shape; FOLDER/attn_bench.json)"""
import importlib.util, json, sys
import jax, jax.numpy as jnp, numpy as np
from jaxrun.bench import attention_call, attention_inputs, attention_shapes, time_ms
from jaxrun.config import CONFIG_DIR, load_config

folder, names = sys.argv[1], sys.argv[2:]
cfg = load_config(CONFIG_DIR / "record60.py")
d, scale = cfg.model.head_dim, jnp.float32(cfg.schedule.attn_scale_init)
shapes = [s for s in attention_shapes(cfg) if s.label.startswith("phase 3")]

def load(name):
    spec = importlib.util.spec_from_file_location(f"fa_{name}", f"{folder}/fa_{name}.py")
    mod = importlib.util.module_from_spec(spec); sys.modules[spec.name] = mod; spec.loader.exec_module(mod)
    return mod

results, base = {}, {}
for i, shape in enumerate(shapes):
    q, k, v, dout, seg = attention_inputs(shape, d, cfg.data.max_doc_len, seed=i)
    seg = jnp.asarray(seg)
    for name in names:
        mod = load(name)
        fwd = attention_call(mod.attention, scale=scale, window=shape.window, backward=False)
        both = attention_call(mod.attention, scale=scale, window=shape.window, backward=True)
        row = dict(fwd_ms=time_ms(fwd, (q, k, v, seg), samples=5)[0],
                   fwd_bwd_ms=time_ms(both, (q, k, v, seg, dout), samples=5)[0])
        out, grads = jax.jit(both)(q, k, v, seg, dout)
        got = [np.asarray(x, np.float32) for x in (out, *grads)]
        if name == names[0]:
            base[shape.label] = got
        else:
            row["max_abs_vs_base"] = [float(np.max(np.abs(a - b))) for a, b in zip(got, base[shape.label])]
            row["max_abs_base"] = [float(np.max(np.abs(b))) for b in base[shape.label]]
        results[f"{shape.label}|{name}"] = row
        print(f"{shape.label:16s} T={shape.rows} H={shape.heads} W={shape.window} {name:12s} fwd {row['fwd_ms']:.3f} ms "
              f"fwd+bwd {row['fwd_bwd_ms']:.3f} ms {row.get('max_abs_vs_base', '')}", flush=True)
json.dump(results, open(f"{folder}/attn_bench.json", "w"), indent=1)
