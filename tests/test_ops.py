"""jaxrun.ops: the xla backends against independent numpy transcriptions of the recipe, and the backend registry."""

import json
import subprocess
import sys
import types

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest

from jaxrun import ops

SOFTCAP = (23.0, 5.0, 7.5)  # recipe §1.10
FP8_SCALES = (100 / 448, 1.6 / 448, 0.75 / 448)  # recipe §1.9


def bf16(x):
    """numpy values rounded to bf16, returned as float64."""
    return np.asarray(x, np.float64).astype(ml_dtypes.bfloat16).astype(np.float64)


def f64(x):
    return np.asarray(jnp.asarray(x).astype(jnp.float32), np.float64)


def random_segments(rng, seq_len, max_doc):
    lengths = []
    while sum(lengths) < seq_len:
        lengths.append(int(rng.integers(1, max_doc + 1)))
    lengths[-1] -= sum(lengths) - seq_len
    return np.repeat(np.arange(len(lengths)), lengths).astype(np.int32)


# ----------------------------------------------------------------------------------------------------------------------
# Registry
# ----------------------------------------------------------------------------------------------------------------------


def test_registry_resolves_xla_and_auto():
    assert ops.get("attention", "xla") is ops.attention_xla
    assert ops.get("cross_entropy", "auto") is ops.cross_entropy_xla
    assert ops.auto_backend("mlp") == "xla"
    assert ops.auto_backend("mlp", {"mlp": "triton"}) == "triton"
    prefilled = {
        ("attention", "triton"): "jaxrun.kernels.flash_attention:attention",
        ("attention", "cudnn"): "jaxrun.kernels.cudnn_attention:attention",
        ("lm_head", "triton"): "jaxrun.kernels.fp8_head:lm_head",
        ("mlp", "triton"): "jaxrun.kernels.relu2_mlp:mlp",
        ("cross_entropy", "triton"): "jaxrun.kernels.softcap_ce:cross_entropy",
    }
    for key, target in prefilled.items():
        assert ops.BACKENDS[key] == target


def test_registry_errors_are_clear(monkeypatch):
    with pytest.raises(ValueError, match="unknown op 'softmax'"):
        ops.get("softmax", "xla")
    with pytest.raises(ValueError, match="unknown backend 'pallas' for op 'mlp'.*triton"):
        ops.get("mlp", "pallas")
    broken = dict(ops.BACKENDS)
    broken[("mlp", "triton")] = "jaxrun.kernels.no_such_kernel_module:mlp"
    monkeypatch.setattr(ops, "BACKENDS", types.MappingProxyType(broken))
    with pytest.raises(ops.BackendUnavailableError, match="'triton' of op 'mlp'.*on CPU use 'xla'"):
        ops.get("mlp", "triton")


def test_importing_ops_and_model_does_not_import_jax_triton():
    code = "import sys, jaxrun.ops, jaxrun.model; assert 'jax_triton' not in sys.modules, 'jax_triton imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


# ----------------------------------------------------------------------------------------------------------------------
# Attention
# ----------------------------------------------------------------------------------------------------------------------


def visible_mask(seg, window):
    i, j = np.arange(len(seg))[:, None], np.arange(len(seg))[None, :]
    return (seg[:, None] == seg[None, :]) & (j <= i) & (i - j <= window)


def naive_attention(q, k, v, seg, scale, window):
    """fp64 masked softmax over the full T x T matrix (recipe §5.4)."""
    s = np.einsum("qhd,khd->hqk", q, k) * scale
    s = np.where(visible_mask(seg, window)[None], s, -np.inf)
    p = np.exp(s - s.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    return np.einsum("hqk,khd->qhd", p, v)


@pytest.mark.parametrize("seq_len,window,block", [(200, 0, 128), (200, 37, 128), (300, 200, 128), (77, 5, 16),
                                                  (96, 40, 16), (64, 1000, 16)])
def test_attention_matches_masked_softmax(seq_len, window, block):
    rng = np.random.default_rng(seq_len + window)
    heads, head_dim = 3, 16
    q, k, v = (bf16(rng.normal(size=(seq_len, heads, head_dim))) for _ in range(3))
    seg = random_segments(rng, seq_len, 60)
    scale = 0.35
    attention = jax.jit(lambda *a: ops.attention_xla(*a, window=window, block=block))
    out = attention(*(jnp.asarray(x, jnp.bfloat16) for x in (q, k, v)), jnp.asarray(seg), jnp.float32(scale))
    assert out.dtype == jnp.bfloat16 and out.shape == q.shape
    np.testing.assert_allclose(f64(out), naive_attention(q, k, v, seg, scale, window), atol=2e-2, rtol=2e-2)


def test_attention_memory_bound_splits_into_passes(monkeypatch):
    """Large problems run as a sequential map over groups of query blocks: same result."""
    rng = np.random.default_rng(1)
    q, k, v = (bf16(rng.normal(size=(150, 2, 8))) for _ in range(3))
    seg = random_segments(rng, 150, 50)
    # heads x block x (band of 4 key blocks) x block scores per query block: two per pass, 19 blocks (10 passes, one padding block)
    monkeypatch.setattr(ops, "_MAX_SCORES_PER_PASS", 2 * (2 * 8 * 4 * 8))
    attention = jax.jit(lambda *a: ops.attention_xla(*a, window=20, block=8))
    out = attention(*(jnp.asarray(x, jnp.bfloat16) for x in (q, k, v)), jnp.asarray(seg), jnp.float32(0.5))
    np.testing.assert_allclose(f64(out), naive_attention(q, k, v, seg, 0.5, 20), atol=2e-2, rtol=2e-2)


def test_attention_backward_memory_does_not_grow_with_depth():
    """The scores recomputed in the backward stay inside the backward: stacking four attention layers must not keep
    four layers' score buffers alive (a one-pass layout let XLA hoist the recomputation into the forward, 3.3x the
    temp of one layer here and 138 GiB for the record model on one 49,152-token micro-batch)."""
    t, heads, d, window = 8192, 2, 64, 512

    def temp_mib(layers):
        def loss(x, seg):
            for i in range(layers):
                x = jnp.tanh(x + ops.attention_xla(x * (1.0 + i), x, x, seg, jnp.float32(0.1), window=window))
            return jnp.sum(x.astype(jnp.float32))

        args = (jax.ShapeDtypeStruct((t, heads, d), jnp.bfloat16), jax.ShapeDtypeStruct((t,), jnp.int32))
        return jax.jit(jax.grad(loss)).lower(*args).compile().memory_analysis().temp_size_in_bytes / 2**20

    one, four = temp_mib(1), temp_mib(4)
    assert four < 2 * one, f"temp {four:.0f} MiB for four layers vs {one:.0f} MiB for one"


def test_attention_output_depends_only_on_visible_keys():
    """d out[i] / d v[j] != 0 exactly for the visible (i, j); d out[i] / d k[j] == 0 wherever j is not visible."""
    rng = np.random.default_rng(2)
    seq_len, window = 24, 5
    q, k, v = (jnp.asarray(rng.normal(size=(seq_len, 1, 4)), jnp.bfloat16) for _ in range(3))
    seg = np.array([0] * 7 + [1] * 3 + [2] * 14, np.int32)

    def out(q, k, v):
        return ops.attention_xla(q, k, v, jnp.asarray(seg), jnp.float32(1.0), window=window, block=4).astype(jnp.float32)

    dk, dv = (np.asarray(x, np.float32) for x in jax.jit(jax.jacrev(out, argnums=(1, 2)))(q, k, v))  # (T,1,4,T,1,4)
    reach_v = np.abs(dv).sum(axis=(1, 2, 4, 5)) > 0
    reach_k = np.abs(dk).sum(axis=(1, 2, 4, 5)) > 0
    visible = visible_mask(seg, window)
    np.testing.assert_array_equal(reach_v, visible)
    assert not (reach_k & ~visible).any()


def test_attention_rejects_bad_input():
    x = jnp.zeros((8, 2, 4), jnp.bfloat16)
    seg = jnp.zeros(8, jnp.int32)
    with pytest.raises(ValueError, match="same shape"):
        ops.attention_xla(x, x[:4], x, seg, jnp.float32(1), window=2)
    with pytest.raises(ValueError, match="seg_ids must have shape"):
        ops.attention_xla(x, x, x, seg[:5], jnp.float32(1), window=2)
    with pytest.raises(ValueError, match="window must be a static int >= 0"):
        ops.attention_xla(x, x, x, seg, jnp.float32(1), window=-1)


# ----------------------------------------------------------------------------------------------------------------------
# LM head
# ----------------------------------------------------------------------------------------------------------------------


def quantize(x, scale, dtype):
    limit = float(ml_dtypes.finfo(dtype).max)
    return np.clip(np.asarray(x, np.float32) / np.float32(scale), -limit, limit).astype(dtype).astype(np.float64)


def test_fp8_head_forward_and_backward_match_quantised_reference():
    rng = np.random.default_rng(3)
    seq_len, dim, vocab = 24, 64, 80
    h = bf16(rng.normal(size=(seq_len, dim)))  # rms-normalised scale, like the model's h
    w = bf16(0.005 * rng.normal(size=(vocab, dim)))
    g = bf16(rng.normal(scale=0.05, size=(seq_len, vocab)))
    xs, ws, gs = FP8_SCALES
    xq, wq, gq = quantize(h, xs, ml_dtypes.float8_e4m3fn), quantize(w, ws, ml_dtypes.float8_e4m3fn), \
        quantize(g, gs, ml_dtypes.float8_e5m2)
    want_logits = xq @ wq.T * xs * ws
    want_dh = gq @ wq * gs * ws
    want_dw = gq.T @ xq * gs * xs

    def forward_backward(a, b, cotangent):
        logits, vjp = jax.vjp(lambda x, y: ops.lm_head_xla(x, y, fp8=True, scales=FP8_SCALES), a, b)
        return (logits, *vjp(cotangent))

    logits, dh, dw = jax.jit(forward_backward)(*(jnp.asarray(x, jnp.bfloat16) for x in (h, w, g)))
    assert logits.dtype == dh.dtype == dw.dtype == jnp.bfloat16
    for got, want in ((logits, want_logits), (dh, want_dh), (dw, want_dw)):
        np.testing.assert_allclose(f64(got), want, rtol=2 ** -7, atol=1e-6 * np.abs(want).max())
    # The quantisation is real: the unquantised product is off by far more than bf16 rounding.
    assert np.abs(h @ w.T - want_logits).max() > 5 * np.abs(f64(logits) - want_logits).max()


def test_fp8_head_clamps_instead_of_overflowing():
    h = jnp.full((2, 8), 1000.0, jnp.bfloat16)  # far beyond 448 * x_scale
    w = jnp.full((3, 8), 0.01, jnp.bfloat16)
    def loss(a, b):
        return ops.lm_head_xla(a, b, fp8=True, scales=FP8_SCALES).astype(jnp.float32).sum() * 1e6

    logits = ops.lm_head_xla(h, w, fp8=True, scales=FP8_SCALES)
    dh, dw = jax.jit(jax.grad(loss, argnums=(0, 1)))(h, w)
    assert all(np.isfinite(f64(x)).all() for x in (logits, dh, dw))


def test_bf16_head_is_the_plain_product():
    rng = np.random.default_rng(4)
    h, w = bf16(rng.normal(size=(16, 32))), bf16(rng.normal(size=(40, 32)))
    got = ops.lm_head_xla(jnp.asarray(h, jnp.bfloat16), jnp.asarray(w, jnp.bfloat16), fp8=False, scales=FP8_SCALES)
    np.testing.assert_allclose(f64(got), h @ w.T, rtol=2 ** -8, atol=1e-3)


def test_lm_head_rejects_bad_input():
    with pytest.raises(ValueError, match="same D"):
        ops.lm_head_xla(jnp.zeros((4, 8), jnp.bfloat16), jnp.zeros((5, 6), jnp.bfloat16), fp8=False, scales=FP8_SCALES)
    with pytest.raises(ValueError, match="three positive floats"):
        ops.lm_head_xla(jnp.zeros((4, 8), jnp.bfloat16), jnp.zeros((5, 8), jnp.bfloat16), fp8=True, scales=(1.0, 0.0))


# ----------------------------------------------------------------------------------------------------------------------
# MLP rounding points (recipe §1.8, §14.3)
# ----------------------------------------------------------------------------------------------------------------------


def test_mlp_rounds_where_the_reference_rounds():
    """Inputs on coarse dyadic grids make every fp32 matmul exact, so the only roundings are the bf16 ones of the recipe
    §1.8 / §14.3: forward and backward must then equal the numpy transcription bit for bit."""
    rng = np.random.default_rng(5)
    seq_len, dim, hidden = 8, 8, 16
    u = rng.integers(-4, 5, (seq_len, dim)) / 4
    fc = rng.integers(-8, 9, (hidden, dim)) / 16
    proj = rng.integers(-2, 3, (hidden, dim)) / 2
    g = rng.integers(-64, 65, (seq_len, dim)) / 64

    pre = bf16(u @ fc.T)
    post = bf16(np.maximum(pre, 0) ** 2)
    out = bf16(post @ proj)
    d_post = bf16(g @ proj.T)
    d_pre = bf16(2 * np.maximum(pre, 0) * d_post)
    want = {"out": out, "du": bf16(d_pre @ fc), "dfc": bf16(d_pre.T @ u), "dproj": bf16(post.T @ g)}
    # Without the intermediate roundings the results differ, so this test sees them.
    exact_pre = u @ fc.T
    unrounded_d_pre = 2 * np.maximum(exact_pre, 0) * (g @ proj.T)
    assert not np.array_equal(bf16(np.maximum(exact_pre, 0) ** 2 @ proj), out)
    assert not np.array_equal(bf16(unrounded_d_pre @ fc), want["du"])

    def forward_backward(*args):
        out, vjp = jax.vjp(ops.mlp_xla, *args[:3])
        return (out, *vjp(args[3]))

    got_out, du, dfc, dproj = jax.jit(forward_backward)(*(jnp.asarray(x, jnp.bfloat16) for x in (u, fc, proj, g)))
    for name, got in {"out": got_out, "du": du, "dfc": dfc, "dproj": dproj}.items():
        assert got.dtype == jnp.bfloat16
        np.testing.assert_array_equal(f64(got), want[name], err_msg=name)


def test_mlp_rejects_bad_input():
    with pytest.raises(ValueError, match="fc, proj"):
        ops.mlp_xla(jnp.zeros((4, 8), jnp.bfloat16), jnp.zeros((16, 8), jnp.bfloat16), jnp.zeros((16, 4), jnp.bfloat16))


# ----------------------------------------------------------------------------------------------------------------------
# Soft-capped MTP cross entropy (recipe §2.1)
# ----------------------------------------------------------------------------------------------------------------------


def np_softcap(logits):
    a, b, c = SOFTCAP
    return a / (1 + np.exp(-(logits + b) / c))


def np_row_losses(logits, targets, weights):
    """loss_i = sum_k [i+k < T] w_k (lse_i - z_{i, tgt[i+k]}), fp64."""
    z = np_softcap(logits)
    lse = np.log(np.exp(z).sum(-1))
    seq_len = len(targets)
    return np.array([sum(w * (lse[i] - z[i, targets[i + k]]) for k, w in enumerate(weights) if i + k < seq_len)
                     for i in range(seq_len)])


def np_row_loss_grad(logits, targets, weights, g):
    """recipe §2.1's formula: g_i (S_i p_ij - sum_k [i+k<T] w_k [j = tgt[i+k]]) (1/c) z_ij (1 - sigma_ij)."""
    a, b, c = SOFTCAP
    sig = 1 / (1 + np.exp(-(logits + b) / c))
    z = a * sig
    p = np.exp(z) / np.exp(z).sum(-1, keepdims=True)
    out = np.zeros_like(logits)
    seq_len = len(targets)
    for i in range(seq_len):
        hits = np.zeros(logits.shape[1])
        total = 0.0
        for k, w in enumerate(weights):
            if i + k < seq_len:
                total += w
                hits[targets[i + k]] += w
        out[i] = g[i] * (total * p[i] - hits) * z[i] * (1 - sig[i]) / c
    return out


def test_cross_entropy_hand_worked_case():
    """Zero logits: every z equals a*sigmoid(b/c), so lse_i - z_i,j = ln V and loss_i = ln V * sum of the weights
    of the targets that exist: (1.75, 1.5, 1.0) ln V for T = 3 and weights (1, 0.5, 0.25)."""
    vocab = 7
    loss = jax.jit(lambda *a: ops.cross_entropy_xla(*a, softcap=SOFTCAP))(
        jnp.zeros((3, vocab), jnp.bfloat16), jnp.array([1, 2, 3], jnp.int32), jnp.array([1.0, 0.5, 0.25], jnp.float32))
    np.testing.assert_allclose(np.asarray(loss), np.array([1.75, 1.5, 1.0]) * np.log(vocab), rtol=1e-5)


@pytest.mark.parametrize("weights", [(1.0, 0.5, 0.25), (1.0, 0.3, 0.0), (1.0, 0.0, 0.0)])
def test_cross_entropy_forward_and_gradient_match_spec(weights):
    rng = np.random.default_rng(6)
    seq_len, vocab = 12, 40
    logits = bf16(rng.normal(scale=4.0, size=(seq_len, vocab)))
    targets = rng.integers(0, vocab, seq_len).astype(np.int32)
    targets[5:8] = targets[4]  # repeated targets: several MTP hits in one column
    g = rng.uniform(0.5, 2.0, seq_len)
    w = jnp.asarray(weights, jnp.float32)

    def forward_backward(x, t, weights, cotangent):
        loss, vjp = jax.vjp(lambda y: ops.cross_entropy_xla(y, t, weights, softcap=SOFTCAP), x)
        return loss, vjp(cotangent)[0]

    loss, d_logits = jax.jit(forward_backward)(jnp.asarray(logits, jnp.bfloat16), jnp.asarray(targets), w,
                                               jnp.asarray(g, jnp.float32))
    assert loss.dtype == jnp.float32 and d_logits.dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(loss), np_row_losses(logits, targets, weights), rtol=1e-5, atol=1e-5)
    want = np_row_loss_grad(logits, targets, weights, g)
    np.testing.assert_allclose(f64(d_logits), want, rtol=2 ** -7, atol=1e-6)
    # ... and that formula is the true derivative of the numpy loss (central differences on a few entries).
    eps = 1e-5
    for i, j in [(0, int(targets[0])), (4, int(targets[6])), (11, 3), (7, 20)]:
        up, down = logits.copy(), logits.copy()
        up[i, j] += eps
        down[i, j] -= eps
        numeric = (g * (np_row_losses(up, targets, weights) - np_row_losses(down, targets, weights))).sum() / (2 * eps)
        assert abs(numeric - want[i, j]) < 1e-6 + 1e-5 * abs(want[i, j])


def test_cross_entropy_mtp_weight_gradient():
    rng = np.random.default_rng(7)
    logits = bf16(rng.normal(size=(6, 10)))
    targets = rng.integers(0, 10, 6).astype(np.int32)
    weights = np.array([1.0, 0.5, 0.0])
    dw = jax.jit(jax.grad(lambda w: ops.cross_entropy_xla(jnp.asarray(logits, jnp.bfloat16), jnp.asarray(targets), w,
                                                          softcap=SOFTCAP).sum()))(jnp.asarray(weights, jnp.float32))
    basis = [np_row_losses(logits, targets, np.eye(3)[k]).sum() for k in range(3)]  # the loss is linear in w
    np.testing.assert_allclose(np.asarray(dw), basis, rtol=1e-5)


def test_cross_entropy_of_sequences_end_to_end():
    """seq_len = 4 over 12 rows: three sequences, each with its own MTP targets (recipe §2.1 per sequence: the last
    rows of each see only the targets inside it), against the fp64 formulas applied to each sequence alone."""
    rng = np.random.default_rng(9)
    seq_len, seqs, vocab, weights = 4, 3, 30, (1.0, 0.5, 0.25)
    logits = bf16(rng.normal(scale=4.0, size=(seq_len * seqs, vocab)))
    targets = rng.integers(0, vocab, seq_len * seqs).astype(np.int32)
    targets[4] = targets[3]  # the next sequence's first target is this one's last: not a second hit for row 3
    g = rng.uniform(0.5, 2.0, seq_len * seqs)

    def forward_backward(x, t, w, cotangent):
        loss, vjp = jax.vjp(lambda y: ops.cross_entropy_xla(y, t, w, softcap=SOFTCAP, seq_len=seq_len), x)
        return loss, vjp(cotangent)[0]

    loss, d_logits = jax.jit(forward_backward)(jnp.asarray(logits, jnp.bfloat16), jnp.asarray(targets),
                                               jnp.asarray(weights, jnp.float32), jnp.asarray(g, jnp.float32))
    parts = [slice(i * seq_len, (i + 1) * seq_len) for i in range(seqs)]
    want_loss = np.concatenate([np_row_losses(logits[p], targets[p], weights) for p in parts])
    want_grad = np.concatenate([np_row_loss_grad(logits[p], targets[p], weights, g[p]) for p in parts])
    np.testing.assert_allclose(np.asarray(loss), want_loss, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(f64(d_logits), want_grad, rtol=2 ** -7, atol=1e-6)
    assert not np.allclose(np_row_losses(logits, targets, weights), want_loss, rtol=1e-3)  # one sequence differs
    with pytest.raises(ValueError, match="seq_len must be a whole int dividing the 12 rows"):
        ops.cross_entropy_xla(jnp.asarray(logits, jnp.bfloat16), jnp.asarray(targets), jnp.ones(3), softcap=SOFTCAP,
                              seq_len=5)


def test_cross_entropy_rejects_bad_input():
    with pytest.raises(ValueError, match="targets must be"):
        ops.cross_entropy_xla(jnp.zeros((4, 8), jnp.bfloat16), jnp.zeros(3, jnp.int32), jnp.ones(3), softcap=SOFTCAP)
    with pytest.raises(ValueError, match="mtp_weights must be 1-D"):
        ops.cross_entropy_xla(jnp.zeros((4, 8), jnp.bfloat16), jnp.zeros(4, jnp.int32), jnp.ones((1, 3)), softcap=SOFTCAP)


# ----------------------------------------------------------------------------------------------------------------------
# Chunked validation loss (recipe §2.2)
# ----------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("chunk", [16, 50, 64])
def test_eval_loss_chunked_equals_unchunked_reference(chunk):
    rng = np.random.default_rng(8)
    seq_len, dim, vocab = 50, 16, 30
    h, w = bf16(rng.normal(size=(seq_len, dim))), bf16(rng.normal(scale=0.3, size=(vocab, dim)))
    targets = rng.integers(0, vocab, seq_len).astype(np.int32)
    z = np_softcap(bf16(h @ w.T))  # bf16 head, soft-cap in fp32 (fp64 here)
    want = np.mean(np.log(np.exp(z).sum(-1)) - z[np.arange(seq_len), targets])

    def head(hc, wc):
        return ops.lm_head_xla(hc, wc, fp8=False, scales=FP8_SCALES)

    def ce(logits, tgt):
        return ops.cross_entropy_xla(logits, tgt, jnp.array([1.0, 0.0, 0.0]), softcap=SOFTCAP)

    got = jax.jit(lambda a, b, t: ops.eval_loss(a, b, t, chunk=chunk, head=head, cross_entropy=ce))(
        jnp.asarray(h, jnp.bfloat16), jnp.asarray(w, jnp.bfloat16), jnp.asarray(targets))
    np.testing.assert_allclose(float(got), want, rtol=1e-5)


def test_eval_loss_rejects_bad_chunk():
    with pytest.raises(ValueError, match="chunk must be a positive int"):
        ops.eval_loss(jnp.zeros((4, 8)), jnp.zeros((5, 8)), jnp.zeros(4, jnp.int32), chunk=0, head=None,
                      cross_entropy=None)


class _FakeDevice:
    def __init__(self, kind, capability=None):
        self.device_kind, self.compute_capability = kind, capability


def test_auto_reads_the_recorded_table_then_the_shipped_one(tmp_path, monkeypatch):
    user = tmp_path / "auto.json"
    monkeypatch.setenv(ops.AUTO_TABLE_ENV, str(user))
    shipped = tmp_path / "shipped.json"
    shipped.write_text(json.dumps({"devices": {"GPU A": {"attention": "triton", "mlp": "xla"}},
                                   "compute_capability": {"9.0": "GPU A"}}))
    monkeypatch.setattr(ops, "SHIPPED_AUTO_TABLE", shipped)
    assert ops.measured_backends(_FakeDevice("GPU A")) == {"attention": "triton", "mlp": "xla"}
    assert ops.measured_backends(_FakeDevice("GPU B", "9.0")) == {"attention": "triton", "mlp": "xla"}  # same family
    assert ops.measured_backends(_FakeDevice("GPU C", "8.0")) == {}
    assert ops.measured_backends(_FakeDevice("cpu")) == {}
    ops.write_auto_picks({"mlp": "triton"}, "GPU A")
    ops.write_auto_picks({"cross_entropy": "triton"}, "GPU A")  # merged, not replaced
    # the user's measurements override the shipped picks op by op
    assert ops.measured_backends(_FakeDevice("GPU A")) == {"attention": "triton", "mlp": "triton", "cross_entropy": "triton"}
    ops.write_auto_picks({"lm_head": "triton"}, "GPU B")
    assert ops.measured_backends(_FakeDevice("GPU B", "9.0")) == {"attention": "triton", "mlp": "xla", "lm_head": "triton"}
    assert ops.auto_backend("attention") == "xla"  # this machine's CPU has no entry
    user.write_text("{not json")
    with pytest.warns(UserWarning, match="ignoring the auto-backend table"):
        assert ops.measured_backends(_FakeDevice("GPU A")) == {"attention": "triton", "mlp": "xla"}


@pytest.mark.parametrize("scale", [100 / 448 * 1.6 / 448, 0.75 / 448 * 1.6 / 448, 0.75 / 448 * 100 / 448, 1.0, 3e-9])
def test_bf16_scale_pair_is_exact_in_bf16_and_multiplies_to_the_scale(scale):
    p, q = ops.bf16_scale_pair(scale)
    for factor in (p, q):
        assert float(np.float32(factor).astype(ml_dtypes.bfloat16)) == factor
    assert abs(p * q - scale) <= 1e-4 * scale  # a single bf16 scale could only get within 2**-9 = 2e-3
    with pytest.raises(ValueError, match="positive"):
        ops.bf16_scale_pair(0.0)


@pytest.mark.parametrize("stack", [(), (3,)])
def test_embedding_lookup_gathers_rows_and_sums_gradients_of_repeated_tokens(stack):
    rng = np.random.default_rng(0)
    v, d = 11, 4
    table = jnp.asarray(rng.standard_normal((*stack, v, d)), jnp.bfloat16)
    tokens = jnp.asarray([3, 0, 3, 10, 3, 7], jnp.int32)  # token 3 three times
    g = jnp.asarray(rng.standard_normal((*stack, 6, d)), jnp.bfloat16)
    out, vjp = jax.vjp(lambda t: ops.embedding_lookup(t, tokens), table)
    np.testing.assert_array_equal(np.asarray(out), np.asarray(table)[..., np.asarray(tokens), :])
    (grad,) = vjp(g)
    onehot = np.eye(v, dtype=np.float64)[np.asarray(tokens)]  # (T, V): the gradient is onehot^T g, summed in fp32
    expected = np.einsum("tv,...td->...vd", onehot, np.asarray(g, np.float64))
    assert grad.dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(grad, np.float64), expected, rtol=2**-8, atol=1e-6)


@pytest.mark.parametrize("stack", [(), (3,)])
@pytest.mark.parametrize("tied", [False, True])
def test_accumulate_gathered_grad_rounds_like_the_dense_gradient(stack, tied):
    # integers (exact in fp32 in any summation order) large enough that bf16 (8 significant bits) must round them
    rng = np.random.default_rng(1)
    v, d = 13, 3
    tokens = np.asarray([5, 0, 5, 12, 5, 7, 0, 5], np.int32)  # 5 four times, 0 twice; 9 rows untouched
    rows = rng.integers(-250, 250, (*stack, tokens.size, d)).astype(np.float32)  # exact in bf16, as row_grads are
    rows[..., [0, 2, 4, 7], 0] = [201, 101, 1, 0]  # token 5's sum 303 is not a bf16 number (spacing 2 above 256)
    acc = rng.integers(-1000, 1000, (*stack, v, d)).astype(np.float32) / 8
    dense = rng.integers(-250, 250, (*stack, v, d)).astype(np.float32) if tied else None
    # by hand: sum the repeated rows in fp32, round to bf16, (tied) add the dense gradient and round to bf16 again
    sums = np.zeros((*stack, v, d), np.float32)
    for i, tok in enumerate(tokens):
        sums[..., tok, :] += rows[..., i, :]
    grad = sums.astype(ml_dtypes.bfloat16)
    if tied:
        grad = (dense.astype(ml_dtypes.bfloat16).astype(np.float32) + grad.astype(np.float32)).astype(ml_dtypes.bfloat16)
    expected = acc + grad.astype(np.float32)
    assert not np.array_equal(expected, acc + sums + (0 if dense is None else dense))  # the roundings are visible
    got = ops.accumulate_gathered_grad(jnp.asarray(acc), jnp.asarray(tokens), jnp.asarray(rows, jnp.bfloat16),
                                       None if dense is None else jnp.asarray(dense, jnp.bfloat16))
    assert got.dtype == jnp.float32
    np.testing.assert_array_equal(np.asarray(got), expected)
    # and it is the dense path it replaces: the table gradient of embedding_lookup (+ the dense one), cast, added
    table = jnp.zeros((*stack, v, d), jnp.bfloat16)
    _, vjp = jax.vjp(lambda t: ops.embedding_lookup(t, jnp.asarray(tokens)), table)
    (lookup_grad,) = vjp(jnp.asarray(rows, jnp.bfloat16))
    if tied:
        lookup_grad = jnp.asarray(dense, jnp.bfloat16) + lookup_grad
    np.testing.assert_array_equal(np.asarray(got), np.asarray(jnp.asarray(acc) + lookup_grad.astype(jnp.float32)))


def test_distinct_tokens_is_jnp_unique_with_its_inverse():
    # by hand: tokens 4 0 4 2 0 -> distinct 0 2 4, padded with the vocab size to T entries; each row's place among them
    got_unique, got_inverse = ops._distinct_tokens(jnp.asarray([4, 0, 4, 2, 0], jnp.int32), 9)
    np.testing.assert_array_equal(got_unique, [0, 2, 4, 9, 9])
    np.testing.assert_array_equal(got_inverse, [2, 0, 2, 1, 0])
    rng = np.random.default_rng(3)
    for t, v in ((1, 7), (64, 5), (2000, 50304)):
        tokens = jnp.asarray(np.minimum(rng.zipf(1.2, t) - 1, v - 1).astype(np.int32))
        unique, inverse = jnp.unique(tokens, return_inverse=True, size=t, fill_value=v)
        got_unique, got_inverse = ops._distinct_tokens(tokens, v)
        np.testing.assert_array_equal(got_unique, unique)
        np.testing.assert_array_equal(got_inverse, np.asarray(inverse).reshape(-1))


def test_the_shipped_auto_table_names_registered_backends_and_cpu_gets_xla():
    table = json.loads(ops.SHIPPED_AUTO_TABLE.read_text())
    for kind, picks in table["devices"].items():
        assert set(picks) == set(ops.OPS), kind
        assert all((op, backend) in ops.BACKENDS for op, backend in picks.items()), picks
    assert all(kind in table["devices"] for kind in table["compute_capability"].values())
    from jaxrun.config import CONFIG_DIR, load_config

    cfg = load_config(CONFIG_DIR / "record60.py")
    assert {op: ops.auto_backend(op) for op, b in cfg.model.backends if b == "auto"} == dict.fromkeys(ops.OPS, "xla")


def test_mlp_keeps_its_bf16_rounding_points_under_fusion():
    """recipe §14.3: pre and d_post are bf16 tensors in the reference. The ops pin those roundings (reduce_precision),
    which XLA's GPU compiler would otherwise drop when it fuses the product into the relu² (xla_allow_excess_precision).
    Checked on the CUDA lowering, made here without a GPU."""
    u = jax.ShapeDtypeStruct((64, 32), jnp.bfloat16)
    w = jax.ShapeDtypeStruct((128, 32), jnp.bfloat16)

    def run(u, fc, proj):
        out, vjp = jax.vjp(ops.mlp_xla, u, fc, proj)
        return out, vjp(out)

    text = jax.jit(run).trace(u, w, w).lower(lowering_platforms=("cuda",)).as_text()
    assert text.count("stablehlo.reduce_precision") >= 3 and "format = e8m7" in text  # pre (fwd, bwd) and d_post


def test_backend_names_are_checked():
    ops.check_backends((("attention", "auto"), ("lm_head", "triton"), ("mlp", "xla"), ("cross_entropy", "xla"),
                        ("head_loss", "triton")))
    with pytest.raises(ValueError, match="unknown backend 'cudnn' for 'mlp'"):
        ops.check_backends((("attention", "xla"), ("lm_head", "xla"), ("mlp", "cudnn"), ("cross_entropy", "xla"),
                            ("head_loss", "xla")))
    with pytest.raises(ValueError, match="must name 'head_loss' exactly once"):
        ops.check_backends((("attention", "xla"), ("lm_head", "xla"), ("mlp", "xla"), ("cross_entropy", "xla")))
    with pytest.raises(ValueError, match="must name 'cross_entropy' exactly once"):
        ops.check_backends((("attention", "xla"), ("lm_head", "xla"), ("mlp", "xla")))


def test_kernels_resolve_once_and_validate(monkeypatch):
    xla = {"attention": ops.attention_xla, "lm_head": ops.lm_head_xla, "mlp": ops.mlp_xla,
           "cross_entropy": ops.cross_entropy_xla, "head_loss": ops.head_loss_xla}
    k = ops.kernels((("attention", "auto"), ("lm_head", "xla"), ("mlp", "auto"), ("cross_entropy", "xla"),
                     ("head_loss", "xla")), measured={"attention": "xla"})  # mlp is not in the measured picks: xla
    assert {op: getattr(k, op) for op in xla} == xla
    assert k.backends == (("attention", "xla"), ("lm_head", "xla"), ("mlp", "xla"), ("cross_entropy", "xla"),
                          ("head_loss", "xla"))
    assert k.backend("mlp") == "xla" and hash(k) == hash(ops.kernels(dict(k.backends)))  # a dict works too
    reads = []
    monkeypatch.setattr(ops, "measured_backends", lambda *a: reads.append(1) or {})
    ops.kernels(dict.fromkeys(ops.OPS, "auto"))
    assert reads == [1]  # the measured tables are read once for all five ops
    with pytest.raises(ValueError, match="unknown backend 'trition' for op 'attention'; known: cudnn, triton, xla"):
        ops.kernels({**dict.fromkeys(ops.OPS, "xla"), "attention": "trition"})
    with pytest.raises(ValueError, match="must name 'mlp' exactly once"):
        ops.kernels((("attention", "xla"), ("lm_head", "xla"), ("cross_entropy", "xla"), ("head_loss", "xla")))
    with pytest.raises(ValueError, match="unknown op 'softmax'"):
        ops.kernels({**dict.fromkeys(ops.OPS, "xla"), "softmax": "xla"})
