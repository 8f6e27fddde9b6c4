"""The training engine (jaxrun/engine.py): its gradient function against the plain autodiff of the model's loss."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrun import engine, model, sharding
from jaxrun.config import CONFIG_DIR, load_config


def _batch(cfg, seed: int):
    ranks, t = cfg.data.num_ranks, cfg.schedule.seqs_per_rank[0] * cfg.schedule.seq_len
    rng = np.random.default_rng(seed)
    tokens = rng.integers(0, 40, (ranks, t + 1)).astype(np.int32)  # 40 distinct tokens: many repeats per micro-batch
    seg = np.sort(rng.integers(0, 3, (ranks, t)), axis=1).astype(np.int32)
    return {"inputs": tokens[:, :-1], "targets": tokens[:, 1:], "seg_ids": seg}


@pytest.mark.parametrize("tied", [True, False])
def test_grad_fn_is_the_autodiff_of_the_summed_loss(tied):
    # The gradient function differentiates with respect to the gathered embedding rows and adds their gradient into
    # the fp32 sums itself (ops.accumulate_gathered_grad). Reference: jax.grad of the loss with respect to every
    # parameter, one micro-batch at a time, each gradient cast to fp32 and summed, then divided by the ranks
    # (recipe §3.6): the same numbers to the bit on one CPU device, except the tied head's: there the rows' sum is
    # rounded to bf16 before the head's gradient is added (twice rounded, as the reference's autograd rounds it),
    # where XLA's fusion of the plain autodiff keeps the fp32 sum (its excess precision): one bf16 step apart.
    cfg = load_config(CONFIG_DIR / "tiny.py")
    cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, num_ranks=2))  # 2 micro-batches are enough
    params = jax.jit(lambda k: engine.init_state(cfg, k)["params"])(jax.random.key(0))
    # away from the init, where the zero output projections leave the value embeddings without a gradient
    noise = jax.random.split(jax.random.key(1), len(params))
    params = {k: (p.astype(jnp.float32) + 0.02 * jax.random.normal(n, p.shape)).astype(p.dtype)
              for (k, p), n in zip(sorted(params.items()), noise)}
    params["embed"] = (params["lm_head"].astype(jnp.float32) * 0.5).astype(jnp.bfloat16)  # a table of its own
    batch = _batch(cfg, 1)
    windows = (cfg.schedule.window_block_size, 3 * cfg.schedule.window_block_size)
    dyn = jax.tree.map(jnp.asarray, engine.dyn_inputs(cfg, 0))
    mesh = sharding.make_mesh(cfg.data.num_ranks, jax.devices()[:1])
    fn = engine.make_grad_fn(cfg, mesh, windows, tied)(jax.eval_shape(lambda p: p, params))
    loss, grads = fn(params, {k: jnp.asarray(v) for k, v in batch.items()}, dyn)

    @jax.jit
    def reference(params):
        total, acc = 0.0, jax.tree.map(lambda p: jnp.zeros(p.shape, jnp.float32), params)
        for r in range(cfg.data.num_ranks):
            b = {k: jnp.asarray(v[r]) for k, v in batch.items()}
            l, g = jax.value_and_grad(model.train_loss)(params, b, dyn, cfg=cfg.model, windows=windows, tied=tied)
            total, acc = total + l, jax.tree.map(lambda a, x: a + x.astype(jnp.float32), acc, g)
        return total, jax.tree.map(lambda a: a / cfg.data.num_ranks, acc)

    ref_loss, ref = reference(params)
    assert cfg.data.num_ranks >= 2
    np.testing.assert_array_equal(np.asarray(loss), np.asarray(ref_loss))
    assert set(grads) == set(ref)
    for name in ref:
        if tied and name == "lm_head":
            got, want = np.asarray(grads[name]), np.asarray(ref[name])
            untouched = np.setdiff1d(np.arange(got.shape[0]), batch["inputs"])  # rows with the head's gradient only
            np.testing.assert_array_equal(got[untouched], want[untouched])
            assert np.mean(got != want) < 0.01
            assert np.linalg.norm(got - want) < 2.0**-8 * np.linalg.norm(want)  # within a bf16 step, on the whole
        else:
            np.testing.assert_array_equal(np.asarray(grads[name]), np.asarray(ref[name]), err_msg=name)
    assert np.any(np.asarray(grads["ve"]) != 0)
    assert np.any(np.asarray(grads["embed"]) != 0) != tied  # the own table learns only once untied
