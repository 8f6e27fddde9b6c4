"""The training engine (jaxrun/engine.py): its gradient function against the plain autodiff of the model's loss."""

import dataclasses
import json
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrun import config as config_lib
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


def test_ranks_per_forward_takes_the_largest_divisor_within_the_budget():
    cfg = load_config(CONFIG_DIR / "record60.py")  # 8 virtual ranks
    def with_budget(tokens):
        return dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, train_forward_tokens=tokens))

    assert engine.ranks_per_forward(cfg, 16384, 1) == 4  # as shipped: 65,536 tokens per forward
    assert engine.ranks_per_forward(cfg, 49152, 1) == 1
    assert engine.ranks_per_forward(with_budget(98304), 49152, 1) == 2
    assert engine.ranks_per_forward(with_budget(0), 16384, 1) == 1  # 0: one rank per forward
    assert engine.ranks_per_forward(with_budget(131072), 16384, 1) == 8
    assert engine.ranks_per_forward(with_budget(131072), 49152, 1) == 2  # 3 ranks would fit, but 3 does not divide 8
    assert engine.ranks_per_forward(with_budget(131072), 16384, 2) == 4  # a device's ranks only
    assert engine.ranks_per_forward(with_budget(131072), 16384, 8) == 1
    assert engine.ranks_per_forward(with_budget(1000), 16384, 1) == 1  # below one rank
    assert engine.forward_plan(with_budget(131072), 1) == [
        "phase 1: 8 rank(s) as 1 forward(s) of 131,072 tokens", "phase 2: 8 rank(s) as 2 forward(s) of 131,072 tokens",
        "phase 3: 8 rank(s) as 4 forward(s) of 98,304 tokens"]


GIB = 2**30


def test_forward_tokens_follow_the_memory_pool_table():
    cfg = load_config(CONFIG_DIR / "record60.py", ["model.forward_tokens_by_memory=((96, 131072), (64, 98304))"])
    pick = lambda pool: engine.forward_tokens_for_memory(cfg, pool)[0]  # noqa: E731
    assert cfg.model.train_forward_tokens == 65536
    assert pick(None) == 65536  # no preallocated pool: the fallback
    assert pick(63 * GIB) == 65536  # an 80 GB GPU at jax's default 75%, or a 141 GB one at 45%
    assert pick(64 * GIB) == 98304  # the bound is inclusive
    assert pick(95 * GIB) == 98304
    assert pick(105 * GIB) == 131072  # a 141 GB GPU at 75%: the largest entry that fits
    tokens, why = engine.forward_tokens_for_memory(cfg, 63 * GIB)
    assert why == "a 63.0 GiB memory pool, below model.forward_tokens_by_memory's 64 GiB"
    assert "XLA_PYTHON_CLIENT_PREALLOCATE=false" in engine.forward_tokens_for_memory(cfg, None)[1]
    # an entry not above the fallback never lowers it; an empty table is the fallback everywhere
    low = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, forward_tokens_by_memory=((8, 16384),)))
    assert engine.forward_tokens_for_memory(low, 105 * GIB)[0] == 65536
    empty = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, forward_tokens_by_memory=()))
    assert engine.forward_tokens_for_memory(empty, 105 * GIB) == (65536, "model.train_forward_tokens")

    # resolved once: the tokens that will run, the table emptied, so config.json (and a resume) keeps them
    asked = []
    resolved = engine.resolved_config(cfg, memory_pool=lambda: asked.append(1) or 70 * GIB)
    assert (resolved.model.train_forward_tokens, resolved.model.forward_tokens_by_memory) == (98304, ())
    assert engine.resolved_config(resolved, memory_pool=lambda: asked.append(1) or 105 * GIB) == resolved
    assert asked == [1]  # a resolved config does not look at the devices again
    assert config_lib.from_dict(json.loads(config_lib.to_json(resolved))) == resolved
    assert engine.forward_plan(resolved, 1)[2] == "phase 3: 8 rank(s) as 4 forward(s) of 98,304 tokens"
    # as shipped: 98,304 on a 141 GB GPU at jax's default 75% (104.9 GiB measured), 65,536 on an 80 GB one
    shipped = load_config(CONFIG_DIR / "record60.py")
    assert [engine.forward_tokens_for_memory(shipped, g * GIB)[0] for g in (105, 60)] == [98304, 65536]


class _FakeDevice:
    def __init__(self, stats):
        self.stats = stats

    def memory_stats(self):
        return self.stats


def test_device_memory_pool_needs_a_preallocated_pool_on_every_device(monkeypatch):
    big, small = _FakeDevice({"bytes_limit": 105 * GIB}), _FakeDevice({"bytes_limit": 70 * GIB})
    for name in ("XLA_PYTHON_CLIENT_PREALLOCATE", "XLA_PYTHON_CLIENT_ALLOCATOR"):
        monkeypatch.delenv(name, raising=False)
    assert engine.device_memory_pool([big, small]) == 70 * GIB  # the smallest device decides
    assert engine.device_memory_pool([big, _FakeDevice(None)]) is None  # a device without figures (the CPU's)
    assert engine.device_memory_pool([_FakeDevice({})]) is None
    for env, value, pool in (("XLA_PYTHON_CLIENT_PREALLOCATE", "false", None), ("XLA_PYTHON_CLIENT_PREALLOCATE", "0", None),
                             ("XLA_PYTHON_CLIENT_PREALLOCATE", "true", 105 * GIB),
                             ("XLA_PYTHON_CLIENT_ALLOCATOR", "platform", None), ("XLA_PYTHON_CLIENT_ALLOCATOR", "bfc", 105 * GIB)):
        monkeypatch.setenv(env, value)
        assert engine.device_memory_pool([big]) == pool, (env, value)
        monkeypatch.delenv(env)


def test_the_xla_environment_line_names_the_variables_that_are_set(monkeypatch):
    for name in ("XLA_FLAGS", "XLA_PYTHON_CLIENT_PREALLOCATE", "XLA_PYTHON_CLIENT_MEM_FRACTION",
                 "XLA_PYTHON_CLIENT_ALLOCATOR"):
        monkeypatch.delenv(name, raising=False)
    assert engine.xla_environment_line() == ("xla environment: defaults (none of XLA_FLAGS, XLA_PYTHON_CLIENT_PREALLOCATE, "
                                             "XLA_PYTHON_CLIENT_MEM_FRACTION, XLA_PYTHON_CLIENT_ALLOCATOR set)")
    monkeypatch.setenv("XLA_FLAGS", "--xla_gpu_enable_triton_gemm=false")
    monkeypatch.setenv("XLA_PYTHON_CLIENT_MEM_FRACTION", ".45")
    assert engine.xla_environment()["XLA_PYTHON_CLIENT_PREALLOCATE"] == ""
    assert engine.xla_environment_line() == ("xla environment: XLA_FLAGS=--xla_gpu_enable_triton_gemm=false | "
                                             "XLA_PYTHON_CLIENT_MEM_FRACTION=.45")


def test_forward_tokens_table_is_checked_at_load():
    for bad in ("(64, 98304)", "((64,),)", "((64.5, 98304),)", "((64, 'a'),)", "((-1, 98304),)"):
        with pytest.raises(config_lib.ConfigError, match="forward_tokens_by_memory"):
            load_config(CONFIG_DIR / "record60.py", [f"model.forward_tokens_by_memory={bad}"])


def test_merged_ranks_give_the_per_rank_loss_and_gradients():
    # 4 virtual ranks on one device, as 4 forwards (the reference's shape) and as 2 forwards of 2 ranks. The rows keep
    # their own positions, documents and MTP targets (tests/test_model.py checks that against the fp64 model, and
    # that the rows joined as one sequence differ), so the loss and gradients are the per-rank ones to rounding: a
    # weight gradient is now one product over 2 ranks' tokens, rounded to bf16 once, instead of a bf16 product per rank
    # summed in fp32 (measured: at most 0.3% of a gradient's norm, bound 2^-7). Tied: the head's dense gradient and
    # the gathered rows' both land in lm_head.
    cfg = load_config(CONFIG_DIR / "tiny.py")
    # four layers of the record's kinds (paired, long window with the key offset, no attention, backout), to keep the
    # two compilations short
    four = dataclasses.replace(cfg.model, num_layers=4, paired_layers=(0,), no_attention_layers=(2,),
                               long_window_layers=(1,), key_offset_layers=(1,), value_embed_layers=((0, 0), (3, 1)),
                               skip_from=1, skip_to=2, backout_from=3, num_scalars=16)
    cfg = dataclasses.replace(cfg, model=four, data=dataclasses.replace(cfg.data, num_ranks=4))
    t = cfg.schedule.seqs_per_rank[0] * cfg.schedule.seq_len
    params = jax.jit(lambda k: engine.init_state(cfg, k)["params"])(jax.random.key(0))
    noise = jax.random.split(jax.random.key(1), len(params))
    params = {k: (p.astype(jnp.float32) + 0.02 * jax.random.normal(n, p.shape)).astype(p.dtype)
              for (k, p), n in zip(sorted(params.items()), noise)}
    batch = {k: jnp.asarray(v) for k, v in _batch(cfg, 2).items()}
    windows = (cfg.schedule.window_block_size, 3 * cfg.schedule.window_block_size)
    dyn = jax.tree.map(jnp.asarray, engine.dyn_inputs(cfg, 0))
    mesh = sharding.make_mesh(cfg.data.num_ranks, jax.devices()[:1])

    def grad_fn(tokens_per_forward):
        c = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, train_forward_tokens=tokens_per_forward))
        return engine.make_grad_fn(c, mesh, windows, True)(jax.eval_shape(lambda p: p, params))

    def micro_batches(fn):  # the length of the one scan in the gradient function: its forwards per step
        return {int(n) for n in re.findall(r"length=(\d+)", str(jax.make_jaxpr(fn)(params, batch, dyn)))}

    ref_fn = grad_fn(0)
    assert micro_batches(ref_fn) == {4}
    ref_loss, ref = ref_fn(params, batch, dyn)
    for group in (2,):  # 2 forwards of 2 ranks: a merged forward inside the scan (the GPU test merges all 4)
        fn = grad_fn(group * t)
        assert micro_batches(fn) == {4 // group}
        loss, grads = fn(params, batch, dyn)
        assert abs(float(loss) - float(ref_loss)) < 1e-4 * abs(float(ref_loss)), group
        for name in ref:
            got, want = np.asarray(grads[name], np.float64), np.asarray(ref[name], np.float64)
            scale = np.linalg.norm(want)
            assert np.linalg.norm(got - want) <= 2.0**-7 * scale, (group, name, np.linalg.norm(got - want) / scale)


@pytest.mark.gpu
@pytest.mark.skipif(jax.default_backend() != "gpu", reason="needs an NVIDIA GPU with triton and jax-triton")
def test_merged_ranks_in_the_compiled_step_with_the_gpu_kernels():
    """The loop's gradient function with the record's triton backends (attention, ReLU² MLP, fused FP8 head loss) and
    the record's vocabulary: 4 ranks of 2,048 tokens as one forward against one forward per rank, to rounding."""
    pytest.importorskip("jax_triton")
    cfg = load_config(CONFIG_DIR / "tiny.py")
    backends = (("attention", "triton"), ("lm_head", "xla"), ("mlp", "triton"), ("cross_entropy", "triton"),
                ("head_loss", "triton"))
    # head_dim 64: the triton attention kernels take 64 or 128
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, vocab_size=50304, fp8_head=True, model_dim=128,
                                                             head_dim=64, mlp_hidden=512, backends=backends),
                              schedule=dataclasses.replace(cfg.schedule, seq_len=2048),
                              data=dataclasses.replace(cfg.data, num_ranks=4))
    t = cfg.schedule.seqs_per_rank[0] * cfg.schedule.seq_len
    params = jax.jit(lambda k: engine.init_state(cfg, k)["params"])(jax.random.key(0))
    noise = jax.random.split(jax.random.key(1), len(params))
    params = {k: (p.astype(jnp.float32) + 0.02 * jax.random.normal(n, p.shape)).astype(p.dtype)
              for (k, p), n in zip(sorted(params.items()), noise)}
    rng = np.random.default_rng(3)
    tokens = rng.integers(0, 50257, (4, t + 1)).astype(np.int32)
    seg = np.sort(rng.integers(0, 6, (4, t)), axis=1).astype(np.int32)
    batch = {"inputs": jnp.asarray(tokens[:, :-1]), "targets": jnp.asarray(tokens[:, 1:]), "seg_ids": jnp.asarray(seg)}
    windows = (128, 384)
    dyn = jax.tree.map(jnp.asarray, engine.dyn_inputs(cfg, 0))
    mesh = sharding.make_mesh(cfg.data.num_ranks, jax.devices()[:1])
    results = {}
    for tokens_per_forward in (0, 4 * t):
        c = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, train_forward_tokens=tokens_per_forward))
        fn = engine.make_grad_fn(c, mesh, windows, True)(jax.eval_shape(lambda p: p, params))
        results[tokens_per_forward] = jax.device_get(fn(params, batch, dyn))
    (ref_loss, ref), (loss, grads) = results[0], results[4 * t]
    # The loss is the sharp check (measured on an H200: 1.6e-6 apart; the rows joined as one sequence move it by ~1e-2).
    # The gradients move by more than on the CPU, because here the forward's GEMMs also round differently at 4x the
    # rows (cuBLAS picks other algorithms): measured 0.8-1.5% of a matrix's or table's norm, and up to 5.2% for the
    # small vectors whose gradients are cancelling sums over every token (scalars, x0_lambdas, the gates); one rank per
    # forward run twice gives the same bits.
    assert abs(float(loss) - float(ref_loss)) < 1e-4 * abs(float(ref_loss))
    for name in ref:
        want = np.asarray(ref[name], np.float64)
        rel = np.linalg.norm(np.asarray(grads[name], np.float64) - want) / max(np.linalg.norm(want), 1e-30)
        assert rel <= (2.0**-5 if want.size > 1000 else 2.0**-3), (name, rel)


def test_each_variant_compiles_under_the_lowering_of_the_next():
    """compile_step_functions hands a variant to XLA as soon as it is lowered, gradient variants first, so compiles
    (threads, no GIL) run while Python traces the rest: on the H200 that took record60's cold compile from 88.9 s to
    58.4 s (docs/results/2026-12-02-h200-compile). A lowering cache that records the order, and lowerings whose
    compile marks when it began, show both."""
    import threading

    cfg = load_config(CONFIG_DIR / "tiny.py")
    session = engine.setup(cfg, devices=1, announce=lambda *_: None)
    first_compile = threading.Event()
    names, waited = [], []

    class Lowered:
        def __init__(self, name):
            self.name = name

        def compile(self):
            first_compile.set()
            return self.name

    class RecordingCache:
        def lower(self, name, fn, args, donated):
            if len(names) == 1:  # the second lowering: has the first one's compile begun under it?
                waited.append(first_compile.wait(timeout=10))
            names.append(name)
            return Lowered(name), "recorded"

    try:
        fns = engine.compile_step_functions(session, cache=RecordingCache())
    finally:
        session.close()
    assert waited == [True]
    kinds = [name.split("'")[1] for name in names]  # names are repr(("grad", key)) etc.
    assert kinds == sorted(kinds, key=["grad", "update", "eval", "untie"].index) and kinds[0] == "grad"
    assert set(fns.grad.values()) | set(fns.update.values()) | set(fns.eval.values()) | {fns.untie} == set(names)
    assert fns.lowering == dict.fromkeys(fns.lowering, "recorded") and len(fns.lowering) == len(names)


def test_the_compile_timeline_names_what_a_start_waits_for():
    """StepFunctions.timeline: per variant, when its lowering and its compile ended (seconds from the start), in the
    lowering order; slowest() names the variant whose compile ended last. Here the first gradient variant's compile
    is made the slow one."""
    import time as _time

    cfg = load_config(CONFIG_DIR / "tiny.py")
    session = engine.setup(cfg, devices=1, announce=lambda *_: None)

    class Lowered:
        def __init__(self, name, delay):
            self.name, self.delay = name, delay

        def compile(self):
            _time.sleep(self.delay)
            return self.name

    class SlowFirstCache:
        count = 0

        def lower(self, name, fn, args, donated):
            SlowFirstCache.count += 1
            return Lowered(name, 0.5 if SlowFirstCache.count == 1 else 0.0), "recorded"

    try:
        fns = engine.compile_step_functions(session, cache=SlowFirstCache())
    finally:
        session.close()
    order = list(fns.timeline)
    assert len(order) == len(fns.lowering) and set(order) == set(fns.lowering)
    lowered = [fns.timeline[k][0] for k in order]
    assert lowered == sorted(lowered) and all(0 <= lo <= done for lo, done in fns.timeline.values())
    assert fns.timeline[order[0]][1] >= 0.5 and fns.timeline[order[0]][1] == max(v[1] for v in fns.timeline.values())
    assert fns.slowest().startswith(f"{order[0][0]} {order[0][1]}: lowered by ")


def test_lowering_several_variants_at_once_lowers_the_same_programs():
    """compile_step_functions(lowering_threads=3) lowers every variant to the module text that one after another
    gives (threads change when a variant is traced, never what it is)."""

    class TextCache:
        def __init__(self):
            self.texts = {}

        def lower(self, name, fn, args, donated):
            low = fn.lower(*args)
            self.texts[name] = low.as_text()
            return low, "recorded"

    cfg = load_config(CONFIG_DIR / "tiny.py")
    session = engine.setup(cfg, devices=1, announce=lambda *_: None)
    try:
        one, three = TextCache(), TextCache()
        # a few steps and one validation: a gradient, both updates and an evaluation variant, four programs
        fns1 = engine.compile_step_functions(session, steps=range(2), evals=[0], cache=one)
        fns3 = engine.compile_step_functions(session, steps=range(2), evals=[0], cache=three, lowering_threads=3)
    finally:
        session.close()
    assert len(one.texts) >= 3 and one.texts == three.texts
    assert list(fns3.timeline) == list(fns1.timeline) and set(fns3.lowering) == set(fns1.lowering)
    assert fns3.counts() == fns1.counts()
