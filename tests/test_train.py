"""The training loop (jaxrun/train.py): resume equality, SIGTERM, NaN, device counts, log format, errors.

Runs use a micro version of the tiny config (8 steps, one batch size and window throughout, so only a few variants
compile) and share one persistent compilation cache, so later runs of the same shapes skip compilation.
"""

import json
import math
import os
import signal

import pytest

from jaxrun import data as data_lib
from jaxrun import engine, model, train
from jaxrun.config import SAMPLE_CORPUS, load_config, to_json
from jaxrun.logs import parse_log_text

MICRO = [
    "schedule.scheduled_steps=6",
    "schedule.extension_steps=2",
    "schedule.seqs_per_rank=(1, 1, 1)",
    "schedule.window_blocks=((1, 2), (1, 2), (1, 2), (1, 2))",
    "schedule.momentum_warmup_steps=2",
    "schedule.momentum_cooldown_start=6",
    "schedule.momentum_cooldown_steps=2",
    "run.val_every=4",
    "run.log_every=1",
]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """Shards tokenized once (from the shipped sample) and a shared compilation cache."""
    root = tmp_path_factory.mktemp("train")
    cache = root / "jax_cache"
    overrides = MICRO + [
        f"run.compile_cache_dir={cache}",
        f"run.lowering_cache_dir={root / 'lowered'}",
        f"run.out_dir={root / 'runs'}",
        f"data.train_files={root / 'shards' / 'fineweb_train_*.bin'}",
        f"data.val_file={root / 'shards' / 'fineweb_val_000000.bin'}",
        f"data.tokenize_from={SAMPLE_CORPUS}",
    ]
    data_lib.ensure_shards(load_config(None, overrides).data, announce=lambda _: None)
    return root, overrides


def _run(workdir, name, *, extra=(), resume=False, **opts):
    root, overrides = workdir
    cfg = load_config(None, overrides + list(extra))
    run_dir = root / "runs" / name
    return train.train(cfg, train.RunOptions(run_dir=run_dir, resume=resume, devices=opts.pop("devices", 1), **opts)), run_dir


def _argv(workdir, *extra):
    return [arg for item in workdir[1] for arg in ("--set", item)] + list(extra)


def _train_losses(run_dir):
    out = {}
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        if "train_loss" in record:
            out[record["step"]] = record["train_loss"]
    return out


def _val_lines(run_dir):
    return [line for line in (run_dir / "log.txt").read_text().splitlines() if "val_loss" in line]


def test_resume_continues_bitwise(workdir):
    straight, straight_dir = _run(workdir, "straight")
    assert straight.stopped_at == 8
    first, part_dir = _run(workdir, "parts", stop_at=3)
    assert first.stopped_at == 3
    second, _ = _run(workdir, "parts", resume=True)
    assert second.stopped_at == 8
    a, b = _train_losses(straight_dir), _train_losses(part_dir)
    assert sorted(a) == sorted(b) == list(range(8))
    assert all(a[s] == b[s] for s in a), (a, b)  # bitwise on CPU
    # every validation line's loss equals the uninterrupted run's (times differ)
    va = {line.split()[0]: line.split()[1] for line in _val_lines(straight_dir)}
    vb = {line.split()[0]: line.split()[1] for line in _val_lines(part_dir)}
    assert va == vb and len(va) == 3
    assert straight.val_losses[0] > straight.val_losses[8]


def test_sigterm_saves_a_checkpoint_that_resumes(workdir, monkeypatch):
    original = data_lib.TrainLoader.next_batch
    calls = {"n": 0}

    def next_batch(self, tokens_per_rank):
        calls["n"] += 1
        if calls["n"] == 2:
            os.kill(os.getpid(), signal.SIGTERM)
        return original(self, tokens_per_rank)

    monkeypatch.setattr(data_lib.TrainLoader, "next_batch", next_batch)
    # through the command line: a signal stop exits with the requeue code (a planned --stop-at exits 0, tested below)
    assert train.main(_argv(workdir, "--name", "sigterm")) == train.EXIT_SIGNAL == 75
    run_dir = workdir[0] / "runs" / "sigterm"
    assert "received SIGTERM: checkpoint saved at step 2" in (run_dir / "log.txt").read_text()
    monkeypatch.setattr(data_lib.TrainLoader, "next_batch", original)
    resumed, _ = _run(workdir, "sigterm", resume=True)
    assert resumed.stopped_at == 8
    assert sorted(_train_losses(run_dir)) == list(range(8))


def test_running_out_of_data_saves_the_steps_done(workdir, monkeypatch):
    original = data_lib.TrainLoader.next_batch
    calls = {"n": 0}

    def next_batch(self, tokens_per_rank):
        calls["n"] += 1
        if calls["n"] >= 4:  # the 4th batch (step 3) does not exist
            raise data_lib.DataError("out of training data: test")
        return original(self, tokens_per_rank)

    monkeypatch.setattr(data_lib.TrainLoader, "next_batch", next_batch)
    with pytest.raises(data_lib.DataError, match=r"out of training data: test\. The 3 steps done are saved .*--resume"):
        _run(workdir, "nodata")
    monkeypatch.setattr(data_lib.TrainLoader, "next_batch", original)
    resumed, run_dir = _run(workdir, "nodata", resume=True)  # "more data": the real loader again
    assert resumed.stopped_at == 8
    assert sorted(_train_losses(run_dir)) == list(range(8))


def test_nan_stops_and_keeps_the_last_good_checkpoint(workdir, monkeypatch):
    import jax.numpy as jnp

    original = model.train_loss

    def poisoned(params, batch, dyn, **kw):
        loss = original(params, batch, dyn, **kw)
        return jnp.where(dyn["step"] == 5, jnp.nan, loss)

    monkeypatch.setattr(model, "train_loss", poisoned)
    with pytest.raises(train.TrainingDiverged, match=r"training loss is nan at step 5.*last good checkpoint: step 4"):
        # no lowering cache: it would serve the lowering traced before the patch (a patch in the process is not part of
        # its key; README, "lowering cache")
        _run(workdir, "nan", extra=["run.checkpoint_every=2", "run.lowering_cache_dir="])
    from jaxrun.checkpoint import Checkpointer

    ckpt = Checkpointer(workdir[0] / "runs" / "nan" / "checkpoints")
    assert ckpt.latest_step() == 4
    ckpt.close()


def test_eight_devices_match_one(workdir):
    one, one_dir = _run(workdir, "dev1", extra=["schedule.scheduled_steps=3", "schedule.extension_steps=1",
                                                "schedule.momentum_cooldown_start=3", "schedule.momentum_cooldown_steps=1"])
    eight, eight_dir = _run(workdir, "dev8", devices=8, extra=["schedule.scheduled_steps=3", "schedule.extension_steps=1",
                                                               "schedule.momentum_cooldown_start=3", "schedule.momentum_cooldown_steps=1"])
    a, b = _train_losses(one_dir), _train_losses(eight_dir)
    assert sorted(a) == sorted(b) == [0, 1, 2, 3]
    for s in a:
        # same math; only the order of the fp32 gradient sums differs (scan on one device, reduce-scatter on eight)
        assert math.isclose(a[s], b[s], rel_tol=2e-3), (s, a[s], b[s])
    assert a[0] == pytest.approx(b[0], rel=1e-6)  # before any update the losses agree to fp32 summation order


def test_log_lines_parse_as_speedrun_logs(workdir):
    run_dir = workdir[0] / "runs" / "straight"
    if not run_dir.exists():
        _run(workdir, "straight")
    text = (run_dir / "log.txt").read_text()
    parsed = parse_log_text(text, name="straight", source=str(run_dir))
    # the log begins with what produced it, and config.json holds the backends that ran
    head = text.splitlines()[:4]
    assert head[0].startswith("jaxrun ") and " commit " in head[0] and f"jax {__import__('jax').__version__}" in head[0]
    assert head[1].startswith("config tiny sha256:") and head[2].startswith("backends: attention=xla, lm_head=xla")
    assert head[3].startswith("devices: 1 x ")
    assert text.splitlines()[5].startswith("xla environment: ")  # conftest sets XLA_FLAGS: the line names it
    assert "XLA_FLAGS=" in text.splitlines()[5]
    assert "tokens per forward: one rank's, from model.train_forward_tokens" in text.splitlines()[6]  # tiny: 0, no table
    assert json.loads((run_dir / "config.json").read_text())["model"]["backends"] == [
        ["attention", "xla"], ["lm_head", "xla"], ["mlp", "xla"], ["cross_entropy", "xla"], ["head_loss", "xla"]]
    assert list(parsed.val_steps) == [0, 4, 8]
    assert parsed.finished and parsed.total_steps == 8
    assert list(parsed.step_steps) == list(range(1, 9))
    assert all(v > 0 for v in parsed.val_losses)
    first = [line for line in text.splitlines() if line.startswith("first timed step (synchronised): ")]
    assert len(first) == 1 and float(first[0].split(": ")[1].removesuffix("ms")) > 0


def test_errors_are_reported_with_advice(tmp_path, capsys, monkeypatch):
    assert train.main(["--set", "model.num_layer=3"]) == 2
    assert "model.num_layers" in capsys.readouterr().err
    monkeypatch.chdir(tmp_path)
    rc = train.main(["--config", str(train.__file__).replace("jaxrun/train.py", "configs/record60.py"), "--name", "x"])
    assert rc == 1
    err = capsys.readouterr().err
    assert "python -m jaxrun.data fineweb" in err or "tokenize" in err


def test_out_of_memory_message():
    cfg = load_config(None)
    msg = engine.oom_message("compiling", cfg, 1)
    assert "fewer tokens per device" in msg and "seqs_per_rank" in msg
    assert engine.is_oom(RuntimeError("RESOURCE_EXHAUSTED: Out of memory while trying to allocate"))
    assert not engine.is_oom(RuntimeError("shape mismatch"))
    with pytest.raises(engine.OutOfMemory, match="while compiling"):
        with engine.explained_oom("compiling", cfg, 1):
            raise RuntimeError("RESOURCE_EXHAUSTED: Out of memory while trying to allocate")
    # a large single allocation (a step's scratch, as on the H200 at 98,304 tokens per forward) says so, with its size
    xla = "RESOURCE_EXHAUSTED: Out of memory while trying to allocate 50377103616 bytes."
    with pytest.raises(engine.OutOfMemory, match=r"46\.9 GiB in one piece.*XLA_PYTHON_CLIENT_PREALLOCATE=false"):
        with engine.explained_oom("training", cfg, 1):
            raise RuntimeError(xla)
    assert "one piece" not in engine.oom_message("training", cfg, 1, "trying to allocate 1048576 bytes")
    assert "one piece" not in msg
    with pytest.raises(ValueError, match="shape mismatch"):  # anything else passes through unchanged
        with engine.explained_oom("compiling", cfg, 1):
            raise ValueError("shape mismatch")


def test_warm_up_runs_every_step_variant_once_and_keeps_the_state():
    """recipe §6: each variant runs once before the clock starts; the update and untie functions donate their state, so
    the warm-up must hand them a copy and leave the run's own state untouched."""
    import jax
    import jax.numpy as jnp

    from jaxrun import schedule, sharding

    cfg = load_config(None)
    mesh = sharding.make_mesh(cfg.data.num_ranks, jax.devices()[:1])
    state = {"params": {"w": jnp.arange(4.0)}, "opt": {"m": jnp.zeros(4)}}
    calls = []

    def grad_fn(key):
        def run(params, batch, dyn):
            assert params is state["params"]
            assert batch["inputs"].shape == (cfg.data.num_ranks, key[0]) and not batch["inputs"].any()
            calls.append(("grad", key))
            return jnp.float32(0), jax.tree.map(jnp.ones_like, params)
        return run

    def donating(name):
        def run(s, *rest):
            assert s is not state
            calls.append((name,))
            jax.tree.map(lambda x: x.delete(), s)  # what donation does to the caller's buffers
            return jax.tree.map(lambda x: x + 1, state)
        return run

    keys = list(dict.fromkeys(engine.grad_key(s) for s in schedule.all_step_shapes(cfg.schedule)))
    fns = engine.StepFunctions(grad={k: grad_fn(k) for k in keys}, update={False: donating("update"), True: donating("update")},
                               eval={}, untie=donating("untie"), seconds=0.0)
    session = engine.Session(cfg=cfg, kernels=None, mesh=mesh, ranks=list(range(cfg.data.num_ranks)), loader=None, val_batches=[],
                             shapes={}, shardings={})  # what warm_up reads: the config, the mesh and the local ranks
    engine.warm_up(session, fns, state)
    assert calls == [("grad", k) for k in keys] + [("update",), ("update",), ("untie",)]
    assert len(keys) == 5  # three batch sizes, window changes, the untie step: the tiny config has five
    assert state["params"]["w"].tolist() == [0.0, 1.0, 2.0, 3.0]  # still alive and unchanged


def test_finishing_is_idempotent_and_a_finished_run_resumes_to_nothing(workdir, capsys):
    """checkpoint_every dividing the step count saves the last step twice: the second save is a no-op, exit 0 with
    the done line; resuming the finished run says so, exits 0 and appends nothing."""
    run_dir = workdir[0] / "runs" / "idem"
    assert train.main(_argv(workdir, "--set", "run.checkpoint_every=4", "--name", "idem")) == train.EXIT_OK
    assert "done: " in capsys.readouterr().out
    lines = (run_dir / "log.txt").read_text().splitlines()
    assert train.main(["--resume", str(run_dir)]) == train.EXIT_OK
    out = capsys.readouterr().out
    assert "already finished all 8 steps (final validation loss" in out and "nothing to do" in out
    after = (run_dir / "log.txt").read_text().splitlines()
    assert [x for x in after if "val_loss" in x] == [x for x in lines if "val_loss" in x]


def test_a_folder_that_saved_nothing_is_reused_and_a_live_one_refused(workdir, capsys):
    from jaxrun.rundir import RunDirLock

    run_dir = workdir[0] / "runs" / "reuse"
    (run_dir / "checkpoints").mkdir(parents=True)  # what a crash before the first save leaves
    (run_dir / "log.txt").write_text("from the crashed start\n")
    (run_dir / "config.json").write_text(to_json(load_config(None, workdir[1])))
    with pytest.raises(SystemExit) as exit_:
        train.main(_argv(workdir, "--name", "reuse", "--stop-at", "-1"))
    assert exit_.value.code == train.EXIT_USAGE
    assert train.main(["--resume", str(run_dir)]) == train.EXIT_USAGE
    assert "holds no checkpoint" in capsys.readouterr().err
    assert train.main(_argv(workdir, "--name", "reuse", "--stop-at", "1")) == train.EXIT_OK
    log = (run_dir / "log.txt").read_text()
    assert log.startswith("reusing ") and "from the crashed start" not in log
    owner = RunDirLock(run_dir)
    owner.acquire()
    try:
        assert train.main(_argv(workdir, "--name", "reuse")) == train.EXIT_USAGE
        assert f"is in use by process {os.getpid()}" in capsys.readouterr().err
    finally:
        owner.release()
    assert train.main(_argv(workdir, "--name", "reuse")) == train.EXIT_USAGE  # it holds a checkpoint now
    assert "already holds a run (checkpoints of steps 1)" in capsys.readouterr().err


def test_sigterm_during_compilation_exits_at_once_and_leaves_the_name_free(workdir, tmp_path):
    import subprocess
    import sys
    import time

    from jaxrun.rundir import check_new_run, saved_steps

    cache = tmp_path / "cold_cache"  # a cold cache, so that the compile lasts long enough to be interrupted
    argv = [a.replace(str(workdir[0] / "jax_cache"), str(cache)) for a in _argv(workdir, "--name", "early")]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "JAX_PLATFORMS": "cpu"}
    proc = subprocess.Popen([sys.executable, "-m", "jaxrun.train", *argv], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env)
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if line.startswith("Compiling model"):
            break
    sent = time.perf_counter()
    proc.send_signal(signal.SIGTERM)
    rest = proc.communicate(timeout=60)[0]
    assert proc.returncode == train.EXIT_SIGNAL, "".join(lines) + rest
    assert time.perf_counter() - sent < 15
    assert "received SIGTERM during start-up, before the first step: nothing to save" in rest
    run_dir = workdir[0] / "runs" / "early"
    assert saved_steps(run_dir) == [] and check_new_run(run_dir) is True


def test_auto_backends_are_resolved_once_and_bad_names_refused(capsys):
    record = load_config(train.__file__.replace("jaxrun/train.py", "configs/record60.py"))
    assert dict(record.model.backends) == dict.fromkeys(("attention", "lm_head", "mlp", "cross_entropy", "head_loss"), "auto")
    resolved = engine.resolved_config(record)
    assert all(b != "auto" for _, b in resolved.model.backends)  # on a CPU: xla for every op
    bad = "model.backends=(('attention','trition'),('lm_head','xla'),('mlp','xla'),('cross_entropy','xla'),('head_loss','xla'))"
    assert train.main(["--set", bad]) == train.EXIT_USAGE
    assert "unknown backend 'trition' for 'attention'; known: cudnn, triton, xla or 'auto'" in capsys.readouterr().err
