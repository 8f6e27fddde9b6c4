"""The lowering cache (jaxrun/lowering_cache.py): a second start reads every lowering instead of tracing and trains the
same numbers; the key follows what a trace reads; a damaged entry, an unwritable directory or a function jax.export
cannot carry never changes what runs."""

import dataclasses
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrun import engine, lowering_cache, schedule, sharding
from jaxrun.config import CONFIG_DIR, load_config
from jaxrun.lowering_cache import HIT, OFF, STORED, LoweringCache


def _tiny(directory) -> object:
    cfg = load_config(CONFIG_DIR / "tiny.py")
    return dataclasses.replace(cfg, run=dataclasses.replace(cfg.run, lowering_cache_dir=str(directory)))


def _train(cfg, steps: int):
    """Compile (through the config's lowering cache) and run the first ``steps`` steps on 2 devices, then the step-0
    validation; returns (what the cache did per variant, the losses, the validation loss, the final params)."""
    jax.clear_caches()  # each start traces afresh, as a new process would
    session = engine.setup(cfg, devices=2, announce=lambda *_: None)
    try:
        untie = schedule.untie_step(cfg.schedule)
        fns = engine.compile_step_functions(session, steps=range(steps), evals=[0])
        state, losses = engine.initial_state(session), []
        for s in range(steps):
            state, loss = engine.train_step(session, fns, state, s, engine.next_batch(session, s))
            losses.append(np.asarray(loss))
        val = engine.evaluate(session, fns, state, 0)
        params = {k: np.asarray(v) for k, v in state["params"].items()}
    finally:
        session.close()
    assert untie >= steps or fns.untie is not None
    return fns.lowering, losses, val, params


def test_a_second_start_reads_every_lowering_and_trains_the_same_numbers(tmp_path):
    # steps 0-2: the one gradient variant, the optimizer without and with Adam (odd steps), the step-0 validation
    off = _train(_tiny(""), 3)
    cold = _train(_tiny(tmp_path / "lowered"), 3)
    warm = _train(_tiny(tmp_path / "lowered"), 3)
    assert set(off[0].values()) == {OFF}
    assert len(cold[0]) == 4 and set(cold[0].values()) == {STORED}
    assert warm[0] == dict.fromkeys(cold[0], HIT)
    assert len(os.listdir(tmp_path / "lowered")) == 4
    for other in (cold, warm):  # the exported functions compute what the traced ones do, to the bit
        np.testing.assert_array_equal(np.array(other[1]), np.array(off[1]))
        assert other[2] == off[2]
        for name, value in off[3].items():
            np.testing.assert_array_equal(other[3][name], value, err_msg=name)


def test_the_key_follows_what_a_trace_reads():
    cfg = load_config(CONFIG_DIR / "tiny.py")
    mesh = sharding.make_mesh(cfg.data.num_ranks, jax.devices()[:1])
    context = lowering_cache.run_context(cfg, mesh)
    renamed = dataclasses.replace(cfg, run=dataclasses.replace(cfg.run, name="other", val_every=3))
    assert lowering_cache.run_context(renamed, mesh) == context  # cfg.run is read by no trace
    deeper = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, num_layers=cfg.model.num_layers + 1))
    assert lowering_cache.run_context(deeper, mesh) != context
    two = sharding.make_mesh(cfg.data.num_ranks, jax.devices()[:2])
    assert lowering_cache.run_context(cfg, two) != context
    cache = LoweringCache("/nowhere", context)
    x = jax.ShapeDtypeStruct((4, 8), jnp.float32)
    assert cache.key("grad", (x,)) == cache.key("grad", (x,))
    wider, bf16 = jax.ShapeDtypeStruct((4, 9), jnp.float32), jax.ShapeDtypeStruct((4, 8), jnp.bfloat16)
    keys = {cache.key("grad", (x,)), cache.key("eval", (x,)), cache.key("grad", (wider,)), cache.key("grad", (bf16,)),
            cache.key("grad", ((x,),))}
    assert len(keys) == 5  # name, shape, dtype and tree each change the key


def _double(tmp_path):
    return LoweringCache(str(tmp_path), "context"), jax.jit(lambda x: 2 * x), (jax.ShapeDtypeStruct((3,), jnp.float32),)


def test_a_damaged_entry_is_replaced_and_never_run(tmp_path):
    cache, fn, args = _double(tmp_path)
    assert cache.lower("f", fn, args)[1] == STORED
    (path,) = tmp_path.iterdir()
    blob = path.read_bytes()
    for damage in (blob[: len(blob) // 2], blob[:-1] + bytes([blob[-1] ^ 1]), b"not a lowering"):
        path.write_bytes(damage)
        lowered, outcome = cache.lower("f", fn, args)
        assert outcome == f"{STORED} (replaced the damaged {path.name})"
        np.testing.assert_array_equal(lowered.compile()(jnp.arange(3.0)), [0.0, 2.0, 4.0])
        assert path.read_bytes() == blob  # written again, whole
    assert cache.lower("f", fn, args)[1] == HIT


def test_an_unwritable_directory_or_an_unexportable_function_lowers_as_usual(tmp_path):
    (tmp_path / "file").write_text("")
    cache, fn, args = _double(tmp_path / "file")  # a file where the directory should be
    lowered, outcome = cache.lower("f", fn, args)
    assert outcome.startswith("not stored (")
    np.testing.assert_array_equal(lowered.compile()(jnp.ones(3)), [2.0, 2.0, 2.0])

    class Opaque:  # a pytree type jax.export has no serialisation for
        def __init__(self, x):
            self.x = x

    jax.tree_util.register_pytree_node(Opaque, lambda o: ((o.x,), None), lambda _, c: Opaque(*c))
    cache = LoweringCache(str(tmp_path / "dir"), "context")
    opaque = (Opaque(jax.ShapeDtypeStruct((2,), jnp.int32)),)
    lowered, outcome = cache.lower("g", jax.jit(lambda o: Opaque(o.x + 1)), opaque)
    assert outcome.startswith("not cached (ValueError: Cannot serialize PyTreeDef")
    assert lowered.compile()(Opaque(jnp.zeros(2, jnp.int32))).x.tolist() == [1, 1]
    assert not (tmp_path / "dir").exists()


def test_donation_survives_the_cache(tmp_path):
    cache = LoweringCache(str(tmp_path), "context")
    fn = jax.jit(lambda x, y: x + y, donate_argnums=(0,))
    args = (jax.ShapeDtypeStruct((1024,), jnp.float32), jax.ShapeDtypeStruct((1024,), jnp.float32))
    for expected in (STORED, HIT):
        lowered, outcome = cache.lower("add", fn, args, donate_argnums=(0,))
        assert outcome == expected
        x = jnp.ones(1024)
        out = lowered.compile()(x, jnp.ones(1024))
        assert float(out[0]) == 2.0 and x.is_deleted()  # the donated buffer is gone, as with fn itself


def test_the_least_recently_used_entries_go_past_the_size_limit(tmp_path):
    import time

    fns = {n: jax.jit(lambda x, n=n: x * n) for n in (2, 3, 4)}
    args = (jax.ShapeDtypeStruct((3,), jnp.float32),)
    cache = LoweringCache(str(tmp_path), "context")
    paths = {}
    for n in (2, 3):
        assert cache.lower(f"f{n}", fns[n], args)[1] == STORED
        paths[n] = tmp_path / (cache.key(f"f{n}", args) + lowering_cache.SUFFIX)
    cache = dataclasses.replace(cache, max_bytes=int(2.5 * paths[2].stat().st_size))  # room for two entries
    old = time.time() - 100
    os.utime(paths[2], (old, old))  # f2 the older of the two ...
    os.utime(paths[3], (old + 10, old + 10))
    stale = tmp_path / (".tmp-x" + lowering_cache.SUFFIX)  # ... and a killed writer's leftover, two hours old
    stale.write_bytes(b"half")
    os.utime(stale, (old - 7200, old - 7200))
    assert cache.lower("f2", fns[2], args)[1] == HIT  # ... until it is read: now f3 is the least recently used
    assert cache.lower("f4", fns[4], args)[1] == STORED  # three entries: over the limit, so f3 goes
    assert not paths[3].exists() and paths[2].exists() and not stale.exists()
    assert cache.lower("f3", fns[3], args)[1] == STORED  # stored again
