"""NorMuon and cautious Adam against numpy transcriptions of recipe §3 (bf16 rounding emulated with ml_dtypes)."""

import dataclasses
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import optax
import pytest

from jaxrun import optim
from jaxrun import params as param_table
from jaxrun import schedule as S
from jaxrun.config import load_config

RECORD = load_config("configs/record60.py")
OPT, SCHED = RECORD.optim, RECORD.schedule
COEFFS = OPT.polar_express_coeffs
D = 16  # stand-in model width: banks qkvo (2, 4D, D), fc / proj (3, 4D, D)


def bf16(x):
    """Round to bf16 (nearest even) and back to float64, as numpy reference for every bf16 output."""
    return np.asarray(x, np.float32).astype(ml_dtypes.bfloat16).astype(np.float64)


def bf16_ulp(x):
    return 2.0 ** (np.floor(np.log2(np.maximum(np.abs(x), 1e-30))) - 7)


# --- numpy transcriptions of recipe §3.2 ---------------------------------------------------------------------------------


def np_pe_iterate(x, a, b, c, split=False):
    """A = X Xᵀ; B = bA + cA²; X = aX + BX; bf16 operands, exact accumulation, one bf16 rounding per product
    (split: BX rounded to bf16 first, then aX added and rounded, the reference's MLP path)."""
    gram = bf16(x @ x.T)
    poly = bf16(b * gram + c * (gram @ gram))
    return bf16(a * x + bf16(poly @ x)) if split else bf16(a * x + poly @ x)


def np_polar_express(u, split=False):
    x = bf16(u)
    tall = x.shape[0] > x.shape[1]
    if tall:
        x = x.T
    x = bf16(x / (np.linalg.norm(x) * 1.02 + 1e-6))
    for a, b, c in COEFFS:
        x = np_pe_iterate(x, a, b, c, split)
    return x.T if tall else x


def np_normalize_rows(o, q, beta2=0.95):
    """recipe §3.2 item 4 for one matrix o (rows, cols), q (rows,)."""
    r = np.mean(o**2, axis=1)
    n0 = np.sqrt(np.sum(r * o.shape[1]))
    q = beta2 * q + (1 - beta2) * r
    s = 1 / np.sqrt(np.maximum(q, 1e-10))
    n1 = np.sqrt(np.sum(r * o.shape[1] * s**2))
    return bf16(o * bf16(s * n0 / max(n1, 1e-10))[:, None]), q


def np_normuon_step(name, g, m, q, p, s):
    """One NorMuon step of one stored matrix (rows, cols) per recipe §3.2; q is per stored row."""
    mu, lrf = S.muon_momentum(s, SCHED, OPT.muon_momentum_range), S.lr_factor(s, SCHED)
    m = mu * m + (1 - mu) * g
    u = (1 - mu) * g + mu * m
    rows, cols = u.shape
    blocks = [slice(i, i + cols) for i in range(0, rows, cols)] if name == "qkvo" else [slice(0, rows)]
    o, q_new = np.zeros_like(u), np.zeros_like(q)
    for blk in blocks:
        o[blk], q_new[blk] = np_normalize_rows(np_polar_express(u[blk], split=name in ("fc", "proj")), q[blk])
    eta = 0.023 * lrf * {"qkvo": 1, "fc": 1, "proj": 2}[name] * np.sqrt(max(1, rows / cols))
    lam = 1.2 * 0.023 * lrf
    mask = o * p >= 0
    return -eta * lam * mask * p - eta * o, m, q_new


def stand_in_banks(key, scale=0.05):
    shapes = {"qkvo": (2, 4 * D, D), "fc": (3, 4 * D, D), "proj": (3, 4 * D, D)}
    keys = jax.random.split(key, len(shapes))
    return {name: (scale * jax.random.normal(k, shape)).astype(jnp.bfloat16) for (name, shape), k in zip(shapes.items(), keys)}


# --- masters and truncation -------------------------------------------------------------------------------------------


def test_truncate_to_bf16_equals_numpy_bit_truncation():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(size=1000) * 10.0 ** rng.integers(-30, 30, 1000), [0.0, -0.0, 1e-40, -3e38, np.inf, -np.inf]])
    x = x.astype(np.float32)
    got = np.asarray(jax.jit(optim.truncate_to_bf16)(jnp.asarray(x)))
    assert got.dtype == ml_dtypes.bfloat16
    np.testing.assert_array_equal(got.view(np.uint16), (x.view(np.uint32) >> 16).astype(np.uint16))
    finite = np.isfinite(x)
    assert np.all(np.abs(got[finite].astype(np.float32)) <= np.abs(x[finite]))  # round toward zero


def test_init_masters_exact_and_truncation_round_trips():
    banks = stand_in_banks(jax.random.key(0))
    masters = optim.init_masters(banks)
    for name, bank in banks.items():
        assert masters[name].dtype == jnp.float32
        np.testing.assert_array_equal(np.asarray(masters[name]), np.asarray(bank, np.float32))
        np.testing.assert_array_equal(np.asarray(optim.truncate_to_bf16(masters[name])).view(np.uint16), np.asarray(bank).view(np.uint16))
    with pytest.raises(TypeError, match="fp32 master"):
        optim.truncate_to_bf16(banks["fc"])


def test_split_params():
    params = {**stand_in_banks(jax.random.key(0)), "lm_head": jnp.zeros((8, D)), "scalars": jnp.zeros(40)}
    muon, adam = optim.split_params(params)
    assert set(muon) == set(param_table.MUON_PARAMS) and set(adam) == {"lm_head", "scalars"}
    with pytest.raises(KeyError, match=r"NorMuon banks \['proj'\] are missing"):
        optim.split_params({k: v for k, v in params.items() if k != "proj"})


@pytest.mark.parametrize("config", ["configs/record60.py", "configs/tiny.py"])
def test_optimizers_take_the_model_parameter_tree(config):
    """Every model parameter has an optimizer, and the state mirrors the parameter shapes (abstractly, no memory)."""
    from jaxrun.params import shapes as param_shapes

    cfg = load_config(config)
    muon, adam = optim.split_params(param_shapes(cfg.model))
    assert len(muon) + len(adam) == len(param_shapes(cfg.model))
    muon_state = jax.eval_shape(optim.normuon(cfg.optim, cfg.schedule).init, muon)
    adam_state = jax.eval_shape(optim.cautious_adam(cfg.optim, cfg.schedule).init, adam)
    for name, p in muon.items():
        assert muon_state.momentum[name].shape == p.shape and muon_state.row_variance[name].shape == (*p.shape[:-1], 1)
    for name, p in adam.items():
        assert adam_state.m[name].shape == adam_state.v[name].shape == p.shape and adam_state.m[name].dtype == jnp.float32
    if config.endswith("record60.py"):
        assert sum(p.shape[0] for p in muon.values()) == 32


# --- NorMuon pieces ----------------------------------------------------------------------------------------------------


def test_polar_express_one_iterate_matches_numpy():
    x = bf16(np.random.default_rng(1).normal(size=(3, D, 4 * D)) / 20)
    a, b, c = COEFFS[0]
    got = np.asarray(jax.jit(optim.polar_express_iterate, static_argnums=(1, 2, 3))(jnp.asarray(x, jnp.bfloat16), a, b, c), np.float64)
    want = np.stack([np_pe_iterate(xi, a, b, c) for xi in x])
    # Identical up to accumulation order: at most one bf16 ulp, and only at a few rounding ties.
    diff = np.abs(got - want)
    assert np.all(diff <= bf16_ulp(want) * 1.01)
    assert np.mean(diff > 0) < 0.02


def test_polar_express_split_product_rounds_bx_first():
    """The MLP matrices' iterate rounds BX to bf16 before adding aX (two roundings), the attention's once."""
    x = bf16(np.random.default_rng(4).normal(size=(3, D, 4 * D)) / 20)
    a, b, c = COEFFS[1]
    run = jax.jit(optim.polar_express_iterate, static_argnums=(1, 2, 3), static_argnames="split_product")
    got = np.asarray(run(jnp.asarray(x, jnp.bfloat16), a, b, c, split_product=True), np.float64)
    want = np.stack([np_pe_iterate(xi, a, b, c, split=True) for xi in x])
    fused = np.stack([np_pe_iterate(xi, a, b, c) for xi in x])
    diff = np.abs(got - want)
    assert np.all(diff <= bf16_ulp(want) * 1.01) and np.mean(diff > 0) < 0.02
    assert np.mean(want != fused) > 0.05  # the two roundings are a different function, not a no-op
    assert param_table.SPLIT_PRODUCT_BANKS == ("fc", "proj")


@pytest.mark.parametrize("shape", [(4, D, D), (4, 4 * D, D), (4, D, 4 * D)])
def test_polar_express_five_iterates_match_numpy(shape):
    u = np.random.default_rng(2).normal(size=shape)
    got = np.asarray(optim.polar_express(jnp.asarray(u, jnp.float32), COEFFS, 1.02, 1e-6), np.float64)
    assert got.shape == shape
    for gi, ui in zip(got, u):
        want = np_polar_express(ui)
        assert np.linalg.norm(gi - want) / np.linalg.norm(want) < 1e-2


@pytest.mark.parametrize("shape", [(4, 96, 96), (4, 64, 256), (4, 256, 64)])
def test_polar_express_singular_values_near_one(shape):
    # Measured on the record shapes (768x768 and 768x3072 Gaussian): 768x3072 all in [0.858, 1.142]; 768x768 98 % in
    # [0.858, 1.142], the smallest ~1 % lower (a square Gaussian matrix has singular values near 0 that five iterations
    # cannot lift).
    x = jax.random.normal(jax.random.key(3), shape)
    sv = np.linalg.svd(np.asarray(optim.polar_express(x, COEFFS, 1.02, 1e-6), np.float32), compute_uv=False)
    assert sv.max() < 1.15
    if shape[1] == shape[2]:
        assert np.percentile(sv, 3) > 0.85
    else:
        assert sv.min() > 0.85


def test_normalize_rows_matches_numpy_over_steps():
    rng = np.random.default_rng(4)
    q = np.zeros((3, 4 * D))
    q_jax = jnp.zeros((3, 4 * D, 1), jnp.float32)
    for _ in range(4):
        o = bf16(rng.normal(size=(3, 4 * D, D)) * rng.uniform(0.1, 3, size=(3, 4 * D, 1)))
        got, q_jax = optim.normalize_rows(jnp.asarray(o, jnp.bfloat16), q_jax, 0.95, 1e-10)
        want, q = zip(*[np_normalize_rows(oi, qi) for oi, qi in zip(o, q)])
        want, q = np.stack(want), np.stack(q)
        np.testing.assert_allclose(np.asarray(q_jax)[..., 0], q, rtol=1e-5)
        assert np.all(np.abs(np.asarray(got, np.float64) - want) <= bf16_ulp(want) * 1.01)
        # Frobenius norm of each matrix preserved (up to bf16 rounding)
        np.testing.assert_allclose(np.linalg.norm(np.asarray(got, np.float64), axis=(1, 2)), np.linalg.norm(o, axis=(1, 2)), rtol=5e-3)


def test_cautious_muon_update_mask_is_non_strict():
    o = jnp.asarray([[1.0, -1.0, 0.0, 1.0], [0.0, 2.0, -2.0, 0.0]], jnp.bfloat16)
    p = jnp.asarray([[3.0, 3.0, 3.0, -3.0], [0.0, -5.0, -5.0, 0.0]], jnp.float32)
    lr, decay = jnp.float32(0.1), jnp.float32(0.5)
    got = np.asarray(optim.cautious_muon_update(o, p, lr, decay))
    o64, p64 = np.asarray(o, np.float64), np.asarray(p, np.float64)
    mask = o64 * p64 >= 0  # O == 0 still decays: [O*P >= 0] (recipe §3.2 item 6)
    np.testing.assert_allclose(got, -0.1 * 0.5 * mask * p64 - 0.1 * o64, rtol=1e-6)
    assert got[0, 2] == pytest.approx(-0.1 * 0.5 * 3.0)  # zero update, decayed
    assert got[0, 1] == pytest.approx(0.1)  # disagreeing sign: not decayed


# --- NorMuon end to end ------------------------------------------------------------------------------------------------


def test_normuon_matches_numpy_over_several_steps():
    key = jax.random.key(5)
    masters = optim.init_masters(stand_in_banks(key, scale=0.2))
    tx = optim.normuon(OPT, SCHED)
    state = tx.init(masters)
    update = jax.jit(lambda g, st, p, s: tx.update(g, st, p, step=s))
    ref = {name: (np.zeros(m.shape), np.zeros(m.shape[:-1]), np.asarray(m, np.float64)) for name, m in masters.items()}
    for i, s in enumerate([0, 1, 300, 1157, 1774]):
        grads = stand_in_banks(jax.random.fold_in(key, i + 1), scale=1.0)
        grads["qkvo"] = grads["qkvo"].at[:, 2 * D : 3 * D].multiply(0.01)  # blocks of very different size
        grads["qkvo"] = grads["qkvo"].at[0, 3 * D :].set(0)  # a zero block (zero O rows at init)
        updates, state = update(grads, state, masters, jnp.int32(s))
        masters = optax.apply_updates(masters, updates)
        for name in masters:
            g = np.asarray(grads[name], np.float64)
            m, q, p = ref[name]
            out = [np_normuon_step(name, g[j], m[j], q[j], p[j], s) for j in range(g.shape[0])]
            u_ref, m_ref, q_ref = (np.stack(t) for t in zip(*out))
            u = np.asarray(updates[name], np.float64)
            assert updates[name].dtype == jnp.float32
            # momentum is fp32 arithmetic: tight; the rest goes through bf16 Polar Express: rounding-level
            np.testing.assert_allclose(np.asarray(state.momentum[name]), m_ref, rtol=1e-5, atol=1e-7)
            assert np.linalg.norm(u - u_ref) / np.linalg.norm(u_ref) < 2e-2, (name, s)  # measured <= 5e-3
            np.testing.assert_allclose(np.asarray(state.row_variance[name])[..., 0], q_ref, rtol=2e-2, atol=1e-9)
            ref[name] = (m_ref, q_ref, p + u)
        assert state.row_variance["qkvo"].shape == (2, 4 * D, 1)


def test_normuon_bad_input():
    tx = optim.normuon(OPT, SCHED)
    with pytest.raises(KeyError, match="no lr_mul for bank 'lm_head'"):
        tx.init({"lm_head": jnp.zeros((1, 64, 16))})
    with pytest.raises(ValueError, match="rows >= cols"):
        tx.init({"fc": jnp.zeros((1, 8, 16))})
    with pytest.raises(ValueError, match="square 16x16 blocks"):
        tx.init({"qkvo": jnp.zeros((1, 40, 16))})
    with pytest.raises(ValueError, match=r"stack \(n, rows, cols\)"):
        tx.init({"fc": jnp.zeros((64, 16))})
    banks = stand_in_banks(jax.random.key(0))
    masters = optim.init_masters(banks)
    with pytest.raises(TypeError, match="fp32 masters"):
        tx.update(banks, tx.init(masters), banks, step=0)
    with pytest.raises(ValueError, match="needs the fp32 master banks"):
        tx.update(banks, tx.init(masters), step=0)


def test_normuon_with_sharded_bank_axis():
    """The update with every bank and state sharded along the bank axis over 2 (fake CPU) devices equals the unsharded one."""
    script = textwrap.dedent(
        """
        import jax, jax.numpy as jnp, numpy as np
        from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
        from jaxrun import optim
        from jaxrun.config import load_config
        cfg = load_config("configs/record60.py")
        tx = optim.normuon(cfg.optim, cfg.schedule)
        shapes = {"qkvo": (2, 64, 16), "fc": (4, 64, 16), "proj": (4, 64, 16)}
        key = jax.random.key(0)
        grads = {n: jax.random.normal(jax.random.fold_in(key, i), s).astype(jnp.bfloat16) for i, (n, s) in enumerate(shapes.items())}
        masters = {n: 0.1 * jax.random.normal(jax.random.fold_in(key, 10 + i), s) for i, (n, s) in enumerate(shapes.items())}
        step = jax.jit(lambda g, st, p, s: tx.update(g, st, p, step=s))
        state = step(grads, tx.init(masters), masters, 5)[1]
        want = step(grads, state, masters, 7)
        mesh = Mesh(np.array(jax.devices()), ("data",))
        shard = lambda tree: jax.device_put(tree, NamedSharding(mesh, P("data")))
        got = step(shard(grads), shard(state), shard(masters), 7)
        assert len(got[0]["qkvo"].sharding.device_set) == 2
        for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-8)
        print("OK", len(jax.devices()))
        """
    )
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2", "JAX_PLATFORMS": "cpu"}
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300,
                            cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert result.returncode == 0 and "OK 2" in result.stdout, result.stderr[-3000:]


# --- cautious Adam -----------------------------------------------------------------------------------------------------


def adam_params(key):
    k = jax.random.split(key, 4)
    return {
        "lm_head": (0.05 * jax.random.normal(k[0], (12, D))).astype(jnp.bfloat16),
        "embed": (0.05 * jax.random.normal(k[1], (12, D))).astype(jnp.bfloat16),
        "ve": (0.05 * jax.random.normal(k[2], (3, 12, D))).astype(jnp.bfloat16),
        "smear_gate": jnp.zeros((1, 12), jnp.bfloat16),
        "scalars": jnp.linspace(-1.5, 1.1, 40, dtype=jnp.float32),
        "x0_lambdas": jax.random.normal(k[3], (11,), jnp.float32),
    }


def adam_grads(key, params):
    out = {}
    for i, (name, p) in enumerate(params.items()):
        g = jax.random.normal(jax.random.fold_in(key, i), p.shape) * jnp.where(jnp.arange(p.shape[-1]) % 4 == 0, 1e-10, 1.0)
        g = jnp.where(jnp.arange(p.shape[-1]) % 4 == 1, 0.0, g)  # never-seen entries: u = 0 -> no decay (strict mask)
        out[name] = g.astype(p.dtype)
    return out


def np_adam_step(p, g, m, v, t, s, group, wd):
    """recipe §3.3 for one parameter; p in its dtype's values, g the fp32 two-step sum."""
    b1, b2 = group.betas
    t += 1
    m = b1 * m + (1 - b1) * g
    v = b2 * v + (1 - b2) * g * g
    lr = 0.008 * S.lr_factor(s, SCHED) * group.lr_mul
    u = lr * np.sqrt(1 - b2**t) / (1 - b1**t) * m / (np.sqrt(v) + 1e-10)
    u = u + lr**2 * wd * group.wd_mul * (u * p > 0) * p
    return p - u, m, v, t


@pytest.mark.parametrize("weight_decay", [0.005, 40.0], ids=["record", "large-decay"])
def test_cautious_adam_matches_numpy_over_odd_steps(weight_decay):
    cfg = dataclasses.replace(OPT, adam_weight_decay=weight_decay)  # large: makes the masked decay visible
    key = jax.random.key(7)
    params = adam_params(key)
    tx = optim.cautious_adam(cfg, SCHED)
    state = tx.init(params)

    @jax.jit
    def odd_step(acc, grads, state, params, s):
        updates, state = tx.update(optim.accumulate(acc, grads), state, params, step=s)
        return optax.apply_updates(params, updates), state, updates

    ref = {n: (np.asarray(p, np.float64), np.zeros(p.shape), np.zeros(p.shape), 0) for n, p in params.items()}
    dtypes = {n: p.dtype for n, p in params.items()}
    for s in (1, 3, 579, 1157):
        g_even, g_odd = adam_grads(jax.random.fold_in(key, 2 * s), params), adam_grads(jax.random.fold_in(key, 2 * s + 1), params)
        acc = optim.accumulate(None, g_even)
        params, state, updates = odd_step(acc, g_odd, state, params, jnp.int32(s))
        for name, p in params.items():
            p_ref, m, v, t = ref[name]
            g = np.asarray(g_even[name], np.float64) + np.asarray(g_odd[name], np.float64)
            new_p, m, v, t = np_adam_step(p_ref, g, m, v, t, s, cfg.adam_group(name), weight_decay)
            np.testing.assert_allclose(np.asarray(state.m[name]), m, rtol=1e-5, atol=1e-20)
            np.testing.assert_allclose(np.asarray(state.v[name]), v, rtol=1e-5, atol=1e-30)
            assert int(state.count[name]) == t
            np.testing.assert_allclose(np.asarray(updates[name], np.float64), new_p - p_ref, rtol=1e-4, atol=1e-9)
            assert p.dtype == dtypes[name]  # bf16 stays bf16, fp32 stays fp32
            want = bf16(new_p) if p.dtype == jnp.bfloat16 else new_p
            tol = bf16_ulp(want) * 1.01 if p.dtype == jnp.bfloat16 else 1e-6 * np.abs(want) + 1e-9
            assert np.all(np.abs(np.asarray(p, np.float64) - want) <= tol), name
            ref[name] = (np.asarray(p, np.float64), m, v, t)


def test_cautious_adam_eps_and_strict_mask():
    """Hand-worked single entries: eps sits on the uncorrected sqrt(v); u == 0 (no gradient) never decays."""
    cfg = dataclasses.replace(OPT, adam_weight_decay=100.0)
    tx = optim.cautious_adam(cfg, SCHED)
    p = {"scalars": jnp.asarray([1.0, 1.0, -2.0], jnp.float32)}
    g = {"scalars": jnp.asarray([1e-10, 0.0, 3.0], jnp.float32)}
    updates, _ = tx.update(g, tx.init(p), p, step=1)
    b1, b2, lr = 0.9, 0.99, 0.008 * 5  # scalars group: betas (0.9, 0.99), lr_mul 5, wd_mul 0
    u0 = lr * np.sqrt(1 - b2) / (1 - b1) * ((1 - b1) * 1e-10) / (np.sqrt((1 - b2) * 1e-20) + 1e-10)
    assert float(updates["scalars"][0]) == pytest.approx(-u0, rel=1e-5)  # = -0.04/11, not -0.02 (eps on the corrected sqrt(v))
    assert float(updates["scalars"][1]) == 0.0
    p = {"ve": jnp.asarray([[1.0, 1.0, -2.0]], jnp.bfloat16)}  # ve: wd_mul 5
    g = {"ve": jnp.asarray([[1.0, 0.0, 1.0]], jnp.bfloat16)}
    updates, _ = tx.update(g, tx.init(p), p, step=1)
    lr = 0.008 * 75
    step_u = lr * np.sqrt(1 - 0.95) / (1 - 0.75) * 0.25 / (np.sqrt(0.05) + 1e-10)
    decay = lr**2 * 100.0 * 5
    np.testing.assert_allclose(np.asarray(updates["ve"])[0], [-(step_u + decay * 1.0), 0.0, -step_u], rtol=1e-5)


def test_cautious_adam_unused_embed_and_untie():
    """While tied, embed's gradient is exactly zero (it is unused): zero update, moments still zero, weights
    unchanged; the untie then copies lm_head's weights and whole Adam state over it."""
    params = adam_params(jax.random.key(8))
    embed_before = np.asarray(params["embed"]).copy()
    tx = optim.cautious_adam(OPT, SCHED)
    state = tx.init(params)
    update = jax.jit(lambda g, st, p, s: tx.update(g, st, p, step=s))
    for s in (1, 3):
        grads = adam_grads(jax.random.fold_in(jax.random.key(8), s), params)
        grads["embed"] = jnp.zeros_like(grads["embed"])
        updates, state = update(grads, state, params, s)
        assert not np.any(np.asarray(updates["embed"]))
        params = optax.apply_updates(params, updates)
    np.testing.assert_array_equal(np.asarray(params["embed"]).view(np.uint16), embed_before.view(np.uint16))
    assert not np.any(np.asarray(state.m["embed"])) and not np.any(np.asarray(state.v["embed"]))
    assert int(state.count["lm_head"]) == 2

    full = {**params, "qkvo": jnp.ones((1, 4, 1))}
    new_params, new_state = jax.jit(optim.untie_embedding)(full, state)
    np.testing.assert_array_equal(np.asarray(new_params["embed"]).view(np.uint16), np.asarray(params["lm_head"]).view(np.uint16))
    for field in ("m", "v"):
        np.testing.assert_array_equal(np.asarray(getattr(new_state, field)["embed"]), np.asarray(getattr(state, field)["lm_head"]))
    assert int(new_state.count["embed"]) == 2
    np.testing.assert_array_equal(np.asarray(new_params["qkvo"]), 1.0)
    np.testing.assert_array_equal(np.asarray(new_params["ve"]), np.asarray(params["ve"]))

    with pytest.raises(KeyError, match="no Adam group for parameter 'qkvo'"):
        tx.init({"qkvo": jnp.zeros((1, 4, 4))})
    with pytest.raises(KeyError, match="untie_embedding"):
        optim.untie_embedding({"lm_head": params["lm_head"]}, state)


def test_accumulate_is_fp32_sum():
    a = {"x": jnp.asarray([1.0, 2.0 ** -9], jnp.bfloat16)}
    b = {"x": jnp.asarray([2.0 ** -9, 1.0], jnp.bfloat16)}
    total = optim.accumulate(optim.accumulate(None, a), b)
    assert total["x"].dtype == jnp.float32
    np.testing.assert_array_equal(np.asarray(total["x"]), [1 + 2.0**-9, 1 + 2.0**-9])  # not representable in bf16


# --- benchmark ---------------------------------------------------------------------------------------------------------


def test_bench_normuon_runs_and_agrees():
    tiny = load_config("configs/tiny.py")
    model = dataclasses.replace(tiny.model, model_dim=D, num_heads=2, head_dim=D // 2, mlp_hidden=4 * D)
    result = optim.bench_normuon(tiny.optim, tiny.schedule, 1, model=model)
    n_matrices = len(model.attention_layers) + 2 * model.num_layers  # qkvo per attention layer, fc and proj per layer
    assert result["n_matrices"] == n_matrices and result["batched_ms"] > 0 and result["per_matrix_ms"] > 0
    assert result["max_abs_update_diff"] < 0.05 * result["max_abs_update"]
