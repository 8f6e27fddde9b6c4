"""How fast could an FA3-style attention kernel be here? JAX's own Hopper flash attention in Mosaic GPU
(jax.experimental.pallas.ops.gpu.attention_mgpu: warp-specialised, TMA, wgmma) against jaxrun's triton kernel, on one
document (no document mask) with head dim 128, bf16, the record's 6 heads. It is a probe, not a port: the mgpu kernel
has no sliding window or document mask, and its backward is non-causal only.

- forward, causal, whole sequence: both kernels do the same work (the triton one with window = T, one segment)
- forward + backward: mgpu non-causal (all T^2 pairs) against triton causal (T^2/2), compared by TFLOP/s

Rates count 4·T·T·H·D FLOPs for a non-causal forward, half that causal, and 2.5x the forward for forward + backward
(the recompute-free count FA papers use). A GPU script: prints one line per case.

    python docs/results/2026-12-02-h200-levers/next_lease/mgpu_probe.py [T ...]
"""
import sys

import jax
import jax.numpy as jnp

from jaxrun import bench
from jaxrun.kernels import flash_attention

H, D = 6, 128


def rate(flops, ms):
    return flops / (ms * 1e-3) / 1e12


def main():
    if jax.default_backend() != "gpu":
        sys.exit("mgpu_probe.py needs an NVIDIA Hopper GPU")
    from jax.experimental.pallas.ops.gpu import attention_mgpu as mgpu

    for t in [int(x) for x in sys.argv[1:]] or [16384, 49152]:
        keys = jax.random.split(jax.random.key(0), 4)
        q, k, v, do = (jax.random.normal(key, (t, H, D), jnp.bfloat16) for key in keys)
        seg = jnp.zeros((t,), jnp.int32)
        scale = jnp.float32(D ** -0.5)
        full = 4 * t * t * H * D

        def triton_fwd(q, k, v):
            return flash_attention.attention(q, k, v, seg, scale, window=t)

        def triton_fwd_bwd(q, k, v, do):
            out, vjp = jax.vjp(triton_fwd, q, k, v)
            return out, vjp(do)

        ms, _ = bench.time_ms(triton_fwd, (q, k, v))
        print(f"T={t:6d} triton fwd causal            {ms:8.3f} ms {rate(full / 2, ms):6.0f} TFLOP/s", flush=True)
        ms, _ = bench.time_ms(triton_fwd_bwd, (q, k, v, do))
        print(f"T={t:6d} triton fwd+bwd causal        {ms:8.3f} ms {rate(2.5 * full / 2, ms):6.0f} TFLOP/s", flush=True)

        # (batch 1, T, H, D) in float16: the mgpu kernel takes f16 only (bf16 fails: "src had type bfloat16 and dst had
        # type float16"); the tensor cores run f16 and bf16 at one rate. The timing does not need the scale.
        qb, kb, vb, dob = (x[None].astype(jnp.float16) for x in (q, k, v, do))
        for block_kv in (128, 64):
            for causal in (True, False):
                cfg = mgpu.TuningConfig(block_q=64, block_kv=block_kv, max_concurrent_steps=2, causal=causal,
                                        block_q_dkv=64, block_kv_dkv=64, block_q_dq=64, block_kv_dq=64)
                flops = full / 2 if causal else full
                try:
                    ms, _ = bench.time_ms(lambda q, k, v, cfg=cfg: mgpu.attention(q, k, v, cfg), (qb, kb, vb))
                    print(f"T={t:6d} mgpu fwd {'causal' if causal else 'full  '} block_kv={block_kv:3d}  {ms:8.3f} ms "
                          f"{rate(flops, ms):6.0f} TFLOP/s", flush=True)
                    if not causal:
                        def fwd_bwd(q, k, v, do, cfg=cfg):
                            out, vjp = jax.vjp(lambda q, k, v: mgpu.attention(q, k, v, cfg), q, k, v)
                            return out, vjp(do)
                        ms, _ = bench.time_ms(fwd_bwd, (qb, kb, vb, dob))
                        print(f"T={t:6d} mgpu fwd+bwd full   block_kv={block_kv:3d}  {ms:8.3f} ms "
                              f"{rate(2.5 * flops, ms):6.0f} TFLOP/s", flush=True)
                except Exception as err:  # a config this GPU or version refuses: say so, go on
                    print(f"T={t:6d} mgpu causal={causal} block_kv={block_kv}: {type(err).__name__}: "
                          f"{str(err).splitlines()[0][:160]}", flush=True)


if __name__ == "__main__":
    main()
