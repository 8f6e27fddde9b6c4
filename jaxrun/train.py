"""``python -m jaxrun.train``: train (or resume) a run: set up the engine, compile every step variant, then the loop of
recipe §4.1 with its evaluations, checkpoints and stops, logged in the reference's line format.

The setup, the compiled step functions and the step itself live in jaxrun.engine, shared with the step benchmark and the
tests; this module owns the run folder (lock, config.json, log, checkpoints), the training clock (recipe §6: it does not
count evaluations, checkpoints or the start-up), signals and time limits, and the command line.
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
from pathlib import Path

import jax

from jaxrun import data as data_lib
from jaxrun import engine, model, ops, schedule, sharding
from jaxrun.checkpoint import CheckpointError, Checkpointer
from jaxrun.config import Config, ConfigError, from_dict, load_config, to_json, valid_keys
from jaxrun.engine import OutOfMemory
from jaxrun.rundir import RunDirError, RunDirLock, check_new_run, check_resumable
from jaxrun.runlog import RunLog

# Exit codes of `python -m jaxrun.train` (README, "Failures and recovery").
EXIT_OK = 0  # finished, already finished, or stopped by --stop-at / --time-limit with a checkpoint saved
EXIT_ERROR = 1  # training failed: divergence, out of memory, out of data, a damaged checkpoint with none intact
EXIT_USAGE = 2  # refused before anything started: bad config or arguments, run folder in use or holding a run
EXIT_SIGNAL = 75  # stopped by SIGTERM/SIGINT (checkpoint saved if training had started): resume it (EX_TEMPFAIL)


class TrainingDiverged(RuntimeError):
    """The training loss became NaN or Inf; the last good checkpoint is left as it was."""


@dataclasses.dataclass
class RunOptions:
    run_dir: Path
    resume: bool = False
    resume_step: int | None = None  # restore this checkpoint instead of the newest intact one
    stop_at: int | None = None  # checkpoint and exit once this many steps are done (for time-limited sessions)
    time_limit_s: float | None = None  # checkpoint and exit once this much wall time has passed since train() began
    devices: int | None = None  # use the first N devices of this process (default: all); must divide data.num_ranks
    distributed: tuple = (None, None, None)  # (coordinator, num_processes, process_id); None = from the environment


@dataclasses.dataclass
class RunResult:
    """What train() did; the same fields whether it finished, stopped on purpose or found the run already finished."""

    run_dir: str
    stopped_at: int  # steps done when this process stopped
    total_steps: int
    val_losses: dict  # step -> validation loss, of the validations this process ran
    compile_s: float | None = None  # None when nothing was compiled (already finished)
    train_time_ms: float | None = None  # the run's training time so far (recipe §6)
    signal: str | None = None  # the signal that stopped it, if one did
    already_finished: bool = False

    @property
    def finished(self) -> bool:
        return self.stopped_at >= self.total_steps


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


class _Clock:
    """The training time (recipe §6): it runs during training steps and is paused around evaluations and checkpoints,
    after waiting for the device so that the step in flight is counted."""

    def __init__(self, ms: float):
        self.ms = ms
        self._since = None

    def start(self) -> None:
        self._since = time.perf_counter()

    def pause(self, state) -> None:
        jax.block_until_ready(state)
        self.ms += 1000 * (time.perf_counter() - self._since)
        self._since = None

    def elapsed_ms(self) -> float:
        return self.ms + (1000 * (time.perf_counter() - self._since) if self._since is not None else 0.0)


def train(cfg: Config, opts: RunOptions) -> RunResult:
    """Run (or resume) training. Raises TrainingDiverged / OutOfMemory / DataError / CheckpointError with a clear
    message, and RunDirError before anything starts if the run folder cannot be used."""
    wall0 = time.perf_counter()  # the time limit counts data checks and compilation too
    sharding.init_distributed(*opts.distributed)
    lock = RunDirLock(opts.run_dir, jax.process_index())
    lock.acquire()  # before anything is written to the folder; held until this process exits
    try:
        if opts.resume:
            check_resumable(opts.run_dir)
            reused = False
        else:
            reused = check_new_run(opts.run_dir)
        log = RunLog(opts.run_dir, enabled=jax.process_index() == 0, append=opts.resume)
        stop = _Stop(log)
        handlers = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)} if _main_thread() else {}
        try:
            if reused:
                log.print(f"reusing {opts.run_dir}: an earlier start there saved no checkpoint")
            return _Run(cfg, opts, log, stop, wall0).run()
        finally:
            for sig, handler in handlers.items():
                signal.signal(sig, handler)
    finally:
        lock.release()


def header_lines(cfg: Config, mesh, opts: RunOptions) -> list[str]:
    """What produced the run, as the speedrun's logs begin with their code and environment: jaxrun version and commit,
    the config (name, hash, where it is), backends, devices, library versions and the XLA environment variables."""
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
        "per device: " + "; ".join(engine.forward_plan(cfg, mesh.devices.size)),
        engine.xla_environment_line(),
    ]


class _Run:
    """One process's part of a run: the start-up (engine session, state, compilation, warm-up), then the loop with its
    three hooks — ``_validate`` (evaluation), ``_checkpoint`` and ``_stop_reason`` (--stop-at, time limit, signal)."""

    def __init__(self, cfg: Config, opts: RunOptions, log: RunLog, stop: _Stop, wall0: float):
        self.cfg, self.opts, self.log, self.stop, self.wall0 = cfg, opts, log, stop, wall0
        self.val_losses: dict = {}
        self.last_good_step = None  # the newest checkpoint this run can fall back to
        self.pending = None  # (step, loss array): checked one step late so the device keeps a step in flight

    # --- start-up --------------------------------------------------------------------------------------------------
    def run(self) -> RunResult:
        opts, log = self.opts, self.log
        cache = engine.enable_compile_cache(self.cfg)
        session = engine.setup(self.cfg, devices=opts.devices, announce=log.print)
        self.session, cfg = session, session.cfg
        self.total = cfg.schedule.total_steps
        is_main = jax.process_index() == 0
        self.checkpointer = Checkpointer(opts.run_dir / "checkpoints", keep=cfg.run.keep_checkpoints, write_checksums=is_main)
        try:
            if not opts.resume and is_main:
                (opts.run_dir / "config.json").write_text(to_json(cfg))
            for line in header_lines(cfg, session.mesh, opts):
                log.print(line)
            log.print(session.forward_tokens_note)
            if cache:
                log.print(f"persistent compilation cache: {cache}")
            if session.lowering_cache.directory:
                log.print(f"lowering cache: {session.lowering_cache.directory}")
            start, train_ms, state = self._initial_state()
            if start >= self.total:
                final = [m["val_loss"] for m in log.metrics if m.get("step") == self.total and "val_loss" in m]
                log.print(f"{opts.run_dir} already finished all {self.total} steps"
                          + (f" (final validation loss {final[-1]:.4f})" if final else "") + ": nothing to do")
                return RunResult(str(opts.run_dir), self.total, self.total, {}, train_time_ms=train_ms, already_finished=True)
            fns = self._compile(start, state)
            self.stop.training = True  # from here a signal stops the loop after the step in flight, with a checkpoint
            with engine.explained_oom("training", cfg, session.num_devices):
                return self._loop(fns, state, start, _Clock(train_ms))
        finally:
            log.plot()
            self.checkpointer.close()
            session.close()

    def _initial_state(self):
        """(first step, training time so far, state): a fresh state, or the checkpoint --resume names."""
        session, opts = self.session, self.opts
        state = engine.initial_state(session)
        if not opts.resume:
            return 0, 0.0, state
        state, data_state, meta = self.checkpointer.restore(engine.abstract_state(session), opts.resume_step,
                                                            report=self.log.print)
        session.loader.set_state(data_state)
        start, train_ms = int(meta["step"]), float(meta["train_time_ms"])
        self.last_good_step = start
        if start < self.total:
            self.log.print(f"resumed from {opts.run_dir} at step {start} (train_time {train_ms:.0f}ms)")
        return start, train_ms, state

    def _compile(self, start: int, state) -> engine.StepFunctions:
        session, log, cfg = self.session, self.log, self.session.cfg
        logged = {m["step"] for m in log.metrics if "val_loss" in m}  # a resumed run does not repeat them
        self.val_due = set(engine.eval_steps(cfg)) - logged
        # --stop-at bounds the steps this process will run (a time limit does not: it may reach the end)
        last = self.total if self.opts.stop_at is None else max(start, min(self.total, self.opts.stop_at))
        evals = [s for s in sorted(self.val_due) if start <= s <= last and (s < last or s == self.total)]
        log.print("Compiling model and warming up kernels")
        fns = engine.compile_step_functions(session, steps=range(start, last), evals=evals)
        counts = fns.counts()
        log.print(f"compiled {counts['grad']} gradient, {counts['update']} update and {counts['eval']} eval variants in {fns.seconds:.1f}s"
                  f" (lowering {fns.lower_seconds:.1f}s of it; {fns.lowering_summary()}; last to finish: {fns.slowest()})")
        log.metric({"event": "compile", "seconds": fns.seconds, "lower_seconds": fns.lower_seconds,
                    "timeline": {repr(k): list(v) for k, v in fns.timeline.items()},
                    "grad_variants": counts["grad"], "eval_variants": counts["eval"],
                    "lowering_cache": {repr(k): v for k, v in fns.lowering.items()}})
        warm_s = engine.warm_up(session, fns, state)
        log.print(f"ran each training-step variant once (untimed, results discarded) in {warm_s:.1f}s")
        log.metric({"event": "warm_up", "seconds": warm_s})
        self.compile_s = fns.seconds
        return fns

    # --- the loop (recipe §4.1) ------------------------------------------------------------------------------------
    def _loop(self, fns, state, start: int, clock: _Clock) -> RunResult:
        session, cfg, total = self.session, self.session.cfg, self.total
        engine.prime_loader(session, start)  # the first batch is built before the clock starts, not in step `start`
        jax.block_until_ready(state)
        clock.start()
        for s in range(start, total + 1):
            if s in self.val_due:
                self._settle()
                clock.pause(state)
                self._validate(fns, state, s, clock)
                clock.start()
            if s == total:
                break
            try:
                batch = engine.next_batch(session, s)
            except data_lib.DataError as err:  # out of data: keep the s steps done (the loader has not moved)
                self._settle()
                clock.pause(state)
                self._checkpoint(s, state, clock)
                raise data_lib.DataError(f"{err}. The {s} steps done are saved in {self.checkpointer.directory}: add "
                                         f"data, then python -m jaxrun.train --resume {self.opts.run_dir}") from err
            state, loss = engine.train_step(session, fns, state, s, batch)
            if s == start:  # the one synchronised step time: the step lines below are asynchronous readings
                jax.block_until_ready(state)
                first_ms = clock.elapsed_ms()
                self.log.print(f"first timed step (synchronised): {first_ms:.1f}ms")
                self.log.metric({"event": "first_step", "step": s, "ms": first_ms})
            self._settle()
            self.pending = (s, loss)
            done, elapsed = s + 1, clock.elapsed_ms()
            if done % cfg.run.log_every == 0 or done == total:
                self.log.print(f"step:{done}/{total} train_time:{elapsed:.0f}ms step_avg:{elapsed / done:.2f}ms")
            self.log.metric({"step": done, "train_time_ms": elapsed, "phase": schedule.phase(s, cfg.schedule)}, echo=False)
            why = self._stop_reason(done)
            if why or (cfg.run.checkpoint_every and done % cfg.run.checkpoint_every == 0):
                self._settle()
                clock.pause(state)
                self._checkpoint(done, state, clock)
                clock.start()
            if why:
                self.log.print(f"{why}: checkpoint saved at step {done} in {self.checkpointer.directory}; resume with "
                               f"python -m jaxrun.train --resume {self.opts.run_dir}")
                return self._result(done, clock, signal=self.stop.signal)
        self._settle()
        self._checkpoint(total, state, clock)
        stats = jax.local_devices()[0].memory_stats()
        if stats:
            peak = stats.get("peak_bytes_in_use", 0) // 2**20
            reserved = stats.get("bytes_reserved", stats.get("bytes_limit", 0)) // 2**20
            self.log.print(f"peak memory allocated: {peak} MiB reserved: {reserved} MiB")
        return self._result(total, clock)

    def _result(self, done: int, clock: _Clock, signal=None) -> RunResult:
        return RunResult(str(self.opts.run_dir), done, self.total, self.val_losses, compile_s=self.compile_s,
                         train_time_ms=clock.ms, signal=signal)

    def _settle(self) -> None:
        """Check the pending step's loss (a NaN/Inf stops the run before anything after it is saved) and record it."""
        if self.pending is None:
            return
        s, loss = self.pending
        self.pending = None
        value = float(loss)
        if not math.isfinite(value):
            where = (f"step {self.last_good_step} in {self.checkpointer.directory}" if self.last_good_step is not None
                     else "none was saved")
            raise TrainingDiverged(
                f"training loss is {value} at step {s}: stopping. Nothing was saved after it; last good checkpoint: {where}."
            )
        self.log.metric({"step": s, "train_loss": value})

    # --- hooks -----------------------------------------------------------------------------------------------------
    def _validate(self, fns, state, s: int, clock: _Clock) -> None:
        loss = engine.evaluate(self.session, fns, state, s)
        self.val_losses[s] = loss
        self.log.print(f"step:{s}/{self.total} val_loss:{loss:.4f} train_time:{clock.ms:.0f}ms step_avg:{clock.ms / max(s, 1):.2f}ms")
        self.log.metric({"step": s, "val_loss": loss, "train_time_ms": clock.ms})
        self.log.plot()

    def _checkpoint(self, done: int, state, clock: _Clock) -> None:
        cfg = self.session.cfg
        attn_scale = float(engine.dyn_inputs(cfg, min(done, self.total - 1))["attn_scale"])
        self.checkpointer.save(done, state, self.session.loader.get_state(),
                               {"step": done, "train_time_ms": clock.ms, "attn_scale": attn_scale})
        self.last_good_step = done

    def _stop_reason(self, done: int) -> str | None:
        """Why the loop stops after ``done`` steps (a checkpoint is saved first), or None to go on."""
        if self.stop.signal:
            return f"received {self.stop.signal}"
        if self.opts.stop_at is not None and done >= self.opts.stop_at:
            return f"stop at step {done}"
        if self.opts.time_limit_s is not None and time.perf_counter() - self.wall0 > self.opts.time_limit_s:
            return "time limit reached"
        return None


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
        model.print_param_table(cfg.model, cfg.optim)
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
        result = train(cfg, RunOptions(run_dir=run_dir, resume=bool(args.resume), resume_step=args.resume_step,
                                        stop_at=args.stop_at, time_limit_s=args.time_limit, devices=args.devices,
                                        distributed=(args.coordinator, args.num_processes, args.process_id)))
    except (RunDirError, ConfigError) as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except (TrainingDiverged, OutOfMemory, data_lib.DataError, CheckpointError) as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_ERROR
    if result.signal:
        return EXIT_SIGNAL
    if result.finished:
        print(f"done: {run_dir} (log.txt, metrics.jsonl, config.json, loss.png, checkpoints/)")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
