"""Throwaway: time the head/CE pieces at T=16384 on the GPU (separate ops vs the fused kernel and its launches)."""
import sys, jax, jax.numpy as jnp, numpy as np
from jaxrun import bench, ops
from jaxrun.config import load_config
from jaxrun.kernels import softcap_ce as ce
m = load_config("configs/record60.py").model
T, V, D = 16384, m.vocab_size, m.model_dim
w8 = jnp.asarray((1.0, 0.5, 0.25), jnp.float32)
logits = (jax.random.normal(jax.random.key(1), (T, V), jnp.float32) * 3).astype(jnp.bfloat16)
tg = jax.random.randint(jax.random.key(2), (T,), 0, V, jnp.int32)
gs = m.fp8_scales[2]
def t(name, fn, *a):
    ms, _ = bench.time_ms(fn, a); print(f"{name:60s} {ms:8.3f} ms", flush=True)
t("ce fwd kernel", lambda lg: ce.softcap_ce_forward(lg, tg, w8, m.softcap), logits)
lse = jax.jit(lambda lg: ce.softcap_ce_forward(lg, tg, w8, m.softcap)[1])(logits)
one = jnp.ones((T,), jnp.float32)
t("ce bwd kernel", lambda lg, l: ce.softcap_ce_backward(lg, tg, w8, l, one, m.softcap), logits, lse)
g = jax.jit(lambda lg, l: ce.softcap_ce_backward(lg, tg, w8, l, one, m.softcap))(logits, lse)
t("quantize e5m2 (xla)", lambda g: ops.quantize_fp8(g, gs, jnp.float8_e5m2), g)
gq = ops.quantize_fp8(g, gs, jnp.float8_e5m2)
t("transpose e5m2 (xla)", lambda q: jnp.transpose(q), gq)
for block, tail, gb, warps in [(1024,1024,4096,4),(1024,1024,2048,4),(1024,1024,1024,4),(1024,1024,4096,8),(2048,1024,4096,8),(4096,1024,4096,8),(2048,1024,2048,8),(1024,1024,8192,8)]:
    L = ce.RowLaunch(block=block, tail_block=tail, num_warps=warps)
    t(f"fused block={block} tail={tail} grad={gb} warps={warps}", lambda lg: ce.softcap_ce_fused_fp8(lg, tg, w8, m.softcap, gs, launch=L, grad_block=gb), logits)
h = (jax.random.normal(jax.random.key(3), (T, D), jnp.float32)).astype(jnp.bfloat16)
w = (jax.random.normal(jax.random.key(4), (V, D), jnp.float32) * 0.02).astype(jnp.bfloat16)
parts = dict(lm_head=ops.lm_head_xla, cross_entropy=ce.cross_entropy)
for name, f in (("head_loss separate", ops.head_loss_xla), ("head_loss fused", ce.head_loss)):
    loss = lambda h, w, f=f: f(h, w, tg, w8, fp8=True, scales=m.fp8_scales, softcap=m.softcap, **parts)
    t(name + " fwd+bwd", bench.with_vjp(loss), h, w, jnp.float32(1.0))
