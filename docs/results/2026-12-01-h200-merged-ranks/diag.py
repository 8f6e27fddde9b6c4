"""GPU diagnostics: (1) the merged-ranks compiled step against one rank per forward, and one rank per forward run twice
(the GPU's own run-to-run spread); (2) the fused head loss at small shapes: its e5m2 gradient against the reference's
quantisation, and its dh/dW against exact products of its own e5m2 gradient."""
import sys, dataclasses, json
sys.path.insert(0, "tests")
import numpy as np, jax, jax.numpy as jnp
import test_engine as te
import test_kernels_dense as td
from jaxrun import engine, sharding, ops
from jaxrun.kernels import softcap_ce

out = {}
# (1)
src = open("tests/test_engine.py").read()
body = src[src.index("def test_merged_ranks_in_the_compiled_step_with_the_gpu_kernels"):]
body = body.replace("    for tokens_per_forward in (0, 4 * t):", "    for tokens_per_forward in (0, -1, 4 * t):")
body = body.replace("c = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, train_forward_tokens=tokens_per_forward))",
                    "c = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, train_forward_tokens=max(0, tokens_per_forward)))")
body = body.split("    (ref_loss, ref), (loss, grads) = results[0], results[4 * t]")[0]
body += """
    def rel(a, b):
        b = np.asarray(b, np.float64); return float(np.linalg.norm(np.asarray(a, np.float64) - b) / max(np.linalg.norm(b), 1e-30))
    (l0, g0), (l1, g1), (lm, gm) = results[0], results[-1], results[4 * t]
    return {"loss": [float(l0), float(l1), float(lm)], "merged": {k: rel(gm[k], g0[k]) for k in g0},
            "rerun": {k: rel(g1[k], g0[k]) for k in g0}}
"""
body = body.replace("def test_merged_ranks_in_the_compiled_step_with_the_gpu_kernels():", "def diag_merged():")
exec(body, te.__dict__)
out["merged"] = te.diag_merged()
print(json.dumps(out["merged"], indent=1), flush=True)
# (2)
rows = []
for t, v, weights in [(7, 1000, (1.0, 0.5, 0.25)), (9, 4096 * 2 + 128, (0.7, 0.2, 0.0)), (5, 50, (1.0,))]:
    h, w, targets = td._head_loss_inputs(t, v, 64, seed=t * v)
    m = jnp.asarray(weights, jnp.float32)
    logits = jax.jit(lambda h, w: ops.lm_head_xla(h, w, fp8=True, scales=td.SCALES))(h, w)
    _, _, _, gq = jax.jit(lambda lg: softcap_ce.softcap_ce_fused_fp8(lg, targets, m, td.SOFTCAP, td.SCALES[2]))(logits)
    _, d_logits, _ = td._exact(td._ce_reference)(logits, targets, m, jnp.ones((t,), jnp.float32))
    ref_gq = td._exact(lambda d: td._q(d.astype(jnp.bfloat16), td.SCALES[2], jnp.float8_e5m2, 57344))(d_logits)
    a, b = np.asarray(gq).astype(np.float32), np.asarray(ref_gq).astype(np.float32)
    fused = lambda h, w: softcap_ce.head_loss(h, w, targets, m, fp8=True, scales=td.SCALES, softcap=td.SOFTCAP, lm_head=None, cross_entropy=None)
    (dh, dw) = jax.jit(jax.grad(fused, argnums=(0, 1)))(h, w)
    _, own_dh, own_dw = td._exact(lambda h, w, g: td._fp8_head_reference(h, w, g))(h, w, jnp.asarray(a).astype(jnp.bfloat16) * td.SCALES[2])
    _, ref_dh, ref_dw = td._exact(lambda h, w, g: td._fp8_head_reference(h, w, g))(h, w, d_logits.astype(jnp.bfloat16))
    rows.append({"t": t, "v": v, "e5m2 differ": int((a != b).sum()), "of": a.size,
                 "dh vs own-gq products": td.rel_err(dh, own_dh), "dw vs own-gq products": td.rel_err(dw, own_dw),
                 "dh vs reference": td.rel_err(dh, ref_dh), "dw vs reference": td.rel_err(dw, ref_dw)})
    print(json.dumps(rows[-1]), flush=True)
json.dump({**out, "head_loss": rows}, open(sys.argv[1], "w"), indent=1)
