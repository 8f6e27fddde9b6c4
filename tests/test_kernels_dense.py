"""The dense jax-triton kernels: FP8 LM head, fused ReLU² MLP, fused soft-capped MTP cross entropy (jaxrun.kernels).

CPU: input checks, the FP8 rounding helper and the bf16 head against numpy/ml_dtypes. GPU (marked `gpu`, skipped
without an NVIDIA GPU and jax-triton): outputs and gradients against references written here from recipe §1.8, §1.9,
§2.1 (numpy on small odd shapes; fp32 JAX on the record shapes, whose numpy reference would take minutes).
"""

import functools

import ml_dtypes
import numpy as np
import pytest

import jax
import jax.numpy as jnp

from jaxrun import ops
from jaxrun.config import CONFIG_DIR, load_config
from jaxrun.kernels import fp8_head, relu2_mlp, softcap_ce
from jaxrun.kernels.triton_runtime import MatmulTiles

MODEL = load_config(CONFIG_DIR / "record60.py").model
SCALES = MODEL.fp8_scales
SOFTCAP = MODEL.softcap
RECORD_T = (16_384, 32_768, 49_152)  # tokens per device in the three training phases (recipe §4)
EVAL_T = 262_144  # validation chunk (recipe §2.2)
HIGHEST = jax.lax.Precision.HIGHEST


def _exact(reference):
    """jit of a reference that keeps every rounding it writes. XLA's GPU compiler otherwise drops a round trip such
    as f32 -> bf16 -> f32 or f32 -> e5m2 -> f32 (xla_allow_excess_precision, on by default), so the reference would
    square an unrounded pre-activation or multiply an unquantised gradient while the kernel, rightly, does not."""
    return jax.jit(reference, compiler_options={"xla_allow_excess_precision": False})


def _has_gpu_kernels() -> bool:
    try:
        import jax_triton  # noqa: F401
    except ImportError:
        return False
    return jax.default_backend() == "gpu"


gpu = pytest.mark.skipif(not _has_gpu_kernels(), reason="needs an NVIDIA GPU with triton and jax-triton")


def rel_err(got, ref) -> float:
    got, ref = np.asarray(got, np.float64), np.asarray(ref, np.float64)
    assert np.isfinite(got).all(), "non-finite values in the kernel output"
    return float(np.linalg.norm(got - ref) / np.linalg.norm(ref))


# ----------------------------------------------------------------------------------------------------------------------
# CPU: input checks and helpers
# ----------------------------------------------------------------------------------------------------------------------


def test_quantize_rounds_once_and_clamps_like_ml_dtypes():
    rng = np.random.default_rng(0)
    x = (rng.standard_normal(4096) * 200).astype(np.float32)
    x[:4] = [1e6, -1e6, 448.0 * 0.5, -3.0]
    scale = 0.5
    got = np.asarray(ops.quantize_fp8(jnp.asarray(x), scale, jnp.float8_e4m3fn)).astype(np.float32)
    ref = np.clip(x / np.float32(scale), -448, 448).astype(ml_dtypes.float8_e4m3fn).astype(np.float32)
    np.testing.assert_array_equal(got, ref)
    assert got[0] == 448 and got[1] == -448  # clamped, not NaN (e4m3fn has no infinity)
    g = np.asarray(ops.quantize_fp8(jnp.asarray(x), 0.01, jnp.float8_e5m2)).astype(np.float32)
    g_ref = np.clip(x / np.float32(0.01), -57344, 57344).astype(ml_dtypes.float8_e5m2).astype(np.float32)
    np.testing.assert_array_equal(g, g_ref)


def test_bf16_eval_head_is_a_plain_product():
    rng = np.random.default_rng(1)
    h = rng.standard_normal((5, 3, 64)).astype(ml_dtypes.bfloat16)
    w = rng.standard_normal((40, 64)).astype(ml_dtypes.bfloat16)
    got = fp8_head.lm_head(jnp.asarray(h), jnp.asarray(w), fp8=False, scales=SCALES)
    assert got.shape == (5, 3, 40) and got.dtype == jnp.bfloat16
    ref = h.astype(np.float32) @ w.astype(np.float32).T
    assert rel_err(got, ref) < 1e-2


def test_tiles_cover_ragged_shapes():
    tiles = MatmulTiles(block_m=128, block_n=256, block_k=64, group_m=8, num_warps=8, num_stages=3)
    assert tiles.grid(300, 520) == (3 * 3,)
    assert tiles.grid(16_384, 50_304) == (128 * 197,)
    assert tiles.persistent_programs(300, 520) == 3 * 3  # fewer tiles than any GPU's SMs: one program per tile
    assert tiles.meta() == {"BLOCK_M": 128, "BLOCK_N": 256, "BLOCK_K": 64, "GROUP_M": 8}


def test_lm_head_rejects_bad_input():
    h, w = jnp.zeros((4, 8), jnp.bfloat16), jnp.zeros((16, 8), jnp.bfloat16)
    with pytest.raises(ValueError, match="same D"):
        fp8_head.lm_head(h, jnp.zeros((16, 6), jnp.bfloat16), fp8=True, scales=SCALES)
    with pytest.raises(ValueError, match="floating-point"):
        fp8_head.lm_head(h.astype(jnp.int32), w, fp8=True, scales=SCALES)
    for bad in [(1.0, 2.0), (1.0, -1.0, 1.0), (1.0, float("nan"), 1.0), "abc"]:
        with pytest.raises(ValueError, match="three positive numbers"):
            fp8_head.lm_head(h, w, fp8=True, scales=bad)


def test_mlp_rejects_bad_input():
    u, fc = jnp.zeros((4, 8), jnp.bfloat16), jnp.zeros((32, 8), jnp.bfloat16)
    with pytest.raises(ValueError, match="fc \\(F, D\\) and proj \\(F, D\\)"):
        relu2_mlp.mlp(u, fc, jnp.zeros((32, 6), jnp.bfloat16))
    with pytest.raises(ValueError, match="fc \\(F, D\\) and proj \\(F, D\\)"):
        relu2_mlp.mlp(jnp.zeros((4, 6), jnp.bfloat16), fc, fc)
    with pytest.raises(ValueError, match="cast it to bfloat16"):
        relu2_mlp.mlp(u.astype(jnp.float32), fc, fc)


def test_reciprocal_is_exact_for_the_record_scale_and_not_for_seven():
    # the record's gradient scale: multiplying by fl32(1/s) gives the quotient's e5m2 bits for every bf16 input
    # (docs/results/2026-12-01-h200-speed/reciprocal_check.py, run independently)
    assert softcap_ce.reciprocal_is_exact(0.75 / 448)
    # scale 7: x = bf16 0.000694275 (2^-10 * 1.421875); x / 7 = 9.918e-05 exactly halfway between the e5m2 neighbours
    # 9.155e-05 and 1.068e-04, and the quotient rounds down (to even) while x * fl32(1/7) lands just above the tie
    x = np.float32(ml_dtypes.bfloat16(0.000694275))
    by_division = np.float32(x / np.float32(7)).astype(ml_dtypes.float8_e5m2)
    by_reciprocal = np.float32(x * (np.float32(1) / np.float32(7))).astype(ml_dtypes.float8_e5m2)
    assert float(by_division) == pytest.approx(9.155e-05, rel=1e-3)
    assert float(by_reciprocal) == pytest.approx(1.068e-04, rel=1e-3)
    assert not softcap_ce.reciprocal_is_exact(7.0)


def test_cross_entropy_rejects_bad_input():
    logits, targets, weights = jnp.zeros((6, 10), jnp.bfloat16), jnp.zeros(6, jnp.int32), jnp.ones(3, jnp.float32)
    with pytest.raises(ValueError, match="bfloat16"):
        softcap_ce.cross_entropy(logits.astype(jnp.float32), targets, weights, softcap=SOFTCAP)
    with pytest.raises(ValueError, match="targets must be \\(6,\\) integers"):
        softcap_ce.cross_entropy(logits, targets[:5], weights, softcap=SOFTCAP)
    with pytest.raises(ValueError, match="targets must be"):
        softcap_ce.cross_entropy(logits, targets.astype(jnp.float32), weights, softcap=SOFTCAP)
    with pytest.raises(ValueError, match="mtp_weights"):
        softcap_ce.cross_entropy(logits, targets, weights[None], softcap=SOFTCAP)
    with pytest.raises(ValueError, match="three numbers"):
        softcap_ce.cross_entropy(logits, targets, weights, softcap=(23.0, 5.0))
    for bad in [(100.0, 5.0, 7.5), (23.0, 5.0, 0.0), (-1.0, 5.0, 7.5)]:
        with pytest.raises(ValueError, match="0 < a <="):
            softcap_ce.cross_entropy(logits, targets, weights, softcap=bad)


def test_bench_cases_of_the_dense_ops():
    """The benchmark's cases (jaxrun.bench): names per training phase, FLOPs and bytes of the recipe's shapes, runnable."""
    bench = pytest.importorskip("jaxrun.bench")
    cfg = load_config()  # the tiny CPU config: T = 256, 512, 768 per phase, D = 128, F = 512
    m, ts = cfg.model, [n * cfg.schedule.seq_len for n in cfg.schedule.seqs_per_rank]
    v, d, f = m.vocab_size, m.model_dim, m.mlp_hidden
    head = bench.lm_head_cases(cfg, ("xla",))
    kinds = ("fp8 fwd", "fp8 fwd+bwd", "FP8 GEMM only")
    assert [c.name for c in head] == [f"lm_head T={t} {k}" for t in ts for k in kinds]
    assert head[0].flops == 2 * ts[0] * v * d and head[1].flops == 6 * ts[0] * v * d and head[0].rate == "fp8"
    assert head[0].bytes == 2 * (ts[0] * d + v * d + ts[0] * v)
    mlp = bench.mlp_cases(cfg, ("xla",))
    assert [c.name for c in mlp] == [f"mlp T={t} {k}" for t in ts for k in ("fwd", "fwd+bwd")] + [
        f"mlp T={cfg.data.val_seq_len} fwd"
    ]
    assert mlp[0].flops == 4 * ts[0] * f * d and mlp[1].flops == 12 * ts[0] * f * d
    ce = bench.cross_entropy_cases(cfg, ("xla",))
    assert ce[-1].name == f"cross_entropy T={m.eval_token_chunk} next-token fwd"
    assert ce[0].bytes == 2 * ts[0] * v and ce[1].bytes == 6 * ts[0] * v and ce[0].flops == 0
    out = jax.jit(mlp[0].fn)(*mlp[0].args)
    assert out.shape == (ts[0], d) and bool(jnp.isfinite(out.astype(jnp.float32)).all())
    loss = bench.head_loss_cases(cfg, ("xla",))
    assert [c.name for c in loss] == [f"head_loss T={t} fp8 fwd+bwd" for t in ts]
    assert loss[0].flops == 6 * ts[0] * v * d and loss[0].bytes == 3 * ts[0] * v and loss[0].rate == "fp8"
    value, (dh, dw) = jax.jit(loss[0].fn)(*loss[0].args)
    assert value.shape == () and dh.shape == (ts[0], d) and dw.shape == (v, d) and bool(jnp.isfinite(value))


@pytest.mark.skipif(_has_gpu_kernels(), reason="checks the error raised where the kernels cannot run")
def test_triton_ops_say_where_they_run():
    h, w = jnp.zeros((4, 8), jnp.bfloat16), jnp.zeros((16, 8), jnp.bfloat16)
    with pytest.raises(RuntimeError, match="'xla' backend"):
        fp8_head.lm_head(h, w, fp8=True, scales=SCALES)
    with pytest.raises(RuntimeError, match="'xla' backend"):
        relu2_mlp.mlp(h, jnp.zeros((32, 8), jnp.bfloat16), jnp.zeros((32, 8), jnp.bfloat16))
    with pytest.raises(RuntimeError, match="'xla' backend"):
        softcap_ce.cross_entropy(jnp.zeros((4, 16), jnp.bfloat16), jnp.zeros(4, jnp.int32), jnp.ones(3), softcap=SOFTCAP)


# ----------------------------------------------------------------------------------------------------------------------
# References from the recipe (independent of the kernels)
# ----------------------------------------------------------------------------------------------------------------------


def _q(x, scale, dtype, limit):
    """recipe §1.9 / §14.2: x / scale in fp32, clamped to the format's range, rounded once."""
    return jnp.clip(x.astype(jnp.float32) / scale, -limit, limit).astype(dtype)


def _fp8_head_reference(h, w, dlogits):
    """(logits, dh, dW) of recipe §1.9 with fp32 products of the quantised operands."""
    xs, ws, gs = SCALES
    xq = _q(h, xs, jnp.float8_e4m3fn, 448).astype(jnp.float32)
    wq = _q(w, ws, jnp.float8_e4m3fn, 448).astype(jnp.float32)
    gq = _q(dlogits, gs, jnp.float8_e5m2, 57344).astype(jnp.float32)
    logits = (jnp.dot(xq, wq.T, precision=HIGHEST) * (xs * ws)).astype(jnp.bfloat16)
    dh = (jnp.dot(gq, wq, precision=HIGHEST) * (gs * ws)).astype(jnp.bfloat16)
    dw = (jnp.dot(gq.T, xq, precision=HIGHEST) * (gs * xs)).astype(jnp.bfloat16)
    return logits, dh, dw


def _fp8_products_fp64(h, w, dlogits):
    """(dh, dW) of recipe §1.9 in numpy fp64: the operands quantised with ml_dtypes (x / scale in fp32, clamped, rounded
    once), their exact products, the scales, one rounding to bf16."""
    xs, ws, gs = SCALES

    def q(x, scale, dtype, limit):
        x = np.asarray(x, np.float32) / np.float32(scale)
        return np.clip(x, -limit, limit).astype(dtype).astype(np.float64)

    xq, wq = q(h, xs, ml_dtypes.float8_e4m3fn, 448), q(w, ws, ml_dtypes.float8_e4m3fn, 448)
    gq = q(dlogits, gs, ml_dtypes.float8_e5m2, 57344)
    bf16 = lambda x: x.astype(ml_dtypes.bfloat16).astype(np.float64)  # noqa: E731
    return bf16(gq @ wq * (gs * ws)), bf16(gq.T @ xq * (gs * xs))


def _mlp_reference(u, fc, proj, g):
    """recipe §1.8 / §14.3 rounding points, fp32 products: (out, du, dfc, dproj, pre, post)."""
    f32 = lambda x: x.astype(jnp.float32)  # noqa: E731
    pre = jnp.dot(f32(u), f32(fc).T, precision=HIGHEST).astype(jnp.bfloat16)
    post = (jnp.maximum(f32(pre), 0) ** 2).astype(jnp.bfloat16)
    out = jnp.dot(f32(post), f32(proj), precision=HIGHEST).astype(jnp.bfloat16)
    d_post = jnp.dot(f32(g), f32(proj).T, precision=HIGHEST).astype(jnp.bfloat16)
    d_pre = (2 * f32(d_post) * jnp.maximum(f32(pre), 0)).astype(jnp.bfloat16)
    du = jnp.dot(f32(d_pre), f32(fc), precision=HIGHEST)
    dfc = jnp.dot(f32(d_pre).T, f32(u), precision=HIGHEST)
    dproj = jnp.dot(f32(post).T, f32(g), precision=HIGHEST)
    return out, du, dfc, dproj, pre, post


def _ce_reference(logits, targets, weights, g):
    """recipe §2.1 in fp32: (row loss, d_logits, d_weights); a, b, c from the record config."""
    a, b, c = SOFTCAP
    t, v = logits.shape
    sig = jax.nn.sigmoid((logits.astype(jnp.float32) + b) / c)
    z = a * sig
    lse = jax.scipy.special.logsumexp(z, axis=1)
    loss, hits, weight_sum, d_weights = jnp.zeros(t), 0.0, 0.0, []
    rows, cols = jnp.arange(t), jnp.arange(v)
    for k in range(weights.shape[0]):
        valid = rows + k < t
        tgt = targets[jnp.minimum(rows + k, t - 1)]
        term = jnp.where(valid, lse - z[rows, tgt], 0.0)
        loss += weights[k] * term
        d_weights.append(jnp.sum(g * term))
        w_k = jnp.where(valid, weights[k], 0.0)[:, None]
        weight_sum += w_k
        hits += jnp.where(cols[None, :] == tgt[:, None], w_k, 0.0)
    p = jnp.exp(z - lse[:, None])
    d_logits = g[:, None] * (weight_sum * p - hits) * (z * (1 - sig) / c)
    return loss, d_logits, jnp.stack(d_weights)


def _random(key, shape, scale=1.0, dtype=jnp.bfloat16):
    return (jax.random.normal(key, shape, jnp.float32) * scale).astype(dtype)


def _value_and_vjp(f, *args):
    """jit(f)(*primals) and its VJP at the cotangent given last, in one compiled call."""

    def run(*a):
        out, vjp = jax.vjp(f, *a[:-1])
        return out, vjp(a[-1])

    return jax.jit(run)(*args)


# ----------------------------------------------------------------------------------------------------------------------
# GPU: FP8 LM head
# ----------------------------------------------------------------------------------------------------------------------


def _check_fp8_head(t, v, d, seed):
    kh, kw, kg = jax.random.split(jax.random.key(seed), 3)
    h = _random(kh, (t, d))  # like rms-normed hidden states: |h / x_scale| stays far below 448
    w = _random(kw, (v, d), 0.005)  # recipe §1.3 init scale
    dlogits = _random(kg, (t, v), 0.05)
    logits, (dh, dw) = _value_and_vjp(lambda h, w: fp8_head.lm_head(h, w, fp8=True, scales=SCALES), h, w, dlogits)
    ref_logits, ref_dh, ref_dw = _exact(_fp8_head_reference)(h, w, dlogits)
    assert logits.dtype == dh.dtype == dw.dtype == jnp.bfloat16
    assert rel_err(logits, ref_logits) < 1e-2
    assert rel_err(dh, ref_dh) < 1e-2
    assert rel_err(dw, ref_dw) < 1e-2


@pytest.mark.gpu
@gpu
def test_fp8_head_ragged_shapes():
    _check_fp8_head(t=200, v=520, d=192, seed=0)


@pytest.mark.gpu
@gpu
@pytest.mark.parametrize("t", RECORD_T)
def test_fp8_head_record_shapes(t):
    _check_fp8_head(t=t, v=MODEL.vocab_size, d=MODEL.model_dim, seed=t)


@pytest.mark.gpu
@gpu
def test_xla_fp8_head_is_one_scaled_fp8_gemm_per_product():
    """The xla backend's CUDA form: each of the three products is one cuBLASLt FP8 GEMM with a bf16 output (the scale
    in its epilogue), and the numbers are recipe §1.9's."""
    t, v, d = 4096, MODEL.vocab_size, MODEL.model_dim
    kh, kw, kg = jax.random.split(jax.random.key(3), 3)
    h, w, dlogits = _random(kh, (t, d)), _random(kw, (v, d), 0.005), _random(kg, (t, v), 0.05)
    head = lambda h, w: ops.lm_head_xla(h, w, fp8=True, scales=SCALES)  # noqa: E731
    logits, (dh, dw) = _value_and_vjp(head, h, w, dlogits)
    ref_logits, ref_dh, ref_dw = _exact(_fp8_head_reference)(h, w, dlogits)
    for got, ref in ((logits, ref_logits), (dh, ref_dh), (dw, ref_dw)):
        assert got.dtype == jnp.bfloat16 and rel_err(got, ref) < 1e-2

    def run(h, w, g):
        out, vjp = jax.vjp(head, h, w)
        return out, vjp(g)

    hlo = jax.jit(run).lower(h, w, dlogits).compile().as_text()
    gemms = [line for line in hlo.splitlines() if "__cublas$lt$matmul$f8" in line]
    assert len(gemms) == 3, "\n".join(gemms)
    assert all("bf16[" in line.split("custom-call(")[0] for line in gemms), "\n".join(gemms)


@pytest.mark.gpu
@gpu
def test_fp8_matmul_against_numpy():
    """The raw kernel in all three uses against numpy, with e5m2 rounding done in the kernel."""
    rng = np.random.default_rng(2)
    m, n, k = 136, 264, 200
    e4, e5 = ml_dtypes.float8_e4m3fn, ml_dtypes.float8_e5m2
    a = (rng.standard_normal((m, k)) * 4).astype(e4)
    b = (rng.standard_normal((n, k)) * 4).astype(e4)
    tiles = fp8_head.GRAD_INPUT_TILES
    got = fp8_head.scaled_fp8_matmul(jnp.asarray(a), jnp.asarray(b), out_scale=0.5, fast_accum=True, tiles=tiles)
    assert rel_err(got, a.astype(np.float32) @ b.astype(np.float32).T * 0.5) < 1e-2
    g = (rng.standard_normal((m, k)) * 0.05).astype(ml_dtypes.bfloat16)
    gq = np.clip(g.astype(np.float32) / np.float32(0.01), -57344, 57344).astype(e5).astype(np.float32)
    got = fp8_head.scaled_fp8_matmul(jnp.asarray(g), jnp.asarray(b), out_scale=3.0, fast_accum=False, tiles=tiles,
                                     a_quant_scale=0.01)  # fmt: skip
    assert rel_err(got, gq @ b.astype(np.float32).T * 3.0) < 1e-2
    got = fp8_head.scaled_fp8_matmul(jnp.asarray(g.T.copy()), jnp.asarray(b), out_scale=3.0, fast_accum=False,
                                     tiles=tiles, a_transposed=True, a_quant_scale=0.01)  # fmt: skip
    assert rel_err(got, gq @ b.astype(np.float32).T * 3.0) < 1e-2


# ----------------------------------------------------------------------------------------------------------------------
# GPU: ReLU² MLP
# ----------------------------------------------------------------------------------------------------------------------


def _check_mlp(t, f, d, seed, backward=True):
    ku, kf, kp, kg = jax.random.split(jax.random.key(seed), 4)
    u = _random(ku, (t, d))
    fc = _random(kf, (f, d), d**-0.5)
    proj = _random(kp, (f, d), f**-0.5)
    g = _random(kg, (t, d))
    ref_out, ref_du, ref_dfc, ref_dproj, ref_pre, ref_post = _exact(_mlp_reference)(u, fc, proj, g)
    pre, post = jax.jit(relu2_mlp.relu2_matmul)(u, fc)
    # pre differs from the fp32 reference only where summation order moves a value across a bf16 rounding boundary.
    assert rel_err(pre, ref_pre) < 2e-3 and rel_err(post, ref_post) < 4e-3
    if not backward:
        assert rel_err(jax.jit(relu2_mlp.mlp)(u, fc, proj), ref_out) < 1e-2
        return
    out, (du, dfc, dproj) = _value_and_vjp(relu2_mlp.mlp, u, fc, proj, g)
    assert out.dtype == du.dtype == dfc.dtype == dproj.dtype == jnp.bfloat16
    for got, ref in ((out, ref_out), (du, ref_du), (dfc, ref_dfc), (dproj, ref_dproj)):
        assert rel_err(got, ref) < 1e-2


@pytest.mark.gpu
@gpu
def test_mlp_ragged_shapes():
    _check_mlp(t=200, f=520, d=192, seed=0)


@pytest.mark.gpu
@gpu
@pytest.mark.parametrize("t", RECORD_T)
def test_mlp_record_shapes(t):
    _check_mlp(t=t, f=MODEL.mlp_hidden, d=MODEL.model_dim, seed=t)


@pytest.mark.gpu
@gpu
def test_mlp_eval_shape_forward():
    _check_mlp(t=EVAL_T, f=MODEL.mlp_hidden, d=MODEL.model_dim, seed=1, backward=False)


# ----------------------------------------------------------------------------------------------------------------------
# GPU: soft-capped MTP cross entropy
# ----------------------------------------------------------------------------------------------------------------------


def _check_ce(t, v, weights, seed, logit_scale=2.0):
    kl, kt, kg = jax.random.split(jax.random.key(seed), 3)
    logits = _random(kl, (t, v), logit_scale)
    targets = jax.random.randint(kt, (t,), 0, v, jnp.int32)
    g = jax.random.uniform(kg, (t,), jnp.float32, 0.5, 1.5)
    weights = jnp.asarray(weights, jnp.float32)
    ce = lambda lg, w: softcap_ce.cross_entropy(lg, targets, w, softcap=SOFTCAP)  # noqa: E731
    loss, (d_logits, d_weights) = _value_and_vjp(ce, logits, weights, g)
    ref_loss, ref_d_logits, ref_d_weights = _exact(_ce_reference)(logits, targets, weights, g)
    np.testing.assert_allclose(np.asarray(loss), np.asarray(ref_loss), rtol=2e-5, atol=2e-4)
    assert d_logits.dtype == jnp.bfloat16
    assert rel_err(d_logits, ref_d_logits) < 1e-2
    np.testing.assert_allclose(np.asarray(d_weights), np.asarray(ref_d_weights), rtol=1e-4)


@pytest.mark.gpu
@gpu
@pytest.mark.parametrize(
    "t, v, weights",
    [(7, 1000, (1.0, 0.5, 0.25)), (2, 300, (1.0, 0.5, 0.25)), (9, 4096 * 2 + 128, (0.7, -0.2, 0.0)), (5, 50, (1.0,))],
)
def test_cross_entropy_small_shapes(t, v, weights):
    """Ragged vocab tails, sequences shorter than the MTP depth, a negative weight, a single weight."""
    _check_ce(t, v, weights, seed=t * v)


@pytest.mark.gpu
@gpu
@pytest.mark.parametrize("t", RECORD_T)
def test_cross_entropy_record_shapes(t):
    _check_ce(t, MODEL.vocab_size, (1.0, 0.5, 0.25), seed=t)


@pytest.mark.gpu
@gpu
def test_cross_entropy_eval_shape():
    """262,144 rows x 50,304 columns (26 GB of bf16 logits), next-token weights: rows checked at both ends."""
    t, v, rows = EVAL_T, MODEL.vocab_size, 2048
    kl, ks, kt = jax.random.split(jax.random.key(3), 3)
    # Random rows repeated with random per-row scales: random bits for all 13 G logits would not fit in memory.
    base = _random(kl, (8192, v), 2.0)
    make = jax.jit(lambda base, s: (jnp.tile(base, (t // 8192, 1)) * s[:, None]).astype(jnp.bfloat16))
    logits = make(base, jax.random.uniform(ks, (t,), jnp.float32, 0.5, 1.5).astype(jnp.bfloat16))
    targets = jax.random.randint(kt, (t,), 0, v, jnp.int32)
    weights = jnp.asarray([1.0, 0.0, 0.0], jnp.float32)
    loss = jax.jit(lambda lg: softcap_ce.cross_entropy(lg, targets, weights, softcap=SOFTCAP))(logits)
    for part in (slice(0, rows), slice(t - rows, t)):
        ref, _, _ = _exact(_ce_reference)(logits[part], targets[part], weights, jnp.ones(rows))
        np.testing.assert_allclose(np.asarray(loss[part]), np.asarray(ref), rtol=2e-5, atol=2e-4)


def _helper_outputs(x: np.ndarray, grad_scale: float):
    """softcap_ce's arithmetic helpers applied elementwise to x (f32) by one small triton kernel: (_reciprocal_newton(x),
    _round_bf16(x), _to_e5m2(x, fl32(1/grad_scale)))."""
    import jax_triton as jt
    import triton
    import triton.language as tl

    @triton.jit
    def helpers_kernel(x_ptr, inv_scale, rcp_ptr, bf_ptr, q_ptr, N: tl.constexpr, BLOCK: tl.constexpr):
        offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        inside = offs < N
        x = tl.load(x_ptr + offs, mask=inside, other=1.0)
        tl.store(rcp_ptr + offs, softcap_ce._reciprocal_newton(x), mask=inside)
        tl.store(bf_ptr + offs, softcap_ce._round_bf16(x), mask=inside)
        tl.store(q_ptr + offs, softcap_ce._to_e5m2(x, inv_scale, True), mask=inside)

    n = x.size
    f32 = jax.ShapeDtypeStruct((n,), jnp.float32)
    return [np.asarray(o) for o in jt.triton_call(
        jnp.asarray(x), np.float32(1) / np.float32(grad_scale), kernel=helpers_kernel,
        out_shape=(f32, f32, jax.ShapeDtypeStruct((n,), jnp.float8_e5m2)), grid=(-(-n // 1024),), N=n, BLOCK=1024)]


@pytest.mark.gpu
@gpu
def test_ce_arithmetic_helpers_against_numpy():
    """The fused CE kernel's own arithmetic against numpy and ml_dtypes: the FMA-pipe reciprocal within one ulp of 1/x
    on [1, 2^125] (its range in the sigmoid); the bf16 rounding, the bits of ml_dtypes' round to nearest even for
    fp32 patterns of every kind (±0, subnormals, ties, ±inf, NaN stays NaN); the e5m2 quantiser, ops.quantize_fp8's
    bits of the bf16 value, also past e5m2's range and at ±inf."""
    rng = np.random.default_rng(0)
    ones_to_big = np.exp2(rng.uniform(0, 125, 200_000)).astype(np.float32)
    x = np.concatenate([np.float32([1, 1.5, 2, 3, 2.0**125, 2.0**125 + 1]), np.nextafter(np.float32(2), np.float32(0))[None],
                        ones_to_big, (1 + rng.uniform(0, 1, 100_000)).astype(np.float32)])
    rcp = _helper_outputs(x, 1.0)[0]
    exact = 1 / x.astype(np.float64)
    assert np.all(np.abs(rcp - exact) <= np.spacing(np.abs(rcp)).astype(np.float64)), "reciprocal off by more than 1 ulp"

    patterns = rng.integers(0, 2**32, 400_000, dtype=np.uint64).astype(np.uint32)
    ties = (rng.integers(0, 2**16, 1000, dtype=np.uint32) << 16) | 0x8000  # exactly halfway between two bf16
    special = np.float32([0, -0.0, np.inf, -np.inf, np.nan, 1e-40, -1e-40, 3.3e38, -3.3e38]).view(np.uint32)
    x = np.concatenate([patterns, ties, special]).view(np.float32)
    scale = SCALES[2]
    _, bf, _ = _helper_outputs(x, scale)
    want = x.astype(ml_dtypes.bfloat16).astype(np.float32)
    nan = np.isnan(x)
    assert np.array_equal(np.isnan(bf), nan)
    assert np.array_equal(bf[~nan].view(np.uint32), want[~nan].view(np.uint32))

    # quantize_fp8 of the bf16 value, on values spread over e5m2's whole range and past it
    y = np.concatenate([(rng.standard_normal(200_000) * np.exp2(rng.uniform(-30, 20, 200_000))).astype(np.float32),
                        np.float32([57344, 60000, 61439, 61440, 61441, 1e6, np.inf]) * np.float32(scale),
                        -np.float32([57344, 61440, 1e6, np.inf]) * np.float32(scale)])
    _, _, q = _helper_outputs(y, scale)
    ref = np.asarray(ops.quantize_fp8(jnp.asarray(y).astype(jnp.bfloat16), scale, jnp.float8_e5m2))
    assert np.array_equal(q.view(np.uint8), ref.view(np.uint8))
    _, _, q_nan = _helper_outputs(np.float32([np.nan, -np.nan]), scale)
    assert np.isnan(q_nan.astype(np.float32)).all(), "NaN must stay NaN (a clamp by min/max would hide it)"


# ----------------------------------------------------------------------------------------------------------------------
# GPU: the fused FP8-head loss (head_loss's triton backend)
# ----------------------------------------------------------------------------------------------------------------------


def _head_loss_inputs(t, v, d, seed, logit_spread=40.0):
    kh, kw, kt = jax.random.split(jax.random.key(seed), 3)
    h = _random(kh, (t, d))
    w = _random(kw, (v, d), logit_spread / d**0.5 / 2)  # logits of std ~ spread/2: a peaked, trained-like output
    targets = jax.random.randint(kt, (t,), 0, v, jnp.int32)
    return h, w, targets


def _check_head_loss(t, v, d, weights, seed, cotangent=1.0):
    """The fused op against recipe §2.1 + §1.9 written here: the fp32 CE of the head's logits, its gradient rounded to
    bf16 and quantised to e5m2, fp32 products of the quantised operands. The logits are the xla head's (its forward
    product is checked against the recipe in the fp8_head tests above): with logits this peaked, the forward GEMM's
    fast accumulation and bf16 rounding move the loss by up to 0.5%, more than the CE is checked to."""
    h, w, targets = _head_loss_inputs(t, v, d, seed)
    weights = jnp.asarray(weights, jnp.float32)
    fused = lambda h, w, m: softcap_ce.head_loss(h, w, targets, m, fp8=True, scales=SCALES, softcap=SOFTCAP,  # noqa: E731
                                                 lm_head=None, cross_entropy=None)
    loss, (dh, dw, dm) = _value_and_vjp(fused, h, w, weights, jnp.float32(cotangent))

    logits = jax.jit(lambda h, w: ops.lm_head_xla(h, w, fp8=True, scales=SCALES))(h, w)

    def reference(m):
        rows, d_logits, d_m = _ce_reference(logits, targets, m, jnp.ones((t,), jnp.float32))
        return jnp.sum(rows), d_logits.astype(jnp.bfloat16), d_m * jnp.float32(cotangent)

    ref_loss, d_logits, ref_dm = _exact(reference)(weights)
    # the products in numpy fp64 of the operands quantised here with ml_dtypes, away from XLA's GPU compiler
    ref_dh, ref_dw = (x * cotangent for x in _fp8_products_fp64(h, w, d_logits))
    # the CE kernels' per-row tolerance (test_cross_entropy_*: rtol 2e-5, atol 2e-4), summed over the rows
    np.testing.assert_allclose(float(loss), float(ref_loss), rtol=2e-5, atol=2e-4 * t)
    assert dh.dtype == dw.dtype == jnp.bfloat16
    # a cotangent c scales the products of the unit gradient (head_loss's docstring): c x the reference at c = 1, not
    # the quantisation of c x the gradient, which differs by e5m2's rounding (12.5% on a peaked row's few large entries)
    assert rel_err(dh, ref_dh) < 1e-2
    assert rel_err(dw, ref_dw) < 1e-2
    np.testing.assert_allclose(np.asarray(dm), np.asarray(ref_dm), rtol=1e-4)


@pytest.mark.gpu
@gpu
@pytest.mark.parametrize("t, v, weights", [(7, 1000, (1.0, 0.5, 0.25)), (9, 4096 * 2 + 128, (0.7, 0.2, 0.0)),
                                           (5, 50, (1.0,))])
def test_head_loss_small_shapes(t, v, weights):
    """Ragged vocab tails (the gradient pass's 4096-wide blocks and the tail), MTP rows past the end, one weight."""
    _check_head_loss(t, v, 64, weights, seed=t * v)


@pytest.mark.gpu
@gpu
def test_head_loss_record_shape_and_a_cotangent_other_than_one():
    _check_head_loss(RECORD_T[0], MODEL.vocab_size, MODEL.model_dim, (1.0, 0.5, 0.25), seed=1)
    _check_head_loss(300, MODEL.vocab_size, MODEL.model_dim, (1.0, 0.5, 0.25), seed=2, cotangent=0.37)


@pytest.mark.gpu
@gpu
def test_head_loss_gradient_is_the_separate_ops_quantised_gradient():
    """The fused kernel's e5m2 gradient against the one the separate ops make (the CE backward kernel's bf16 gradient
    for an upstream 1, then the head's quantiser in XLA), and its loss against the forward kernel's: the same numbers,
    one rounding at most apart."""
    t, v, d = RECORD_T[0], MODEL.vocab_size, MODEL.model_dim
    h, w, targets = _head_loss_inputs(t, v, d, seed=5)
    weights = jnp.asarray((1.0, 0.5, 0.25), jnp.float32)
    logits = jax.jit(lambda h, w: ops.lm_head_xla(h, w, fp8=True, scales=SCALES))(h, w)
    loss, lse, terms, gq = jax.jit(lambda lg: softcap_ce.softcap_ce_fused_fp8(lg, targets, weights, SOFTCAP, SCALES[2]))(logits)
    ref_loss, ref_lse, ref_terms = jax.jit(lambda lg: softcap_ce.softcap_ce_forward(lg, targets, weights, SOFTCAP))(logits)
    ref_gq = jax.jit(lambda lg, lse: ops.quantize_fp8(
        softcap_ce.softcap_ce_backward(lg, targets, weights, lse, jnp.ones((t,), jnp.float32), SOFTCAP),
        SCALES[2], jnp.float8_e5m2))(logits, ref_lse)
    assert gq.dtype == jnp.float8_e5m2 and gq.shape == (t, v)
    for got, ref in ((loss, ref_loss), (lse, ref_lse), (terms, ref_terms)):
        assert np.asarray(got).tobytes() == np.asarray(ref).tobytes()  # the same forward code and launch
    got, ref = np.asarray(gq).astype(np.float32), np.asarray(ref_gq).astype(np.float32)
    differ = got != ref
    print(f"e5m2 gradient entries that differ: {differ.sum()} of {differ.size}")
    assert differ.mean() < 1e-5
    # where they differ, by one e5m2 step (2 mantissa bits: the neighbours are within a factor 1.25 .. 0.75)
    ratio = got[differ] / np.where(ref[differ] == 0, np.nan, ref[differ])
    assert np.all((np.abs(ratio - 1) <= 0.25) | (ref[differ] == 0) | (got[differ] == 0))


@pytest.mark.gpu
@gpu
@pytest.mark.parametrize("seqs, seq_len, v", [(3, 5, 4096 * 2 + 128), (8, 2048, MODEL.vocab_size)])
def test_ce_kernels_of_sequences_end_to_end_are_one_launch_per_sequence(seqs, seq_len, v):
    """seq_len < T (several virtual ranks' rows in one forward): every output of the three CE kernels is, bit for bit,
    that of one launch per sequence (seq_len == T, the kernels measured on the H200); one launch of all the rows as a
    single sequence differs (its MTP targets run across the ends)."""
    t = seqs * seq_len
    kl, kt, kg = jax.random.split(jax.random.key(seqs), 3)
    logits = _random(kl, (t, v), 4.0)
    targets = jax.random.randint(kt, (t,), 0, v, jnp.int32).at[seq_len].set(0).at[seq_len - 1].set(0)
    dloss = jax.random.uniform(kg, (t,), jnp.float32, 0.5, 1.5)
    weights = jnp.asarray((1.0, 0.5, 0.25), jnp.float32)

    @functools.partial(jax.jit, static_argnums=3)
    def kernels(lg, tg, dl, n):
        loss, lse, terms = softcap_ce.softcap_ce_forward(lg, tg, weights, SOFTCAP, seq_len=n)
        dlogits = softcap_ce.softcap_ce_backward(lg, tg, weights, lse, dl, SOFTCAP, seq_len=n)
        fused = softcap_ce.softcap_ce_fused_fp8(lg, tg, weights, SOFTCAP, SCALES[2], seq_len=n)
        return loss, lse, terms, dlogits, *fused

    merged = jax.device_get(kernels(logits, targets, dloss, seq_len))
    parts = [jax.device_get(kernels(logits[i * seq_len:(i + 1) * seq_len], targets[i * seq_len:(i + 1) * seq_len],
                                    dloss[i * seq_len:(i + 1) * seq_len], seq_len)) for i in range(seqs)]
    for j, got in enumerate(merged):
        want = np.concatenate([p[j] for p in parts])
        assert np.asarray(got).tobytes() == np.asarray(want).tobytes(), j
    joined = jax.device_get(kernels(logits, targets, dloss, t))
    assert np.asarray(joined[0]).tobytes() != np.asarray(merged[0]).tobytes()
