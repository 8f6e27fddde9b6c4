"""jaxrun.model against recipe §1, §2 and §12: parameter banks and counts, the record initialisation's loss, and the whole
forward pass against an independent fp64 numpy transcription of recipe §1.4-1.8 (full T x T masks, literal (T, 3, 2d)
rotary view, literal index arithmetic)."""

import dataclasses
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrun import model, ops, params as param_table
from jaxrun.config import CONFIG_DIR, load_config

RECORD = load_config(CONFIG_DIR / "record60.py").model
# The record's layer map at a small width and vocabulary, so fp64 numpy can follow every step.
SMALL = dataclasses.replace(RECORD, vocab_size=256, model_dim=96, num_heads=6, head_dim=16, mlp_hidden=192,
                            fp8_head=False, eval_token_chunk=16)
# Four layers: paired layer 0, key offset on the long layer 1, no attention in layer 2 (skip 1 -> 2), backout from 3.
FOUR = dataclasses.replace(SMALL, num_layers=4, paired_layers=(0,), no_attention_layers=(2,), long_window_layers=(1,),
                           key_offset_layers=(1,), value_embed_layers=((0, 0), (3, 1)), num_value_embeds=2, skip_from=1,
                           skip_to=2, backout_from=3, num_scalars=15)


def rope_freqs(cfg):
    n = cfg.head_dim // 4
    return cfg.rope_min_freq ** (np.arange(n) / (n - 1))


def make_dyn(cfg, scale=0.3, mtp=(1.0, 0.5, 0.25)):
    return {"rope_freqs": jnp.asarray(rope_freqs(cfg), jnp.float32), "attn_scale": jnp.float32(scale),
            "mtp_weights": jnp.asarray(mtp, jnp.float32)}


def make_batch(tokens, targets, seg):
    return {"inputs": jnp.asarray(tokens, jnp.int32), "targets": jnp.asarray(targets, jnp.int32),
            "seg_ids": jnp.asarray(seg, jnp.int32)}


def random_params(cfg, seed):
    """Every parameter random and non-zero, so every path of the model contributes."""
    rng = np.random.default_rng(seed)
    D, F = cfg.model_dim, cfg.mlp_hidden
    shapes = param_table.shapes(cfg)
    values = {
        "qkvo": rng.uniform(-1, 1, shapes["qkvo"].shape) * 3**0.5 / D**0.5,
        "fc": rng.uniform(-1, 1, shapes["fc"].shape) * 3**0.5 * 0.5 / D**0.5,
        "proj": rng.normal(0, 0.5 / F**0.5, shapes["proj"].shape),
        "lm_head": rng.normal(0, 0.1, shapes["lm_head"].shape),
        "embed": rng.normal(0, 1.0, shapes["embed"].shape),
        "ve": rng.normal(0, 0.5, shapes["ve"].shape),
        "attn_gate_bank": rng.normal(0, 0.3, shapes["attn_gate_bank"].shape),
        "ve_gate_bank": rng.normal(0, 0.3, shapes["ve_gate_bank"].shape),
        "smear_gate": rng.normal(0, 0.3, shapes["smear_gate"].shape),
        "skip_gate": rng.normal(0, 0.3, shapes["skip_gate"].shape),
        "x0_lambdas": rng.uniform(-0.3, 0.3, shapes["x0_lambdas"].shape),
        "scalars": param_table.initial_scalars(cfg) + rng.uniform(-0.2, 0.2, shapes["scalars"].shape),
    }
    L = cfg.num_layers
    values["scalars"][3 * L] = 0.6  # smear_lambda
    values["scalars"][3 * L + 2] = 0.3  # skip_lambda
    return {name: jnp.asarray(v, shapes[name].dtype) for name, v in values.items()}


def as_f64(params):
    return {name: np.asarray(jnp.asarray(v, jnp.float32), np.float64) for name, v in params.items()}


# ----------------------------------------------------------------------------------------------------------------------
# numpy transcription of recipe §1.4-1.8 and §2
# ----------------------------------------------------------------------------------------------------------------------


def np_rms(x, eps=1.1920929e-07):
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps)


def sigmoid(x):
    return 1 / (1 + np.exp(-x))


def np_omega(freqs, head_dim):
    """recipe §1.7: omega[2k] = omega[2k+1] = f_k for k < head_dim/4, 0 on the stationary dims."""
    omega = np.zeros(head_dim)
    for k, f in enumerate(freqs):
        omega[2 * k] = omega[2 * k + 1] = f
    return omega


def np_rotate(x, cos, sin):
    """out[2k] = cos x[2k] + sin x[2k+1]; out[2k+1] = cos x[2k+1] - sin x[2k], columns of cos/sin per dim."""
    out = np.empty_like(x)
    out[..., 0::2] = cos[..., 0::2] * x[..., 0::2] + sin[..., 0::2] * x[..., 1::2]
    out[..., 1::2] = cos[..., 1::2] * x[..., 1::2] - sin[..., 1::2] * x[..., 0::2]
    return out


def np_paired_rotary(x, freqs):
    """recipe §1.6.1-3 literally: view (T, H, d) as (T, H/2, 2d), rotate with the 2d-column paired table
    [cos/sin(2t omega), cos/sin((2t+1) omega)], re-view row-major as (2T, H/2, d)."""
    seq_len, heads, head_dim = x.shape
    omega = np_omega(freqs, head_dim)
    t = np.arange(seq_len)[:, None]
    theta = np.concatenate([2 * t * omega, (2 * t + 1) * omega], axis=1)  # (T, 2d)
    view = x.reshape(seq_len, heads // 2, 2 * head_dim)
    return np_rotate(view, np.cos(theta)[:, None], np.sin(theta)[:, None]).reshape(2 * seq_len, heads // 2, head_dim)


def np_attention(q, k, v, seg, scale, window):
    i, j = np.arange(len(seg))[:, None], np.arange(len(seg))[None, :]
    visible = (seg[:, None] == seg[None, :]) & (j <= i) & (i - j <= window)
    s = np.where(visible[None], np.einsum("qhd,khd->hqk", q, k) * scale, -np.inf)
    p = np.exp(s - s.max(-1, keepdims=True))
    return np.einsum("hqk,khd->qhd", p / p.sum(-1, keepdims=True), v)


def np_hidden(P, cfg, tokens, seg, freqs, scale, windows, tied):
    L, D, H, d, G = cfg.num_layers, cfg.model_dim, cfg.num_heads, cfg.head_dim, cfg.gate_dim
    T = len(tokens)
    sc, x0l = P["scalars"], P["x0_lambdas"]
    e = (P["lm_head"] if tied else P["embed"])[tokens]
    smeared = e.copy()
    smeared[1:] = e[1:] + sc[3 * L] * sigmoid(e[1:, :G] @ P["smear_gate"][0])[:, None] * e[:-1]
    x0 = np_rms(smeared)
    x = x0.copy()
    attn_layers = [i for i in range(L) if i not in cfg.no_attention_layers]
    ve_of = {layer: (slot, table) for slot, (layer, table) in enumerate(cfg.value_embed_layers)}
    omega = np_omega(freqs, d)
    theta = np.arange(T)[:, None] * omega
    for i in range(L):
        if i == cfg.skip_to:
            x = x + sigmoid(sc[3 * L + 2]) * 2 * sigmoid(x0[:, :G] @ P["skip_gate"][0])[:, None] * skip
        x = (sc[0] + x0l[0]) * x if i == 0 else sc[i] * x + x0l[i] * x0
        if i in attn_layers:
            a = attn_layers.index(i)
            u = np_rms(x)
            W = P["qkvo"][a]
            qkv = u @ (sc[L + 2 * i] * W[: 3 * D]).T
            q, k, v = (qkv[:, n * D : (n + 1) * D].reshape(T, H, d) for n in range(3))
            q, k = np_rms(q), np_rms(k)
            if i in ve_of:
                slot, table = ve_of[i]
                gate = 2 * sigmoid(u[:, :G] @ P["ve_gate_bank"][slot].T)
                v = v + gate[:, :, None] * P["ve"][table][tokens].reshape(T, H, d)
            if i in cfg.paired_layers:
                y = np_attention(np_paired_rotary(q, freqs), np_paired_rotary(k, freqs), v.reshape(2 * T, H // 2, d),
                                 np.repeat(seg, 2), scale, windows[0]).reshape(T, H, d)
            else:
                q = np_rotate(q, np.cos(theta)[:, None], np.sin(theta)[:, None])
                k = np_rotate(k, np.cos(theta)[:, None], np.sin(theta)[:, None])
                if i in cfg.key_offset_layers:
                    shifted = k.copy()
                    shifted[1:, :, d // 4 : d // 2] = k[:-1, :, d // 4 : d // 2]
                    shifted[1:, :, 3 * d // 4 :] = k[:-1, :, 3 * d // 4 :]
                    k = shifted
                y = np_attention(q, k, v, seg, scale, windows[1] if i in cfg.long_window_layers else windows[0])
            y = y * sigmoid(u[:, :G] @ P["attn_gate_bank"][a].T)[:, :, None]
            x = x + y.reshape(T, D) @ (sc[L + 2 * i + 1] * W[3 * D :]).T
        u = np_rms(x)
        x = x + np.maximum(u @ P["fc"][i].T, 0) ** 2 @ P["proj"][i]
        if i == cfg.skip_from:
            skip = x.copy()
        if i == cfg.backout_from:
            backout = x.copy()
    return np_rms(x - sc[3 * L + 1] * backout)


def np_row_losses(h, W, targets, weights, softcap):
    a, b, c = softcap
    z = a * sigmoid((h @ W.T + b) / c)
    lse = np.log(np.exp(z).sum(-1))
    T = len(targets)
    return np.array([sum(w * (lse[i] - z[i, targets[i + k]]) for k, w in enumerate(weights) if i + k < T)
                     for i in range(T)])


# ----------------------------------------------------------------------------------------------------------------------
# Parameters
# ----------------------------------------------------------------------------------------------------------------------


def test_record_parameter_banks_and_counts():
    shapes = jax.eval_shape(lambda k: model.init_params(RECORD, k), jax.random.key(0))
    want = {  # recipe §1.3
        "qkvo": ((10, 3072, 768), "bfloat16"), "fc": ((11, 3072, 768), "bfloat16"),
        "proj": ((11, 3072, 768), "bfloat16"), "lm_head": ((50304, 768), "bfloat16"),
        "embed": ((50304, 768), "bfloat16"), "ve": ((3, 50304, 768), "bfloat16"),
        "attn_gate_bank": ((10, 6, 12), "bfloat16"), "ve_gate_bank": ((5, 6, 12), "bfloat16"),
        "smear_gate": ((1, 12), "bfloat16"), "skip_gate": ((1, 12), "bfloat16"),
        "x0_lambdas": ((11,), "float32"), "scalars": ((40,), "float32"),
    }
    assert {n: (s.shape, s.dtype.name) for n, s in shapes.items()} == want
    rows, totals = model.param_table(shapes, RECORD)
    assert totals["stored"] == 268_665_987 and totals["matmul"] == 114_130_944  # recipe §1.12, §12
    assert {name for name, _, _, group in rows if group == "NorMuon"} == {"qkvo", "fc", "proj"}


def test_print_param_table_is_quick_for_the_record(capsys):
    start = time.perf_counter()
    model.print_param_table(RECORD)
    assert time.perf_counter() - start < 20
    out = capsys.readouterr().out
    assert "268,665,987" in out and "114,130,944" in out and "ve_gate_bank" in out


def test_initialisation_follows_spec():
    cfg = SMALL
    p = jax.jit(lambda k: model.init_params(cfg, k))(jax.random.key(1))
    D, L = cfg.model_dim, cfg.num_layers
    scalars = np.asarray(p["scalars"])
    np.testing.assert_array_equal(scalars[:L], np.float32(1.1))
    np.testing.assert_array_equal(scalars[L : 3 * L : 2], np.float32(0.5))
    np.testing.assert_array_equal(scalars[L + 1 : 3 * L : 2], np.float32(1.0))
    np.testing.assert_array_equal(scalars[3 * L : 3 * L + 3], np.float32([0.0, 0.5, -1.5]))
    np.testing.assert_array_equal(scalars[3 * L + 3 :], np.float32(1.0))
    qkvo = np.asarray(p["qkvo"], np.float32)
    assert not qkvo[:, 3 * D :].any()
    bound = cfg.init_attn_bound
    assert np.abs(qkvo[:, : 3 * D]).max() <= bound and abs(qkvo[:, : 3 * D].std() - bound / 3**0.5) < 0.02 * bound
    fc = np.asarray(p["fc"], np.float32)
    assert np.abs(fc).max() <= cfg.init_fc_bound and abs(fc.std() - cfg.init_fc_bound / 3**0.5) < 0.02 * cfg.init_fc_bound
    assert abs(np.asarray(p["lm_head"], np.float32).std() - cfg.init_lm_head_std) < 0.02 * cfg.init_lm_head_std
    for name in ("proj", "ve", "attn_gate_bank", "ve_gate_bank", "smear_gate", "skip_gate", "x0_lambdas"):
        assert not np.asarray(p[name], np.float32).any(), name


@pytest.mark.slow
def test_initial_loss_of_the_record_initialisation():
    """recipe §12: at init the loss is 10.8306 - 2.39 f (f = fraction of targets equal to their input). Full width and
    vocabulary, T = 256 (the expectation does not depend on T; its noise is ~0.1 / sqrt(T))."""
    params = model.init_params(RECORD, jax.random.key(0, impl="unsafe_rbg"))
    rng = np.random.default_rng(0)
    T = 256
    tokens = rng.integers(0, 50257, T)
    dyn = make_dyn(RECORD, scale=0.1)
    windows = (128, 384)
    seg = np.zeros(T)
    evaluate = jax.jit(lambda p, b, d: model.eval_loss(p, b, d, cfg=RECORD, windows=windows, tied=True))

    random_targets = rng.integers(0, 50257, T)
    assert abs(float(evaluate(params, make_batch(tokens, random_targets, seg), dyn)) - 10.8306) < 0.03
    repeated = random_targets.copy()
    repeated[::2] = tokens[::2]  # f = 0.5
    assert abs(float(evaluate(params, make_batch(tokens, repeated, seg), dyn)) - (10.8306 - 0.5 * 2.39)) < 0.05


# ----------------------------------------------------------------------------------------------------------------------
# Building blocks against literal transcriptions
# ----------------------------------------------------------------------------------------------------------------------


def test_paired_rotary_layout_matches_spec():
    rng = np.random.default_rng(2)
    T, H, d = 5, 6, 16
    q = np.asarray(jnp.asarray(rng.normal(size=(T, H, d)), jnp.bfloat16).astype(jnp.float32), np.float64)
    freqs = rope_freqs(SMALL)
    got = np.asarray(model.rotate_paired(jnp.asarray(q, jnp.bfloat16), jnp.asarray(freqs, jnp.float32)), np.float32)
    np.testing.assert_allclose(got, np_paired_rotary(q, freqs), atol=2e-2, rtol=1e-2)
    # The same statement per head (recipe §1.6.3): head h of token t -> row 2t + h // 3, channel h % 3, position 2t + h % 2.
    omega = np_omega(freqs, d)
    for t in range(T):
        for h in range(H):
            theta = (2 * t + h % 2) * omega
            want = np_rotate(q[t, h], np.cos(theta), np.sin(theta))
            np.testing.assert_allclose(got[2 * t + h // 3, h % 3], want, atol=2e-2, rtol=1e-2)


def test_standard_rotary_and_stationary_dims():
    rng = np.random.default_rng(3)
    T, d = 7, 16
    x = np.asarray(jnp.asarray(rng.normal(size=(T, 2, d)), jnp.bfloat16).astype(jnp.float32), np.float64)
    freqs = rope_freqs(SMALL)
    got = np.asarray(model.rotate_standard(jnp.asarray(x, jnp.bfloat16), jnp.asarray(freqs, jnp.float32)), np.float32)
    theta = np.arange(T)[:, None, None] * np_omega(freqs, d)
    np.testing.assert_allclose(got, np_rotate(x, np.cos(theta), np.sin(theta)), atol=2e-2, rtol=1e-2)
    np.testing.assert_array_equal(got[..., d // 2 :], x[..., d // 2 :])  # zero frequency: untouched
    np.testing.assert_array_equal(got[0], x[0])  # position 0


def test_key_offset_moves_the_spec_dims_from_pre_shift_values():
    T, H, d = 6, 2, 16
    k = np.arange(T * H * d, dtype=np.float32).reshape(T, H, d)
    got = np.asarray(model.key_offset(jnp.asarray(k)))
    want = k.copy()
    for t in range(1, T):  # recipe §1.5.4 / §14.5: dims 32:64 and 96:128 of 128, scaled to d; k[0] unchanged
        want[t, :, 4:8] = k[t - 1, :, 4:8]
        want[t, :, 12:16] = k[t - 1, :, 12:16]
    np.testing.assert_array_equal(got, want)


def test_smear_matches_spec():
    rng = np.random.default_rng(4)
    T, D, G = 9, 24, 12
    e = np.asarray(jnp.asarray(rng.normal(size=(T, D)), jnp.bfloat16).astype(jnp.float32), np.float64)
    gate = np.asarray(jnp.asarray(rng.normal(size=(1, G)), jnp.bfloat16).astype(jnp.float32), np.float64)
    got = np.asarray(model.smear(jnp.asarray(e, jnp.bfloat16), jnp.asarray(gate, jnp.bfloat16), jnp.float32(0.7)),
                     np.float32)
    want = e.copy()
    for t in range(1, T):
        want[t] = e[t] + 0.7 * sigmoid(e[t, :G] @ gate[0]) * e[t - 1]
    np.testing.assert_allclose(got, want, atol=2e-2, rtol=1e-2)


# ----------------------------------------------------------------------------------------------------------------------
# The whole model
# ----------------------------------------------------------------------------------------------------------------------


SEG = np.repeat(np.arange(5), [9, 3, 14, 1, 13]).astype(np.int32)  # 40 tokens, a one-token document included
WINDOWS = (4, 9)  # short and long windows both bind inside the longer documents


def hidden(params, batch, dyn, cfg, windows, tied):
    return model.GPT(cfg).apply({"params": params}, batch, dyn, windows, tied, method=model.GPT.hidden)


def test_model_matches_numpy_transcription_of_spec():
    params = random_params(SMALL, seed=5)
    P = as_f64(params)
    rng = np.random.default_rng(5)
    T = len(SEG)
    tokens, targets = rng.integers(0, SMALL.vocab_size, T), rng.integers(0, SMALL.vocab_size, T)
    batch, dyn = make_batch(tokens, targets, SEG), make_dyn(SMALL)
    freqs = rope_freqs(SMALL)

    def run(p, b, d):  # one compilation for all three
        return (hidden(p, b, d, SMALL, WINDOWS, False),
                model.eval_loss(p, b, d, cfg=SMALL, windows=WINDOWS, tied=False),
                model.train_loss(p, b, d, cfg=SMALL, windows=WINDOWS, tied=True))

    got_h, got_eval, got_train = jax.jit(run)(params, batch, dyn)

    untied_h = np_hidden(P, SMALL, tokens, SEG, freqs, 0.3, WINDOWS, tied=False)
    err = np.abs(np.asarray(got_h, np.float32) - untied_h)
    assert err.max() < 0.1 and err.mean() < 0.01, (err.max(), err.mean())
    want_eval = np_row_losses(untied_h, P["lm_head"], targets, [1.0], SMALL.softcap).mean()  # next token only
    assert abs(float(got_eval) - want_eval) < 5e-3 * want_eval

    tied_h = np_hidden(P, SMALL, tokens, SEG, freqs, 0.3, WINDOWS, tied=True)
    want_train = np_row_losses(tied_h, P["lm_head"], targets, [1.0, 0.5, 0.25], SMALL.softcap).sum()  # a SUM
    assert abs(float(got_train) - want_train) < 5e-3 * want_train


def test_sequences_in_one_call_are_each_their_own_sequence():
    """An (R, T) batch, R virtual ranks' rows in one forward (engine.ranks_per_forward): against the fp64 transcription
    run on each row alone, the merged call is as close as a call per row (rotary positions, smear, key offset,
    documents and MTP targets restart at each row), while the rows laid end to end as ONE sequence are not. Row 0 is
    one document and row 1 starts with the same id, so only packed_segment_ids keeps them apart."""
    params = random_params(FOUR, seed=7)
    P = as_f64(params)
    rng = np.random.default_rng(7)
    T = 24
    seg = np.stack([np.zeros(T), np.repeat([0, 1], [10, 14]), np.repeat([0, 1, 2], [1, 12, 11])]).astype(np.int32)
    tokens, targets = rng.integers(0, FOUR.vocab_size, (3, T)), rng.integers(0, FOUR.vocab_size, (3, T))
    dyn = make_dyn(FOUR)
    freqs = rope_freqs(FOUR)

    def run(p, b):
        return hidden(p, b, dyn, FOUR, WINDOWS, True), model.train_loss(p, b, dyn, cfg=FOUR, windows=WINDOWS, tied=True)

    run = jax.jit(run)
    merged_h, merged_loss = run(params, make_batch(tokens, targets, seg))
    one_seq = make_batch(tokens.reshape(-1), targets.reshape(-1), model.packed_segment_ids(jnp.asarray(seg)))
    joined_h, joined_loss = run(params, one_seq)
    want_h = np.concatenate([np_hidden(P, FOUR, tokens[r], seg[r], freqs, 0.3, WINDOWS, tied=True) for r in range(3)])
    want_loss = sum(np_row_losses(want_h[r * T:(r + 1) * T], P["lm_head"], targets[r], [1.0, 0.5, 0.25],
                                  FOUR.softcap).sum() for r in range(3))
    per_row_err = np.abs(np.concatenate([np.asarray(run(params, make_batch(tokens[r], targets[r], seg[r]))[0],
                                                    np.float32) for r in range(3)]) - want_h)
    err = np.abs(np.asarray(merged_h, np.float32) - want_h)
    assert err.max() < 0.1 and err.mean() < 0.01, (err.max(), err.mean())
    assert err.mean() < 1.5 * per_row_err.mean(), (err.mean(), per_row_err.mean())
    assert abs(float(merged_loss) - want_loss) < 5e-3 * want_loss
    joined_err = np.abs(np.asarray(joined_h, np.float32) - want_h).max(axis=-1)
    assert joined_err[T] > 0.1 and joined_err[2 * T] > 0.1  # without the row structure the second row's start moves
    assert abs(float(joined_loss) - want_loss) > 5e-3 * want_loss


def test_documents_connect_only_through_smear_and_key_offset():
    """Changing the last token of document 0 changes nothing in document 1 unless smear (recipe §1.4.2) or the key
    offset (§1.5.4) carries it across; attention itself never does (§5.4)."""
    rng = np.random.default_rng(6)
    seg = np.repeat([0, 1], [10, 14]).astype(np.int32)
    tokens = rng.permutation(FOUR.vocab_size)[:24]
    other = tokens.copy()
    other[9] = (tokens[9] + 1) % FOUR.vocab_size
    dyn = make_dyn(FOUR)
    base = random_params(FOUR, seed=6)
    no_smear = {**base, "scalars": base["scalars"].at[3 * FOUR.num_layers].set(0.0)}

    runs = {}

    def doc1_change(cfg, params):
        run = runs.setdefault(cfg, jax.jit(lambda p, b: hidden(p, b, dyn, cfg, WINDOWS, True)))
        a = np.asarray(run(params, make_batch(tokens, tokens, seg)), np.float32)
        b = np.asarray(run(params, make_batch(other, tokens, seg)), np.float32)
        assert np.abs(a[:10] - b[:10]).max() > 0.1  # document 0 itself does change
        return np.abs(a[10:] - b[10:]).max(axis=-1)

    isolated = dataclasses.replace(FOUR, key_offset_layers=())
    assert not doc1_change(isolated, no_smear).any()
    smeared = doc1_change(isolated, base)
    assert smeared[0] > 0.05  # the BOS of document 1 is smeared with the last token of document 0
    offset = doc1_change(FOUR, no_smear)
    # The BOS's key took dims from the last key of document 0; the BOS attends only to itself (so its own output does
    # not move), but the next token of document 1 attends to that key.
    assert offset[1] > 0.05


def test_gradients_of_the_scalars_match_finite_differences_of_the_reference():
    """The model's backward (custom VJPs of the ops included) against central differences of the fp64 reference."""
    params = random_params(FOUR, seed=7)
    rng = np.random.default_rng(7)
    seg = np.repeat([0, 1], [13, 11]).astype(np.int32)
    tokens, targets = rng.integers(0, FOUR.vocab_size, 24), rng.integers(0, FOUR.vocab_size, 24)
    dyn = make_dyn(FOUR)
    mtp = [1.0, 0.5, 0.25]
    grads = jax.jit(jax.grad(lambda p: model.train_loss(p, make_batch(tokens, targets, seg), dyn, cfg=FOUR,
                                                        windows=WINDOWS, tied=True)))(params)
    assert all(np.isfinite(np.asarray(g, np.float32)).all() for g in grads.values())
    assert set(grads) == set(params)

    P = as_f64(params)

    def loss(P):
        h = np_hidden(P, FOUR, tokens, seg, rope_freqs(FOUR), 0.3, WINDOWS, tied=True)
        return np_row_losses(h, P["lm_head"], targets, mtp, FOUR.softcap).sum()

    L = FOUR.num_layers
    checks = [("scalars", i) for i in (0, 3, L + 2, L + 3, 3 * L, 3 * L + 1, 3 * L + 2)] + [("x0_lambdas", 1)]
    for name, i in checks:
        up, down = {**P, name: P[name].copy()}, {**P, name: P[name].copy()}
        up[name][i] += 1e-4
        down[name][i] -= 1e-4
        numeric = (loss(up) - loss(down)) / 2e-4
        got = float(np.asarray(grads[name])[i])
        assert abs(got - numeric) < 0.05 * abs(numeric) + 0.05, (name, i, got, numeric)


# ----------------------------------------------------------------------------------------------------------------------
# Errors
# ----------------------------------------------------------------------------------------------------------------------


def test_bad_inputs_get_clear_errors():
    params = jax.eval_shape(lambda k: model.init_params(FOUR, k), jax.random.key(0))
    batch = make_batch(np.zeros(8), np.zeros(8), np.zeros(8))
    dyn = make_dyn(FOUR)

    def call(p=params, b=batch, d=dyn, cfg=FOUR, windows=WINDOWS):
        return jax.eval_shape(lambda p, b, d: model.train_loss(p, b, d, cfg=cfg, windows=windows, tied=True), p, b, d)

    call()
    with pytest.raises(ValueError, match="'seg_ids' is missing"):
        call(b={k: v for k, v in batch.items() if k != "seg_ids"})
    with pytest.raises(ValueError, match=r"must be a 1-D integer array \(T,\) or a 2-D one \(R, T\)"):
        call(b={**batch, "inputs": batch["inputs"][None, None]})
    with pytest.raises(ValueError, match="same shape"):
        call(b={**batch, "inputs": batch["inputs"][None]})
    with pytest.raises(ValueError, match="same shape"):
        call(b={**batch, "targets": batch["targets"][:4]})
    with pytest.raises(ValueError, match=r"dyn\['rope_freqs'\] must have shape \(4,\)"):
        call(d={**dyn, "rope_freqs": jnp.zeros(8)})
    with pytest.raises(ValueError, match="windows must be"):
        call(windows=(4,))
    with pytest.raises(ValueError, match="missing \\['scalars'\\]"):
        call(p={k: v for k, v in params.items() if k != "scalars"})
    with pytest.raises(ValueError, match="params\\['fc'\\] has shape"):
        call(p={**params, "fc": jax.ShapeDtypeStruct((3, 192, 96), jnp.bfloat16)})
    with pytest.raises(ValueError, match="paired-head layers"):
        model.init_params(dataclasses.replace(FOUR, key_offset_layers=(0,)), jax.random.key(0))
    with pytest.raises(ValueError, match="value_embed_layers entry \\(2, 0\\)"):
        model.init_params(dataclasses.replace(FOUR, value_embed_layers=((2, 0),)), jax.random.key(0))
    with pytest.raises(ValueError, match="names a layer twice"):
        model.init_params(dataclasses.replace(FOUR, value_embed_layers=((0, 0), (0, 1))), jax.random.key(0))
    with pytest.raises(ValueError, match="param_table: fc is bfloat16\\(3, 192, 96\\)"):
        model.param_table({**params, "fc": jax.ShapeDtypeStruct((3, 192, 96), jnp.bfloat16)}, FOUR)


def test_model_runs_the_kernels_it_is_given(monkeypatch):
    """With kernels= the traced model looks nothing up (no ops.get, no auto tables); the functions it is given run."""
    params = random_params(FOUR, seed=3)
    rng = np.random.default_rng(3)
    batch = make_batch(rng.integers(0, FOUR.vocab_size, 40), rng.integers(0, FOUR.vocab_size, 40), SEG)
    dyn = make_dyn(FOUR)
    kernels = ops.kernels(FOUR.backends)
    called = []

    def counting(op):
        fn = getattr(kernels, op)
        return lambda *a, **kw: called.append(op) or fn(*a, **kw)

    counted = dataclasses.replace(kernels, **{op: counting(op) for op in ops.OPS})

    def refuse(*args, **kwargs):
        raise AssertionError("looked up during tracing")

    monkeypatch.setattr(ops, "get", refuse)
    monkeypatch.setattr(ops, "measured_backends", refuse)
    auto = dataclasses.replace(FOUR, backends=tuple((op, "auto") for op in ops.OPS))
    got = jax.jit(lambda p: model.train_loss(p, batch, dyn, cfg=auto, windows=WINDOWS, tied=True, kernels=counted))(params)
    # FOUR: 3 attention layers, 4 MLPs, one training loss (head_loss, whose xla backend calls the head and the CE)
    assert sorted(called) == sorted(["attention"] * 3 + ["mlp"] * 4 + ["head_loss", "lm_head", "cross_entropy"])
    evaluated = model.eval_loss(params, batch, dyn, cfg=auto, windows=WINDOWS, tied=True, kernels=kernels)
    monkeypatch.undo()
    want = jax.jit(lambda p: model.train_loss(p, batch, dyn, cfg=FOUR, windows=WINDOWS, tied=True))(params)  # kernels=None
    assert np.asarray(got).tobytes() == np.asarray(want).tobytes()
    np.testing.assert_array_equal(np.asarray(evaluated),
                                  np.asarray(model.eval_loss(params, batch, dyn, cfg=FOUR, windows=WINDOWS, tied=True)))
