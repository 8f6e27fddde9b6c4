"""``python -m jaxrun.train``: build the model and optimizers, compile every step variant, train, evaluate, log, checkpoint.

The loop follows recipe §4.1. Static shapes change only at phase boundaries (batch size, windows, the embedding tie, Adam
or not), so there is one compiled gradient function per (batch size, windows, tied) and one optimizer function per
(Adam or not); all are compiled before the clock starts (the reference's untimed warm-up, recipe §6). Learning rate,
momentum, MTP weights and the YaRN tables are traced values: no recompilation.

The step is split in two jitted functions: ``grads`` (shard_map over the ``data`` axis: each device scans over its
8/D micro-batches, then the summed gradients are reduce-scattered into the ZeRO layout, recipe §3.5–3.6) and ``update``
(NorMuon on every step; on odd steps also Adam with the two-step gradient sum, recipe §3.4).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import signal
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import PartitionSpec as P

from jaxrun import data as data_lib
from jaxrun import evaluate, model, ops, optim, schedule, sharding
from jaxrun.checkpoint import CheckpointError, Checkpointer, abstract_like
from jaxrun.config import Config, ConfigError, from_dict, load_config, to_json, valid_keys
from jaxrun.rundir import RunDirError, RunDirLock, check_new_run, check_resumable
from jaxrun.runlog import RunLog

# Exit codes of `python -m jaxrun.train` (README, "Failures and recovery").
EXIT_OK = 0  # finished, already finished, or stopped by --stop-at / --time-limit with a checkpoint saved
EXIT_ERROR = 1  # training failed: divergence, out of memory, out of data, a damaged checkpoint with none intact
EXIT_USAGE = 2  # refused before anything started: bad config or arguments, run folder in use or holding a run
EXIT_SIGNAL = 75  # stopped by SIGTERM/SIGINT (checkpoint saved if training had started): resume it (EX_TEMPFAIL)


class TrainingDiverged(RuntimeError):
    """The training loss became NaN or Inf; the last good checkpoint is left as it was."""


class OutOfMemory(RuntimeError):
    pass


_OOM_MARKERS = ("RESOURCE_EXHAUSTED", "out of memory", "Out of memory", "OOM")


def oom_message(what: str, cfg: Config, num_devices: int) -> str:
    tokens = max(cfg.schedule.seqs_per_rank) * cfg.schedule.seq_len * cfg.data.num_ranks // num_devices
    return (
        f"out of device memory while {what}. Each of the {num_devices} device(s) processes up to {tokens:,} tokens per "
        f"step ({cfg.data.num_ranks // num_devices} micro-batch(es) of {max(cfg.schedule.seqs_per_rank) * cfg.schedule.seq_len:,}). "
        f"Use more devices (the mesh spans all visible GPUs), or fewer tokens per device, e.g. "
        f"--set schedule.seqs_per_rank=(4,8,12), or a smaller evaluation chunk (--set model.eval_token_chunk=8192)."
    )


def is_oom(err: BaseException) -> bool:
    return any(m in str(err) for m in _OOM_MARKERS)


# ----------------------------------------------------------------------------------------------------------------------
# State and step functions
# ----------------------------------------------------------------------------------------------------------------------


def init_state(cfg: Config, key) -> dict:
    """params (bf16/fp32 as the model stores them), fp32 Muon masters, optimizer states, Adam's 2-step accumulator."""
    params = model.init_params(cfg.model, key)
    muon_params, adam_params = optim.split_params(params)
    master = optim.init_masters(muon_params)
    return {
        "params": params,
        "master": master,
        "muon": optim.normuon(cfg.optim, cfg.schedule).init(master),
        "adam": optim.cautious_adam(cfg.optim, cfg.schedule).init(adam_params),
        "adam_acc": jax.tree.map(lambda p: jnp.zeros(p.shape, jnp.float32), adam_params),
    }


def state_shardings(state_shapes, mesh):
    """params replicated; everything optimizer-side ZeRO-sharded (jaxrun.sharding)."""
    out = {k: sharding.zero_shardings(v, mesh) for k, v in state_shapes.items() if k != "params"}
    out["params"] = jax.tree.map(lambda _: sharding.replicated(mesh), state_shapes["params"])
    return out


def make_grad_fn(cfg: Config, mesh, windows: tuple[int, int], tied: bool):
    """fn(params, batch, dyn) -> (sum of the training loss over all ranks, gradients in the ZeRO layout).

    Gradients are the rank average of the per-rank gradients of the SUMMED loss (recipe §2.1, §3.6): each device sums its
    micro-batches' gradients (fp32; the reference accumulates in bf16, recipe §14.4), then a reduce-scatter sums over
    devices and the result is divided by the number of virtual ranks.
    """
    num_devices = mesh.devices.size
    num_ranks = cfg.data.num_ranks

    def local(params, batch, dyn):
        def micro(acc, b):
            loss, g = jax.value_and_grad(model.train_loss)(params, b, dyn, cfg=cfg.model, windows=windows, tied=tied)
            return jax.tree.map(lambda a, x: a + x.astype(jnp.float32), acc, g), loss

        acc0 = jax.tree.map(lambda p: jnp.zeros(p.shape, jnp.float32), params)
        acc, losses = jax.lax.scan(micro, acc0, batch)
        grads = jax.tree.map(lambda g: g / num_ranks, sharding.reduce_scatter_sum(acc, num_devices))
        return sharding.sum_over_devices(jnp.sum(losses), num_devices), grads

    def build(params_shapes):
        grad_specs = sharding.zero_specs(params_shapes, num_devices)
        fn = jax.shard_map(
            local, mesh=mesh, in_specs=(P(), P(sharding.AXIS), P()), out_specs=(P(), grad_specs), check_vma=False
        )
        return jax.jit(fn)

    return build


def make_update_fn(cfg: Config, mesh, shardings, adam: bool):
    """fn(state, grads, step) -> state: NorMuon every step; Adam on odd steps with the 2-step sum (recipe §3.4)."""
    muon_tx = optim.normuon(cfg.optim, cfg.schedule, orth_layout=sharding.matrix_split(mesh))
    adam_tx = optim.cautious_adam(cfg.optim, cfg.schedule)

    def update(state, grads, step):
        muon_grads, adam_grads = optim.split_params(grads)
        updates, muon_state = muon_tx.update(muon_grads, state["muon"], state["master"], step=step)
        master = optax.apply_updates(state["master"], updates)
        params = dict(state["params"])
        params.update({k: optim.truncate_to_bf16(v) for k, v in master.items()})
        acc = optim.accumulate(state["adam_acc"], adam_grads)
        adam_state = state["adam"]
        if adam:
            adam_params = {k: params[k] for k in acc}
            updates, adam_state = adam_tx.update(acc, adam_state, adam_params, step=step)
            params.update(optax.apply_updates(adam_params, updates))
            acc = jax.tree.map(jnp.zeros_like, acc)
        return {"params": params, "master": master, "muon": muon_state, "adam": adam_state, "adam_acc": acc}

    return jax.jit(update, in_shardings=(shardings, None, None), out_shardings=shardings, donate_argnums=(0,))


def make_untie_fn(shardings):
    """After the Adam update of the untie step: embed := lm_head, weights and Adam state (recipe §1.11)."""

    def untie(state):
        params, adam_state = optim.untie_embedding(state["params"], state["adam"])
        return {**state, "params": params, "adam": adam_state}

    return jax.jit(untie, in_shardings=(shardings,), out_shardings=shardings, donate_argnums=(0,))


def dyn_inputs(cfg: Config, s: int) -> dict:
    """The traced schedule values of step s (recipe §1.7, §4)."""
    freqs, attn_scale = schedule.yarn_state(s, cfg.schedule, cfg.model.head_dim, cfg.model.rope_min_freq)
    return {
        "rope_freqs": np.asarray(freqs, np.float32),
        "attn_scale": np.asarray(attn_scale, np.float32),
        "mtp_weights": np.asarray(schedule.mtp_weights(s, cfg.schedule), np.float32),
        "step": np.asarray(s, np.int32),
    }


@dataclasses.dataclass
class StepFunctions:
    """Every compiled variant of a run: gradients by grad_key, updates by Adam-or-not, evaluation by (windows, tied)."""

    grad: dict
    update: dict
    eval: dict
    untie: object  # None when the steps compiled for do not include the untie step
    seconds: float


def grad_key(shape: schedule.StepShape) -> tuple:
    return (shape.tokens_per_rank, shape.window_short, shape.window_long, shape.tied)


def compile_step_functions(cfg: Config, mesh, shapes, shardings, val_batch, eval_steps=None, steps=None) -> StepFunctions:
    """Lower every step variant that the training steps ``steps`` (default: the whole schedule) and the evaluations
    ``eval_steps`` (default: the schedule's) use, then compile them concurrently (XLA compiles release the GIL; a
    record config has ~12 variants, so this divides the untimed start-up by up to the number of cores). A run that
    stops early (--stop-at) compiles only what its steps need; its resume compiles the rest."""
    t0 = time.perf_counter()
    params_shapes = shapes["params"]
    dyn0 = jax.tree.map(jnp.asarray, dyn_inputs(cfg, 0))
    steps = range(cfg.schedule.total_steps) if steps is None else steps
    step_shapes = dict.fromkeys(schedule.step_shape(s, cfg.schedule) for s in steps)
    lowered = {}
    for shape in step_shapes:
        key = ("grad", grad_key(shape))
        if key not in lowered:
            fn = make_grad_fn(cfg, mesh, (shape.window_short, shape.window_long), shape.tied)(params_shapes)
            batch = {k: jax.ShapeDtypeStruct((cfg.data.num_ranks, shape.tokens_per_rank), jnp.int32,
                                             sharding=sharding.batch_sharding(mesh)) for k in ("inputs", "targets", "seg_ids")}
            lowered[key] = fn.lower(_replicated_abstract(params_shapes, mesh), batch, dyn0)
        key = ("update", shape.adam)
        if key not in lowered:
            grads_abstract = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, jnp.float32, sharding=s),
                                          params_shapes, sharding.zero_shardings(params_shapes, mesh))
            lowered[key] = make_update_fn(cfg, mesh, shardings, shape.adam).lower(
                abstract_like(shapes, shardings), grads_abstract, jnp.int32(0))
    for s in _eval_steps(cfg) if eval_steps is None else eval_steps:
        key = ("eval", _eval_variant(cfg, s))
        if key not in lowered:
            windows, tied = key[1]
            lowered[key] = evaluate.make_eval_fn(cfg, mesh, windows, tied).lower(
                _replicated_abstract(params_shapes, mesh), val_batch, dyn0)
    if schedule.untie_step(cfg.schedule) in steps:
        lowered[("untie", None)] = make_untie_fn(shardings).lower(abstract_like(shapes, shardings))
    with ThreadPoolExecutor(max_workers=max(1, os.cpu_count() or 1)) as pool:
        futures = {key: pool.submit(low.compile) for key, low in lowered.items()}
        compiled = {key: f.result() for key, f in futures.items()}
    pick = lambda kind: {k[1]: v for k, v in compiled.items() if k[0] == kind}  # noqa: E731
    return StepFunctions(grad=pick("grad"), update=pick("update"), eval=pick("eval"),
                         untie=compiled.get(("untie", None)), seconds=time.perf_counter() - t0)


def warm_up(fns: StepFunctions, state, cfg: Config, mesh, num_local_ranks: int) -> float:
    """Run every training-step variant once on a zero batch and a copy of the state, and discard the results; returns
    the seconds taken. recipe §6: the reference runs real steps before it starts the clock. A compiled program's first
    run also loads its kernels and grows the device allocator: on an H100 the first timed step took 2.5 s with the
    xla ops and 7.5 s with the triton ones, against 0.25 s for the next."""
    t0 = time.perf_counter()
    dyn = jax.tree.map(jnp.asarray, dyn_inputs(cfg, 0))
    grads = None
    for key in fns.grad:
        tokens_per_rank = key[0]
        zeros = np.zeros((num_local_ranks, tokens_per_rank), np.int32)
        batch = sharding.put_batch(mesh, dict.fromkeys(("inputs", "targets", "seg_ids"), zeros), cfg.data.num_ranks)
        grads = None  # one set of gradients alive at a time
        grads = fns.grad[key](state["params"], batch, dyn)[1]
    scratch = jax.tree.map(lambda x: x.copy(), state)  # the update and untie functions donate the state they get
    for update in fns.update.values():
        scratch = update(scratch, grads, jnp.int32(0))
    if fns.untie is not None:
        scratch = fns.untie(scratch)
    jax.block_until_ready(scratch)
    return time.perf_counter() - t0


def _replicated_abstract(tree, mesh):
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding.replicated(mesh)), tree)


# ----------------------------------------------------------------------------------------------------------------------
# The run
# ----------------------------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class RunOptions:
    run_dir: Path
    resume: bool = False
    resume_step: int | None = None  # restore this checkpoint instead of the newest intact one
    stop_at: int | None = None  # checkpoint and exit once this many steps are done (for time-limited sessions)
    time_limit_s: float | None = None  # checkpoint and exit once this much wall time has passed since train() began
    devices: int | None = None  # use the first N devices of this process (default: all); must divide data.num_ranks
    distributed: tuple = (None, None, None)  # (coordinator, num_processes, process_id); None = from the environment


class _Stop:
    """SIGTERM/SIGINT. Once training has started, the loop saves a checkpoint after the step in flight and exits; during
    the start-up (data checks, compilation, warm-up), when nothing is worth saving and an XLA compile cannot be
    interrupted, the process says so and exits at once with EXIT_SIGNAL (nothing is being written then)."""

    def __init__(self, log: RunLog):
        self.signal = None
        self.training = False
        self.log = log

    def __call__(self, signum, frame):
        self.signal = signal.Signals(signum).name
        if not self.training:
            self.log.print(f"received {self.signal} during start-up, before the first step: nothing to save; exiting "
                           f"(exit code {EXIT_SIGNAL}). The run folder holds no checkpoint and can be reused.")
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(EXIT_SIGNAL)


def enable_compile_cache(cfg: Config) -> str | None:
    """Point JAX's persistent compilation cache at cfg.run.compile_cache_dir (none if it is ""); returns the path."""
    if not cfg.run.compile_cache_dir:
        return None
    path = os.path.expanduser(cfg.run.compile_cache_dir)
    os.makedirs(path, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", path)
    return path


def train(cfg: Config, opts: RunOptions) -> dict:
    """Run (or resume) training; returns a summary dict. Raises TrainingDiverged / OutOfMemory / DataError /
    CheckpointError with a clear message, and RunDirError before anything starts if the run folder cannot be used."""
    wall0 = time.perf_counter()  # the time limit counts data checks and compilation too
    sharding.init_distributed(*opts.distributed)
    lock = RunDirLock(opts.run_dir, jax.process_index())
    lock.acquire()  # before anything is written to the folder; held until this process exits
    try:
        return _train_locked(cfg, opts, wall0)
    finally:
        lock.release()


def _train_locked(cfg: Config, opts: RunOptions, wall0: float) -> dict:
    if opts.resume:
        check_resumable(opts.run_dir)
        reused = False
    else:
        reused = check_new_run(opts.run_dir)
    cache = enable_compile_cache(cfg)
    mesh = sharding.make_mesh(cfg.data.num_ranks, jax.devices()[: opts.devices] if opts.devices else None)
    log = RunLog(opts.run_dir, enabled=jax.process_index() == 0, append=opts.resume)
    stop = _Stop(log)
    old_handlers = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)} if _main_thread() else {}
    try:
        return _run(cfg, opts, wall0, mesh, log, stop, reused, cache)
    finally:
        for sig, handler in old_handlers.items():
            signal.signal(sig, handler)


def resolved_config(cfg: Config) -> Config:
    """cfg with "auto" backends replaced by the ones that will run here, decided once at the start: config.json and the
    log record what ran, and a resumed run keeps the kernels it started with."""
    backends = tuple(ops.resolve_backends(cfg.model.backends).items())
    return dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, backends=backends))


def header_lines(cfg: Config, mesh, opts: RunOptions) -> list[str]:
    """What produced the run, as the speedrun's logs begin with their code and environment: jaxrun version and commit,
    the config (name, hash, where it is), backends, devices and library versions."""
    import hashlib
    import importlib.metadata
    import platform
    import subprocess

    def version(name):
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            return "absent"

    try:
        commit = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                                text=True, timeout=5).stdout.strip() or "unknown"
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=Path(__file__).parent,
                               capture_output=True, text=True, timeout=5).stdout.strip()
        commit += " (modified)" if dirty else ""
    except (OSError, subprocess.SubprocessError):
        commit = "unknown"
    config_text = to_json(cfg)
    digest = hashlib.sha256(config_text.encode()).hexdigest()[:16]
    device = jax.devices()[0]
    return [
        f"jaxrun {version('jaxrun')} commit {commit} | python {platform.python_version()} | jax {jax.__version__} "
        f"jaxlib {version('jaxlib')} | flax {version('flax')} optax {version('optax')} orbax {version('orbax-checkpoint')} "
        f"| triton {version('triton')} jax-triton {version('jax-triton')}",
        f"config {cfg.name} sha256:{digest} -> {opts.run_dir / 'config.json'}",
        "backends: " + ", ".join(f"{op}={b}" for op, b in cfg.model.backends) + f" | fp8 head {cfg.model.fp8_head}",
        f"devices: {mesh.devices.size} x {device.device_kind} ({jax.default_backend()}) | {jax.process_count()} process(es)",
    ]


def _run(cfg: Config, opts: RunOptions, wall0: float, mesh, log: RunLog, stop: _Stop, reused: bool, cache) -> dict:
    num_devices = mesh.devices.size
    is_main = jax.process_index() == 0
    sched = cfg.schedule
    total = sched.total_steps
    cfg = resolved_config(cfg)
    if reused:
        log.print(f"reusing {opts.run_dir}: an earlier start there saved no checkpoint")

    data_lib.ensure_shards(cfg.data, announce=log.print)
    ranks = sharding.local_ranks(mesh, cfg.data.num_ranks)
    loader = data_lib.TrainLoader(cfg.data, ranks)
    val_local = data_lib.val_batches(cfg.data, ranks)
    val_steps = [sharding.put_batch(mesh, {k: b[k] for k in ("inputs", "targets", "seg_ids")}, cfg.data.num_ranks) for b in val_local]

    if not opts.resume:
        (opts.run_dir / "config.json").write_text(to_json(cfg)) if is_main else None
    for line in header_lines(cfg, mesh, opts):
        log.print(line)
    if cache:
        log.print(f"persistent compilation cache: {cache}")

    # --- state -----------------------------------------------------------------------------------------------------
    key = jax.random.PRNGKey(cfg.run.seed)
    shapes = jax.eval_shape(lambda k: init_state(cfg, k), key)
    shardings = state_shardings(shapes, mesh)
    state = jax.jit(lambda k: init_state(cfg, k), out_shardings=shardings)(key)
    start, train_time_ms = 0, 0.0
    checkpointer = Checkpointer(opts.run_dir / "checkpoints", keep=cfg.run.keep_checkpoints, write_checksums=is_main)
    if opts.resume:
        state, data_state, meta = checkpointer.restore(abstract_like(shapes, shardings), opts.resume_step, report=log.print)
        loader.set_state(data_state)
        start, train_time_ms = int(meta["step"]), float(meta["train_time_ms"])
        if start >= total:
            final = [m["val_loss"] for m in log.metrics if m.get("step") == total and "val_loss" in m]
            log.print(f"{opts.run_dir} already finished all {total} steps" + (f" (final validation loss {final[-1]:.4f})" if final else "")
                      + ": nothing to do")
            checkpointer.close()
            loader.close()
            return {"stopped_at": total, "already_finished": True, "val_losses": {}, "run_dir": str(opts.run_dir)}
        log.print(f"resumed from {opts.run_dir} at step {start} (train_time {train_time_ms:.0f}ms)")
    logged_vals = {m["step"] for m in log.metrics if "val_loss" in m}  # a resumed run does not repeat them

    # --- compile every variant before the clock starts (recipe §6) ---------------------------------------------------
    log.print("Compiling model and warming up kernels")
    try:
        # --stop-at bounds the steps this process will run (a time limit does not: it may reach the end)
        last = total if opts.stop_at is None else max(start, min(total, opts.stop_at))
        evals = [s for s in _eval_steps(cfg) if start <= s <= last and (s < last or s == total) and s not in logged_vals]
        fns = compile_step_functions(cfg, mesh, shapes, shardings, val_steps[0], eval_steps=evals, steps=range(start, last))
    except Exception as err:  # noqa: BLE001 - re-raised with advice when it is an OOM
        if is_oom(err):
            raise OutOfMemory(oom_message("compiling", cfg, num_devices)) from err
        raise
    compile_s = fns.seconds
    log.print(f"compiled {len(fns.grad)} gradient, {len(fns.update)} update and {len(fns.eval)} eval variants in {compile_s:.1f}s")
    log.metric({"event": "compile", "seconds": compile_s, "grad_variants": len(fns.grad), "eval_variants": len(fns.eval)})
    try:
        warm_s = warm_up(fns, state, cfg, mesh, len(ranks))
    except Exception as err:  # noqa: BLE001 - the first run of each variant is where a run-time OOM shows first
        if is_oom(err):
            raise OutOfMemory(oom_message("training", cfg, num_devices)) from err
        raise
    log.print(f"ran each training-step variant once (untimed, results discarded) in {warm_s:.1f}s")
    log.metric({"event": "warm_up", "seconds": warm_s})

    # --- loop (recipe §4.1) --------------------------------------------------------------------------------------------
    stop.training = True  # from here a signal stops the loop after the step in flight, with a checkpoint
    last_good_step = start if opts.resume else None
    pending = None  # (step, loss array): checked one step late so the device keeps a step in flight
    untie_at = schedule.untie_step(sched)
    val_losses = {}

    def check(pending_):
        s_, loss_ = pending_
        value = float(loss_)
        if not math.isfinite(value):
            where = f"step {last_good_step} in {checkpointer.directory}" if last_good_step is not None else "none was saved"
            raise TrainingDiverged(
                f"training loss is {value} at step {s_}: stopping. Nothing was saved after it; last good checkpoint: {where}."
            )
        log.metric({"step": s_, "train_loss": value})

    def stop_clock():
        """Check the pending loss, wait for the device and add the time since t_start to the training time: before
        an evaluation or a checkpoint, which the clock does not count (recipe §6)."""
        nonlocal pending, train_time_ms
        if pending is not None:
            check(pending)
            pending = None
        jax.block_until_ready(state)
        train_time_ms += 1000 * (time.perf_counter() - t_start)

    def save(step_done: int):
        nonlocal last_good_step
        checkpointer.save(step_done, state, loader.get_state(),
                          {"step": step_done, "train_time_ms": train_time_ms, "attn_scale": float(dyn_inputs(cfg, min(step_done, total - 1))["attn_scale"])})
        last_good_step = step_done

    try:
        jax.block_until_ready(state)
        t_start = time.perf_counter()
        for s in range(start, total + 1):
            dyn = dyn_inputs(cfg, min(s, total - 1))  # the final evaluation keeps the last step's YaRN state (recipe §2.2)
            if (s % cfg.run.val_every == 0 or s == total) and s not in logged_vals:
                stop_clock()
                windows, tied = _eval_variant(cfg, s)
                loss = evaluate.validation_loss(fns.eval[(windows, tied)], state["params"], val_steps, dyn, cfg.data.num_ranks)
                val_losses[s] = loss
                log.print(f"step:{s}/{total} val_loss:{loss:.4f} train_time:{train_time_ms:.0f}ms step_avg:{train_time_ms / max(s, 1):.2f}ms")
                log.metric({"step": s, "val_loss": loss, "train_time_ms": train_time_ms})
                log.plot()
                t_start = time.perf_counter()
            if s == total:
                break
            shape = schedule.step_shape(s, sched)
            try:
                local = loader.next_batch(shape.tokens_per_rank)
            except data_lib.DataError as err:  # out of data: keep the s steps done (the loader has not moved)
                stop_clock()
                save(s)
                raise data_lib.DataError(f"{err}. The {s} steps done are saved in {checkpointer.directory}: add data, "
                                         f"then python -m jaxrun.train --resume {opts.run_dir}") from err
            batch = sharding.put_batch(mesh, {k: local[k] for k in ("inputs", "targets", "seg_ids")}, cfg.data.num_ranks)
            loss, grads = fns.grad[grad_key(shape)](state["params"], batch, dyn)
            state = fns.update[shape.adam](state, grads, jnp.int32(s))
            if s == untie_at:
                state = fns.untie(state)
            if pending is not None:
                check(pending)
            pending = (s, loss)
            elapsed = train_time_ms + 1000 * (time.perf_counter() - t_start)
            if (s + 1) % cfg.run.log_every == 0 or s + 1 == total:
                log.print(f"step:{s + 1}/{total} train_time:{elapsed:.0f}ms step_avg:{elapsed / (s + 1):.2f}ms")
            log.metric({"step": s + 1, "train_time_ms": elapsed, "phase": schedule.phase(s, sched)}, echo=False)
            done = s + 1
            due = cfg.run.checkpoint_every and done % cfg.run.checkpoint_every == 0
            out_of_time = opts.time_limit_s is not None and time.perf_counter() - wall0 > opts.time_limit_s
            halt = stop.signal or (opts.stop_at is not None and done >= opts.stop_at) or out_of_time
            if due or halt:
                stop_clock()
                save(done)
                t_start = time.perf_counter()
            if halt:
                why = f"received {stop.signal}" if stop.signal else ("time limit reached" if out_of_time else f"stop at step {done}")
                log.print(f"{why}: checkpoint saved at step {done} in {checkpointer.directory}; resume with "
                          f"python -m jaxrun.train --resume {opts.run_dir}")
                return {"stopped_at": done, "val_losses": val_losses, "compile_s": compile_s, "run_dir": str(opts.run_dir),
                        "signal": stop.signal}
        save(total)
    except Exception as err:  # noqa: BLE001
        if is_oom(err):
            raise OutOfMemory(oom_message("training", cfg, num_devices)) from err
        raise
    finally:
        log.plot()
        checkpointer.close()
        loader.close()

    stats = jax.local_devices()[0].memory_stats()
    if stats:
        peak = stats.get("peak_bytes_in_use", 0) // 2**20
        reserved = stats.get("bytes_reserved", stats.get("bytes_limit", 0)) // 2**20
        log.print(f"peak memory allocated: {peak} MiB reserved: {reserved} MiB")
    return {"stopped_at": total, "val_losses": val_losses, "compile_s": compile_s, "train_time_ms": train_time_ms,
            "run_dir": str(opts.run_dir)}


def _eval_steps(cfg: Config) -> list[int]:
    total = cfg.schedule.total_steps
    return sorted(set(range(0, total, cfg.run.val_every)) | {total})


def _eval_variant(cfg: Config, s: int) -> tuple[tuple[int, int], bool]:
    total = cfg.schedule.total_steps
    short, long = schedule.eval_windows(min(s, total - 1), cfg.schedule, final=s == total)
    # "Validation at step s sees the weights after s optimizer steps" (recipe §4): tied until the untie step has run.
    tied = s <= schedule.untie_step(cfg.schedule)
    return (short, long), tied


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


# ----------------------------------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------------------------------


def _positive(kind):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a {kind.__name__}") from None
        if not value > 0:
            raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
        return value

    return parse


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m jaxrun.train", description=__doc__.split("\n")[0],
                                epilog=f"exit codes: {EXIT_OK} finished or stopped on purpose, {EXIT_ERROR} training failed, "
                                       f"{EXIT_USAGE} refused before starting, {EXIT_SIGNAL} stopped by a signal (resume it)")
    p.add_argument("--config", help="config file (default: configs/tiny.py, the embedded CPU default)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="override a config field (repeatable)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue runs/<name> from its latest checkpoint (its config.json is used)")
    p.add_argument("--name", help="run name (runs/<name>/); default: <config>-<date>-<time>")
    p.add_argument("--dry-run", action="store_true", help="print the parameter table and exit")
    p.add_argument("--print-config", action="store_true", help="print every config key and value, then exit")
    p.add_argument("--resume-step", type=int, metavar="N", help="with --resume: restore the checkpoint of step N "
                   "(default: the newest intact one)")
    p.add_argument("--stop-at", type=_positive(int), help="save a checkpoint and exit after this many steps (resume later)")
    p.add_argument("--time-limit", type=_positive(float), help="save a checkpoint and exit once this many seconds of wall time have passed since the start "
                   "(compilation included; leave time for the save)")
    p.add_argument("--devices", type=_positive(int), help="use only the first N local devices (default: every visible device)")
    p.add_argument("--coordinator", help="multi-host: host:port of process 0 (default: $JAX_COORDINATOR_ADDRESS)")
    p.add_argument("--num-processes", type=int, help="multi-host: number of processes (default: $JAX_NUM_PROCESSES)")
    p.add_argument("--process-id", type=int, help="multi-host: this process's index (default: $JAX_PROCESS_ID)")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        if args.resume:
            run_dir = Path(args.resume)
            cfg_file = run_dir / "config.json"
            if not cfg_file.is_file():
                raise ConfigError(f"--resume {run_dir}: no config.json there (is it a jaxrun run directory?)")
            from jaxrun.config import apply_overrides, validate

            try:
                saved = from_dict(json.loads(cfg_file.read_text()))
            except (json.JSONDecodeError, KeyError, TypeError) as err:
                raise ConfigError(f"--resume {run_dir}: its config.json is unreadable ({type(err).__name__}: {err})") from err
            cfg = apply_overrides(saved, args.overrides)
            validate(cfg)
        else:
            cfg = load_config(args.config, args.overrides)
            if args.name:
                cfg = dataclasses.replace(cfg, run=dataclasses.replace(cfg.run, name=args.name))
        try:
            ops.check_backends(cfg.model.backends)  # before anything starts: "trition" is refused here
        except ValueError as err:
            raise ConfigError(str(err)) from err
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USAGE
    if args.print_config:
        flat = json.loads(to_json(cfg))
        for key in valid_keys(cfg):
            section, _, leaf = key.partition(".")
            print(f"{key} = {flat[section][leaf] if leaf else flat[section]}")
        return 0
    if args.dry_run:
        model.print_param_table(cfg.model)
        return 0
    if args.resume_step is not None and not args.resume:
        print("error: --resume-step needs --resume RUN_DIR", file=sys.stderr)
        return EXIT_USAGE
    if args.resume:
        run_dir = Path(args.resume)
    else:
        name = cfg.run.name or f"{cfg.name}-{time.strftime('%Y%m%d-%H%M%S')}"
        run_dir = Path(cfg.run.out_dir) / name
    try:
        summary = train(cfg, RunOptions(run_dir=run_dir, resume=bool(args.resume), resume_step=args.resume_step,
                                        stop_at=args.stop_at, time_limit_s=args.time_limit, devices=args.devices,
                                        distributed=(args.coordinator, args.num_processes, args.process_id)))
    except (RunDirError, ConfigError) as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except (TrainingDiverged, OutOfMemory, data_lib.DataError, CheckpointError) as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_ERROR
    if summary.get("signal"):
        return EXIT_SIGNAL
    if summary.get("stopped_at") == cfg.schedule.total_steps:
        print(f"done: {run_dir} (log.txt, metrics.jsonl, config.json, loss.png, checkpoints/)")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
