"""Doc-masked sliding-window attention kernels (kernels/flash_attention.py, kernels/cudnn_attention.py).

CPU: segment bounds, the block plan (which key blocks each query block visits, which of them run unmasked) against a
brute-force mask built from seg_ids, and the input checks. GPU (marked `gpu`): outputs and dq, dk, dv, dscale against
independent fp32 references written here (dense numpy for small T, block-banded JAX at the record shapes).
"""

from __future__ import annotations

import numpy as np
import pytest

import jax
import jax.numpy as jnp

from jaxrun import ops
from jaxrun.bench import random_documents
from jaxrun.kernels import cudnn_attention, flash_attention as fa

ON_GPU = jax.default_backend() == "gpu"
requires_gpu = pytest.mark.skipif(not ON_GPU, reason="needs an NVIDIA GPU with jax-triton")


def visible_mask(seg: np.ndarray, window: int) -> np.ndarray:
    """recipe §5.4 transcribed: key j visible to query i iff same segment, j <= i and i - j <= window."""
    i = np.arange(seg.size)[:, None]
    j = np.arange(seg.size)[None, :]
    return (seg[:, None] == seg[None, :]) & (j <= i) & (i - j <= window)


# ----------------------------------------------------------------------------------------------------------------
# CPU


def test_segment_bounds_hand_case():
    start, end = fa.segment_bounds(jnp.array([0, 0, 0, 4, 4, 7, 9, 9]))
    np.testing.assert_array_equal(start, [0, 0, 0, 3, 3, 5, 6, 6])
    np.testing.assert_array_equal(end, [3, 3, 3, 5, 5, 6, 8, 8])


def test_padded_rows_form_their_own_segment():
    start, end = fa.padded_segment_bounds(jnp.array([0, 0, 1, 1, 1]), 4)
    np.testing.assert_array_equal(start, [0, 0, 2, 2, 2, 5, 5, 5])
    np.testing.assert_array_equal(end, [2, 2, 5, 5, 5, 8, 8, 8])


def _block_view(mask: np.ndarray, rows: int, cols: int) -> tuple[np.ndarray, np.ndarray]:
    """Per (row block, column block): does any pair / does every pair of the tile have mask True."""
    t = mask.shape[0]
    tiles = mask.reshape(t // rows, rows, t // cols, cols)
    return tiles.any(axis=(1, 3)), tiles.all(axis=(1, 3))


def _check_plan(plan: np.ndarray, any_visible: np.ndarray, all_visible: np.ndarray) -> None:
    for b, (first, full_lo, full_hi, end) in enumerate(plan):
        assert first <= full_lo <= full_hi <= end
        visited = np.zeros(any_visible.shape[1], bool)
        visited[first:end] = True
        unmasked = np.zeros_like(visited)
        unmasked[full_lo:full_hi] = True
        # Visits exactly the blocks that hold a visible pair, and runs unmasked exactly the fully visible ones.
        np.testing.assert_array_equal(visited, any_visible[b], err_msg=f"block {b}: plan {plan[b]}")
        np.testing.assert_array_equal(unmasked, all_visible[b], err_msg=f"block {b}: plan {plan[b]}")


segment_bounds = jax.jit(fa.segment_bounds)
query_block_ranges = jax.jit(fa.query_block_ranges, static_argnums=(1, 2, 3))
key_block_ranges = jax.jit(fa.key_block_ranges, static_argnums=(1, 2, 3))


@pytest.mark.parametrize("seed", range(4))
def test_block_plan_visits_exactly_the_visible_blocks(seed):
    rng = np.random.default_rng(seed)
    block_m, block_n = (16, 32) if seed % 2 else (32, 16)
    t = 352
    seg = random_documents(t, [1, 7, 60, 400][seed], rng)
    for window in (0, 1, 15, 16, 33, 100, 1000):
        mask = visible_mask(seg, window)
        start, end = segment_bounds(jnp.asarray(seg))

        any_q, all_q = _block_view(mask, block_m, block_n)
        _check_plan(np.asarray(query_block_ranges(start, window, block_m, block_n)), any_q, all_q)

        any_k, all_k = _block_view(mask.T, block_n, block_m)  # key blocks x query blocks
        _check_plan(np.asarray(key_block_ranges(end, window, block_m, block_n)), any_k, all_k)


@pytest.mark.parametrize("block_m, block_n", [(32, 64), (16, 32), (64, 64)])
def test_ds_scratch_holds_every_query_block_a_key_block_visits(block_m, block_n):
    # The dK dV kernel stores the dS tile of each query block it visits at slot (query block - first visited); the
    # scratch has max_tiles_per_key_block slots per key block. One long document is the worst case: count the visible
    # (query block, key block) tiles from the brute-force mask.
    t = 2048
    for window in (0, 1, 31, 64, 100, 640):
        any_k, _ = _block_view(visible_mask(np.zeros(t, np.int64), window).T, block_n, block_m)
        slots = fa.max_tiles_per_key_block(window, block_m, block_n)
        inside = (np.arange(t // block_n) + 1) * block_n - 1 + window < t  # key blocks whose rows the end does not cut
        assert any_k.sum(axis=1)[inside].max() == slots and any_k.sum(axis=1).max() == slots
        for seed in range(3):  # and with documents, through the plan the kernels run
            seg = random_documents(t, [5, 60, 400][seed], np.random.default_rng(seed))
            _, end = segment_bounds(jnp.asarray(seg))
            plan = np.asarray(key_block_ranges(end, window, block_m, block_n))
            assert (plan[:, 3] - plan[:, 0]).max() <= slots


def test_dq_tiles_must_be_whole_dkdv_tiles():
    fwd = fa.KernelConfig(64, 64, 4, 3)
    fa.AttentionConfig(fwd, fa.KernelConfig(128, 64, 8, 3), fa.KernelConfig(32, 64, 4, 3))  # 4 tiles per dQ block
    for dq, dkdv in [((64, 64), (32, 128)), ((48, 64), (32, 64)), ((16, 64), (32, 64))]:
        with pytest.raises(ValueError, match="must be whole dK dV tiles"):
            fa.AttentionConfig(fwd, fa.KernelConfig(*dq, 4, 3), fa.KernelConfig(*dkdv, 4, 3))


def test_block_plan_cost_grows_with_window_not_length():
    # One 8192-row document, window 256, 128 x 128 tiles: each query block visits 3 key blocks (2 back + diagonal).
    start, _ = segment_bounds(jnp.zeros(8192, jnp.int32))
    plan = np.asarray(query_block_ranges(start, 256, 128, 128))
    visited = plan[:, 3] - plan[:, 0]
    assert visited.max() == 3 and visited[2:].min() == 3


def test_default_config_exists_for_every_record_window():
    for window in (0, 64, 128, 384, 640, 768, 896, 1408, 1664, 2560):
        cfg = fa.config_for(window, 128)
        assert cfg.row_multiple in (64, 128)
    with pytest.raises(ValueError, match="head_dim=96"):
        fa.config_for(128, 96)


def test_cudnn_packed_segments_hand_case():
    offsets, lengths, count = cudnn_attention.packed_segments(jnp.array([3, 3, 5, 5, 5, 8]), 4)
    np.testing.assert_array_equal(offsets, [0, 2, 5, -1, -1])
    np.testing.assert_array_equal(lengths, [2, 3, 1, -1])
    assert int(count) == 3


def _inputs(t=64, h=2, d=64, dtype=jnp.bfloat16):
    x = jnp.ones((t, h, d), dtype)
    return x, x, x, jnp.zeros(t, jnp.int32), jnp.float32(0.1)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda a: {**a, "q": a["q"].astype(jnp.float32)}, "q must be bfloat16"),
        (lambda a: {**a, "k": a["k"][:32]}, "one shape"),
        (lambda a: {**a, "q": a["q"][0]}, r"\(T, heads, head_dim\)"),
        (lambda a: {**a, "seg_ids": a["seg_ids"][:10]}, "seg_ids must be an integer array of shape"),
        (lambda a: {**a, "seg_ids": a["seg_ids"].astype(jnp.float32)}, "seg_ids must be an integer array"),
        (lambda a: {**a, "scale": jnp.ones(3)}, "scale must be a scalar"),
        (lambda a: {**a, "window": -1}, "window must be a non-negative Python int"),
        (lambda a: {**a, "window": 2.5}, "window must be a non-negative Python int"),
        (lambda a: {**a, **dict(zip("qkv", [jnp.ones((64, 2, 96), jnp.bfloat16)] * 3))}, "head_dim 96"),
    ],
)
def test_bad_input_says_what_to_change(change, message):
    q, k, v, seg, scale = _inputs()
    args = change(dict(q=q, k=k, v=v, seg_ids=seg, scale=scale, window=8))
    window = args.pop("window")
    with pytest.raises(ValueError, match=message):
        fa.attention(**args, window=window)


@pytest.mark.skipif(fa._TRITON_IMPORT_ERROR is None, reason="jax-triton is importable here")
def test_without_triton_the_error_names_the_fallback():
    with pytest.raises(RuntimeError, match="'xla' attention backend"):
        fa.attention(*_inputs(), window=8)


# ----------------------------------------------------------------------------------------------------------------
# GPU: small shapes against a dense float64 numpy transcription of recipe §1.5 / §5.4 and the softmax backward


def dense_reference(q, k, v, seg, scale, window, dout):
    """Output, dq, dk, dv and dscale in float64 (P = softmax(scale q k^T) over visible keys, O = P v)."""
    q, k, v, dout = (np.asarray(x, np.float64) for x in (q, k, v, dout))
    raw = np.einsum("ihd,jhd->hij", q, k)
    logits = np.where(visible_mask(np.asarray(seg), window)[None], raw * scale, -np.inf)
    p = np.exp(logits - logits.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    out = np.einsum("hij,jhd->ihd", p, v)
    dp = np.einsum("ihd,jhd->hij", dout, v)
    ds = p * (dp - np.einsum("ihd,ihd->hi", dout, out)[..., None])  # dL/dlogits
    dq = np.einsum("hij,jhd->ihd", ds, k) * scale
    dk = np.einsum("hij,ihd->jhd", ds, q) * scale
    dv = np.einsum("hij,ihd->jhd", p, dout)
    return out, dq, dk, dv, np.sum(ds * raw), np.sum(np.abs(ds * raw))


def rel_err(x, ref) -> float:
    """||x - ref|| / ||ref||, with references of RMS below 1e-3 (e.g. dq, dk with a window of 0, exactly zero)
    measured against RMS 1e-3 instead."""
    x = np.asarray(x, np.float64)
    assert np.isfinite(x).all()
    return float(np.linalg.norm(x - ref) / max(np.linalg.norm(ref), 1e-3 * np.sqrt(ref.size)))


def _random_qkv(rng, shape):
    return [jnp.asarray(rng.standard_normal(shape), jnp.bfloat16) for _ in range(4)]


SMALL_CFG = fa.AttentionConfig(fa.KernelConfig(32, 16, 4, 2), fa.KernelConfig(16, 32, 4, 2), fa.KernelConfig(16, 32, 4, 2))


@pytest.mark.gpu
@requires_gpu
@pytest.mark.parametrize(
    "t, h, d, window, max_doc, config",
    [
        (512, 2, 128, 100, 200, None),  # random documents, default tiles
        (512, 3, 128, 0, 200, None),  # window 0: every row sees itself only
        (384, 2, 128, 5000, 10**6, None),  # one document, window longer than the sequence
        (256, 2, 128, 64, 1, None),  # documents of length 1
        (1000, 2, 128, 130, 300, None),  # T not a multiple of any tile: padded
        (320, 2, 64, 70, 90, None),  # head dim 64 (tiny CPU config's shape)
        (200, 2, 128, 33, 50, SMALL_CFG),  # small, uneven tiles
    ],
)
def test_small_shapes_match_dense_reference(t, h, d, window, max_doc, config):
    rng = np.random.default_rng(t + window)
    seg = random_documents(t, max_doc, rng)
    q, k, v, dout = _random_qkv(rng, (t, h, d))
    scale = 0.12

    def f(q, k, v, s):
        return fa.attention(q, k, v, jnp.asarray(seg), s, window=window, config=config)

    out, vjp = jax.vjp(jax.jit(f), q, k, v, jnp.float32(scale))
    dq, dk, dv, dscale = vjp(dout)
    r_out, r_dq, r_dk, r_dv, r_dscale, dscale_mag = dense_reference(q, k, v, seg, scale, window, dout)
    assert rel_err(out, r_out) < 1e-2
    for name, x, r in (("dq", dq, r_dq), ("dk", dk, r_dk), ("dv", dv, r_dv)):
        assert rel_err(x, r) < 2e-2, name
    assert abs(float(dscale) - r_dscale) < 1e-2 * max(dscale_mag, 1.0)



# ----------------------------------------------------------------------------------------------------------------
# GPU: record shapes against a block-banded fp32 JAX reference (cost T x (window + block), never T x T)


def banded_reference(q, k, v, seg, scale, window, block=128, query_blocks=None):
    """fp32 attention of the given 128-row query blocks (all by default); returns (rows, H, d)."""
    t, h, d = q.shape
    qb = jnp.arange(t // block) if query_blocks is None else query_blocks
    rows = qb[:, None] * block + jnp.arange(block)[None, :]  # (n, block)
    keys = qb[:, None] * block - window + jnp.arange(window + block)[None, :]  # (n, window + block)
    kc = jnp.clip(keys, 0, t - 1)
    qf, kf, vf = (x.astype(jnp.float32) for x in (q[rows], k[kc], v[kc]))
    logits = jnp.einsum("nihd,njhd->nhij", qf, kf) * scale
    i, j = rows[:, :, None], keys[:, None, :]
    visible = (j >= 0) & (seg[kc][:, None, :] == seg[rows][:, :, None]) & (j <= i) & (i - j <= window)
    p = jax.nn.softmax(jnp.where(visible[:, None], logits, -jnp.inf), axis=-1)
    return jnp.einsum("nhij,njhd->nihd", p, vf).reshape(-1, h, d)


# (T rows, heads, window in rows): the training phases' standard short / long layers, their paired layouts
# (2T rows, 3 channels, the short window in interleaved rows, recipe §1.6), then the validation shapes.
RECORD_SHAPES = [
    (16384, 6, 128), (16384, 6, 384), (32768, 3, 128),
    (32768, 6, 384), (32768, 6, 896), (65536, 3, 384),
    (49152, 6, 640), (49152, 6, 1408), (98304, 3, 640),
    (49152, 6, 768), (49152, 6, 1664), (98304, 3, 768),
]


def record_segments(t_tokens: int, rows_per_token: int, rng) -> np.ndarray:
    """Random documents of 1..2048 tokens; a paired layout repeats each token's id for its 2 rows."""
    return np.repeat(random_documents(t_tokens, 2048, rng), rows_per_token)


@pytest.mark.gpu
@requires_gpu
@pytest.mark.parametrize("t, h, window", RECORD_SHAPES, ids=[f"T{t}-H{h}-W{w}" for t, h, w in RECORD_SHAPES])
def test_record_shapes_forward_and_backward(t, h, window):
    rng = np.random.default_rng(t + window)
    seg = jnp.asarray(record_segments(t // (2 if h == 3 else 1), 2 if h == 3 else 1, rng))
    q, k, v, dout = _random_qkv(rng, (t, h, 128))
    scale = jnp.float32(0.12)

    def ours(q, k, v):
        return fa.attention(q, k, v, seg, scale, window=window)

    def ref(q, k, v):
        return banded_reference(q, k, v, seg, scale, window)

    errs = _compare_vjp(ours, ref, (q, k, v), dout)
    assert errs["out"] < 1e-2 and max(errs.values()) < 2e-2, errs


def _compare_vjp(f, reference, primals, dout) -> dict[str, float]:
    """Relative errors of f's output and VJP against the reference's (evaluated in its own dtype)."""
    out, vjp = jax.vjp(jax.jit(f), *primals)
    r_out, r_vjp = jax.vjp(jax.jit(reference), *primals)
    errs = {"out": rel_err(out, np.asarray(r_out, np.float64))}
    for name, x, r in zip(("dq", "dk", "dv"), vjp(dout), r_vjp(dout.astype(r_out.dtype))):
        errs[name] = rel_err(x, np.asarray(r, np.float64))
    return errs


@pytest.mark.gpu
@requires_gpu
@pytest.mark.parametrize("t, h, window", [(16384, 6, 384), (65536, 3, 384), (49152, 6, 1664)])
def test_record_shapes_match_the_xla_backend(t, h, window):
    rng = np.random.default_rng(window + h)
    seg = jnp.asarray(record_segments(t // (2 if h == 3 else 1), 2 if h == 3 else 1, rng))
    q, k, v, dout = _random_qkv(rng, (t, h, 128))

    def ours(q, k, v):
        return fa.attention(q, k, v, seg, jnp.float32(0.12), window=window)

    def xla(q, k, v):
        return ops.attention_xla(q, k, v, seg, jnp.float32(0.12), window=window)

    errs = _compare_vjp(ours, xla, (q, k, v), dout)
    assert errs["out"] < 1e-2 and max(errs.values()) < 2e-2, errs


@pytest.mark.gpu
@requires_gpu
@pytest.mark.parametrize("t, h, window", [(262144, 6, 2560), (524288, 3, 768)], ids=["val-long", "val-paired"])
def test_validation_shapes_forward(t, h, window):
    rng = np.random.default_rng(window)
    seg = jnp.asarray(record_segments(t // (2 if h == 3 else 1), 2 if h == 3 else 1, rng))
    q, k, v, _ = _random_qkv(rng, (t, h, 128))
    out = jax.jit(lambda q, k, v: fa.attention(q, k, v, seg, jnp.float32(0.13), window=window))(q, k, v)
    blocks = jnp.asarray(np.sort(rng.choice(t // 128, size=48, replace=False)))
    ref = banded_reference(q, k, v, seg, jnp.float32(0.13), window, query_blocks=blocks)
    rows = (np.asarray(blocks)[:, None] * 128 + np.arange(128)).ravel()
    assert rel_err(np.asarray(out)[rows], np.asarray(ref, np.float64)) < 1e-2



# ----------------------------------------------------------------------------------------------------------------
# GPU: the cuDNN packed-document backend


@pytest.mark.gpu
@requires_gpu
@pytest.mark.parametrize("t, window, max_doc", [(1024, 100, 300), (512, 0, 50), (768, 2000, 10**6)])
def test_cudnn_backend_matches_dense_reference(t, window, max_doc):
    rng = np.random.default_rng(t + window)
    seg = random_documents(t, max_doc, rng)
    q, k, v, dout = _random_qkv(rng, (t, 2, 128))

    def f(q, k, v, s):
        return cudnn_attention.attention(q, k, v, jnp.asarray(seg), s, window=window, max_segments=t)

    out, vjp = jax.vjp(jax.jit(f), q, k, v, jnp.float32(0.12))
    dq, dk, dv, dscale = vjp(dout)
    r_out, r_dq, r_dk, r_dv, r_dscale, dscale_mag = dense_reference(q, k, v, seg, 0.12, window, dout)
    assert rel_err(out, r_out) < 1e-2
    for name, x, r in (("dq", dq, r_dq), ("dk", dk, r_dk), ("dv", dv, r_dv)):
        assert rel_err(x, r) < 2e-2, name
    assert abs(float(dscale) - r_dscale) < 2e-2 * max(dscale_mag, 1.0)


@pytest.mark.gpu
@requires_gpu
def test_cudnn_backend_with_too_many_documents_returns_nan():
    q = jnp.ones((256, 2, 128), jnp.bfloat16)
    out = cudnn_attention.attention(q, q, q, jnp.arange(256) // 8, jnp.float32(0.1), window=16, max_segments=16)
    assert np.isnan(np.asarray(out, np.float32)).all()
