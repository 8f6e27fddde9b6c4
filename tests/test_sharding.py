"""Sharding rules, ZeRO state layout, the compiled step's collectives, and multi-process runs (jaxrun/sharding.py).

The test session has 8 fake CPU devices (tests/conftest.py).
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from jaxrun import engine, schedule, sharding
from jaxrun.config import SAMPLE_CORPUS, load_config

ROOT = Path(__file__).resolve().parent.parent


def test_zero_axis_rules():
    assert sharding.shard_axis((10, 3072, 768), 8) == 1  # 10 banks do not split over 8 devices; rows do
    assert sharding.shard_axis((50304, 768), 8) == 0
    assert sharding.shard_axis((3, 50304, 768), 8) == 1
    assert sharding.shard_axis((10, 6, 12), 8) is None  # 720 elements: all-reduced and kept whole (recipe §3.5)
    assert sharding.shard_axis((40,), 8) is None
    assert sharding.shard_axis((50304, 768), 1) is None
    assert sharding.zero_spec((11, 3072, 768), 4) == P(None, "data")


def test_zero_specs_follow_the_parameter_table(monkeypatch):
    """State leaves are sharded along their parameter's zero_axes (jaxrun.params), found by the dict key on their path."""
    import dataclasses

    from jaxrun import optim, params

    bank, head = jax.ShapeDtypeStruct((10, 3072, 768), jnp.float32), jax.ShapeDtypeStruct((50304, 768), jnp.float32)
    rows = jax.ShapeDtypeStruct((10, 3072, 1), jnp.float32)
    count = jax.ShapeDtypeStruct((), jnp.int32)
    state = {"master": {"qkvo": bank}, "muon": optim.NorMuonState({"qkvo": bank}, {"qkvo": rows}),
             "adam": optim.CautiousAdamState({"lm_head": count}, {"lm_head": head}, {"lm_head": head})}
    rows_split = P(None, "data")  # 10 banks do not split over 8 devices; 3072 rows do
    want = {"master": {"qkvo": rows_split}, "muon": optim.NorMuonState({"qkvo": rows_split}, {"qkvo": rows_split}),
            "adam": optim.CautiousAdamState({"lm_head": P()}, {"lm_head": P("data")}, {"lm_head": P("data")})}
    assert sharding.zero_specs(state, 8) == want
    assert sharding.zero_specs(state, 2)["master"]["qkvo"] == P("data")  # 10 banks split over 2 devices
    columns_only = dataclasses.replace(params.TABLE["lm_head"], zero_axes=(1,))
    monkeypatch.setattr(sharding, "TABLE", {**params.TABLE, "lm_head": columns_only})
    assert sharding.zero_specs({"lm_head": head}, 8) == {"lm_head": P(None, "data")}
    assert sharding.zero_specs({"not_a_param": head}, 8) == {"not_a_param": P("data")}  # every axis, first one first


def test_local_ranks_and_mesh_errors():
    assert sharding.local_ranks(sharding.make_mesh(8), 8) == list(range(8))
    assert sharding.local_ranks(sharding.make_mesh(8, jax.devices()[:2]), 8) == list(range(8))
    with pytest.raises(ValueError, match="3 devices cannot share the recipe's 8 virtual ranks"):
        sharding.make_mesh(8, jax.devices()[:3])


def _small_record_config():
    """The record's layer map and parameter banks at a small width (fast to compile on CPU)."""
    return load_config(ROOT / "configs" / "record60.py", [
        "model.model_dim=64", "model.head_dim=32", "model.num_heads=2", "model.mlp_hidden=256", "model.fp8_head=false",
        "model.eval_token_chunk=256", "schedule.seq_len=64", "schedule.seqs_per_rank=(1, 1, 1)",
        "schedule.window_block_size=16",
    ])


def test_optimizer_state_is_really_sharded():
    cfg = _small_record_config()
    mesh = sharding.make_mesh(8)
    shapes = jax.eval_shape(lambda k: engine.init_state(cfg, k), jax.random.PRNGKey(0))
    shardings = engine.state_shardings(shapes, mesh)
    state = jax.jit(lambda k: engine.init_state(cfg, k), out_shardings=shardings)(jax.random.PRNGKey(0))
    for name, p in state["params"].items():
        assert p.sharding.is_fully_replicated, name
    total = per_device = 0
    for part in ("master", "muon", "adam", "adam_acc"):
        for leaf in jax.tree.leaves(state[part]):
            total += leaf.nbytes
            per_device += leaf.addressable_shards[0].data.nbytes
    # everything big is split 8 ways; only gates, lambdas and Adam counters stay whole
    assert per_device / total == pytest.approx(1 / 8, rel=0.01)
    assert state["master"]["qkvo"].sharding.spec == P(None, "data")
    assert state["adam"].m["lm_head"].sharding.spec == P("data")


def _compiled_step(cfg, mesh):
    """The HLO of step 1's gradient function and of the Adam update, lowered as the training run lowers them."""
    shapes = jax.eval_shape(lambda k: engine.init_state(cfg, k), jax.random.PRNGKey(0))
    shardings = engine.state_shardings(shapes, mesh)
    shape = schedule.step_shape(1, cfg.schedule)
    return (engine.lower_grad_fn(cfg, mesh, shapes, shape).compile().as_text(),
            engine.lower_update_fn(cfg, mesh, shapes, shardings, adam=True).compile().as_text())


def test_collectives_of_the_compiled_step():
    cfg = _small_record_config()
    grad_hlo, update_hlo = _compiled_step(cfg, sharding.make_mesh(8))
    grad_kinds = {c["kind"] for c in sharding.collectives(grad_hlo)}
    update_kinds = {c["kind"] for c in sharding.collectives(update_hlo)}
    # gradients: reduce-scattered into the ZeRO layout; the loss and the small tensors all-reduced; nothing gathered
    assert grad_kinds == {"reduce-scatter", "all-reduce"}, grad_kinds
    # update: the new weights of the ZeRO shards are all-gathered (the embedding tables among them; XLA:CPU widens
    # bf16 collectives to f32, so their dtype is not checked here)
    assert "all-gather" in update_kinds, update_kinds
    gathered = [c for c in sharding.collectives(update_hlo) if c["kind"] == "all-gather"]
    assert any(s.endswith("[50304,64]") for c in gathered for s in c["shapes"]), gathered
    rs_bytes = sum(c["bytes"] for c in sharding.collectives(grad_hlo) if c["kind"] == "reduce-scatter")
    assert rs_bytes > 0
    # the orthogonalisation is split over devices: the attention stack is 10 layers x 4 blocks = 40 matrices of
    # 64x64, 5 per device, so the per-device Gram products have a batch of 5
    assert "bf16[5,64,64]" in update_hlo or "f32[5,64,64]" in update_hlo


def test_one_device_step_has_no_collectives():
    cfg = _small_record_config()
    grad_hlo, update_hlo = _compiled_step(cfg, sharding.make_mesh(8, jax.devices()[:1]))
    assert sharding.collectives(grad_hlo) == [] and sharding.collectives(update_hlo) == []


def test_collectives_parser_on_hlo_lines():
    text = "\n".join([
        "  %rs = f32[8,64]{1,0} reduce-scatter(f32[64,64]{1,0} %x), channel_id=1, dimensions={0}",
        "  %ag = bf16[11,256,64]{2,1,0} all-gather(bf16[2,256,64]{2,1,0} %y), channel_id=2",
        "  %ar = f32[] all-reduce(f32[] %z), channel_id=3, to_apply=%add",
        "  %add.1 = f32[] add(f32[] %a, f32[] %b)",
    ])
    got = sharding.collectives(text)
    assert [(c["kind"], c["bytes"]) for c in got] == [("reduce-scatter", 8 * 64 * 4), ("all-gather", 11 * 256 * 64 * 2),
                                                      ("all-reduce", 4)]
    tup = "  %all-reduce.21 = (f32[], f32[10,2,12]{2,1,0}, /*index=5*/bf16[40]{0}) all-reduce(%a, %b, %c), channel_id=4"
    assert sharding.collectives(tup) == [{"kind": "all-reduce", "shapes": ["f32[]", "f32[10,2,12]", "bf16[40]"],
                                          "bytes": 4 + 240 * 4 + 80}]


@pytest.mark.slow
def test_two_processes_match_one(tmp_path):
    """2 processes x 4 CPU devices through jax.distributed (gloo) give the losses of 1 process x 8 devices."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    shards = tmp_path / "shards"
    common = [
        "--set", "schedule.scheduled_steps=3", "--set", "schedule.extension_steps=1", "--set", "schedule.seqs_per_rank=(1, 1, 1)",
        "--set", "schedule.window_blocks=((1, 2), (1, 2), (1, 2), (1, 2))", "--set", "schedule.momentum_warmup_steps=1",
        "--set", "schedule.momentum_cooldown_start=3", "--set", "schedule.momentum_cooldown_steps=1", "--set", "run.val_every=4",
        "--set", f"data.train_files={shards}/fineweb_train_*.bin", "--set", f"data.val_file={shards}/fineweb_val_000000.bin",
        "--set", f"data.tokenize_from={SAMPLE_CORPUS}", "--set", f"run.out_dir={tmp_path / 'runs'}",
        "--set", f"run.compile_cache_dir={tmp_path / 'cache'}", "--set", f"run.lowering_cache_dir={tmp_path / 'lowered'}",
    ]
    from jaxrun import data as data_lib

    data_lib.ensure_shards(load_config(None, [common[i + 1] for i in range(0, len(common), 2)]).data, announce=lambda _: None)

    def env(devices, **extra):
        e = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}", JAX_PLATFORMS="cpu", **extra)
        return e

    single = subprocess.run([sys.executable, "-m", "jaxrun.train", "--name", "one", *common], cwd=ROOT, env=env(8),
                            capture_output=True, text=True, timeout=900)
    assert single.returncode == 0, single.stderr[-3000:]
    procs = [subprocess.Popen([sys.executable, "-m", "jaxrun.train", "--name", "two", *common], cwd=ROOT,
                              env=env(4, JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}", JAX_NUM_PROCESSES="2",
                                      JAX_PROCESS_ID=str(i)),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
    outs = [p.communicate(timeout=900) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-3000:] for o in outs]

    def losses(name):
        lines = (tmp_path / "runs" / name / "metrics.jsonl").read_text().splitlines()
        return {r["step"]: r["train_loss"] for r in map(json.loads, lines) if "train_loss" in r}

    one, two = losses("one"), losses("two")
    assert sorted(one) == sorted(two) == [0, 1, 2, 3]
    np.testing.assert_allclose([two[s] for s in range(4)], [one[s] for s in range(4)], rtol=1e-5)
    assert "2 process(es)" in (tmp_path / "runs" / "two" / "log.txt").read_text()
