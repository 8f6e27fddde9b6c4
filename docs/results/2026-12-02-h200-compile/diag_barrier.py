"""The optimization barrier in ops.scaled_fp8_dot at the record's shape: the fused head loss's (loss, dh, dW) with it
and without it, bit for bit, and the optimised HLO's FP8 GEMM custom calls either way."""
import sys, json, re
sys.path.insert(0, "tests")
import numpy as np, jax, jax.numpy as jnp
from jax import lax
import test_kernels_dense as td
from jaxrun import ops
from jaxrun.kernels import softcap_ce

t, v, d = 16384, td.MODEL.vocab_size, td.MODEL.model_dim
h, w, targets = td._head_loss_inputs(t, v, d, seed=1)
m = jnp.asarray((1.0, 0.5, 0.25), jnp.float32)
f = lambda h, w: softcap_ce.head_loss(h, w, targets, m, fp8=True, scales=td.SCALES, softcap=td.SOFTCAP, lm_head=None, cross_entropy=None)
res = {}
real_barrier = lax.optimization_barrier
for name, barrier in (("with", real_barrier), ("without", lambda x: x)):
    ops.lax.optimization_barrier = barrier
    jf = jax.jit(jax.value_and_grad(f, argnums=(0, 1)))
    text = jf.lower(h, w).compile().as_text()
    loss, (dh, dw) = jf(h, w)
    res[name] = (np.asarray(loss), np.asarray(dh.astype(jnp.float32)), np.asarray(dw.astype(jnp.float32)))
    print(name, "custom calls:", sorted(set(re.findall(r'custom_call_target="([^"]+)"', text))), flush=True)
ops.lax.optimization_barrier = real_barrier
out = {k: bool(np.array_equal(a, b)) for k, a, b in zip(("loss", "dh", "dw"), res["with"], res["without"])}
out.update({f"{k}_rel": float(np.linalg.norm(a - b) / np.linalg.norm(b)) for k, a, b in zip(("dh", "dw"), res["with"][1:], res["without"][1:])})
print(json.dumps(out)); json.dump(out, open(sys.argv[1], "w"))
