"""``python -m jaxrun.bench step``: the whole training step, per phase, on real batches, as the training loop runs it.

    python -m jaxrun.bench step --config configs/record60.py [--phase 0 --phase 3] [--steps 20] [--warmup 3] [--json PATH]

The bench builds on the training engine (jaxrun.engine: the same setup, compiled step functions and step as
``python -m jaxrun.train``), so what is timed is what trains.

Compile time is measured twice through engine.compile_step_functions (every variant a run compiles before its clock):
cold, into a fresh, empty persistent compilation cache (and, when the config keeps one, a fresh lowering cache,
jaxrun.lowering_cache), and warm, from those caches after jax.clear_caches(). While it is measured every executable is
written to the cache (no minimum compile time), so "warm" means all of them load and no variant is traced.

Each requested phase (0 .. n-1, and n = the extension) runs W warm-up steps, then K timed ones, from one state made
once by init_state. A step is what the loop does (recipe §4.1): the next batch from the configured shards, put on the
devices, gradients, then NorMuon, plus Adam on odd steps; the bench alternates an even and an odd step of the phase
with one gradient variant (never the untie step), so Adam runs every other step as in training. Each timed step is
bracketed by block_until_ready, which gives per-step times (median and mean) at the cost of the small overlap of the
host's dispatch with the previous step's device work that training has.

FLOPs are jaxrun.flops.train_step_flops (recipe §9) of each timed batch's own segment ids and the phase's windows; MFU is
achieved FLOP/s over devices x flops.peak_tflops(device kind) (none on CPU). Peak memory is the largest
memory_stats()['peak_bytes_in_use'] over the devices, a high-water mark since the process started (JAX cannot reset
it), so phases are run in ascending order and each figure includes every earlier phase.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import statistics
import tempfile
import time
from pathlib import Path

import jax
from jax.experimental.compilation_cache import compilation_cache

from jaxrun import data as data_lib
from jaxrun import engine, flops, profiling, schedule, sharding
from jaxrun.config import Config, ConfigError, load_config

PROFILE_STEPS = 2


@dataclasses.dataclass(frozen=True)
class StepBenchOptions:
    phases: tuple[int, ...] | None = None  # None: every phase and the extension
    steps: int = 10  # timed steps per phase
    warmup: int = 3  # untimed steps per phase before them
    devices: int | None = None  # the first N local devices (default: all)
    cold_compile: bool = True  # False: compile once, through the run's usual persistent cache
    profile_dir: str | None = None  # trace PROFILE_STEPS more steps of each phase here and summarise them
    compare_to: str | None = None  # a training log (PyTorch speedrun or jaxrun) whose per-phase step times to set beside
    benched_variants_only: bool = False  # compile only the benched phases' gradient and optimizer variants
    lowering_threads: int = 1  # variants lowered at once (engine.compile_step_functions)


# ----------------------------------------------------------------------------------------------------------------------
# Phases and their steps
# ----------------------------------------------------------------------------------------------------------------------


def num_phases(cfg: Config) -> int:
    """Scheduled phases plus the extension (schedule.stages)."""
    return schedule.num_stages(cfg.schedule)


def phase_label(cfg: Config, p: int) -> str:
    return schedule.stages(cfg.schedule)[p].label


def check_options(cfg: Config, opts: StepBenchOptions) -> tuple[int, ...]:
    """The phases to run, sorted and deduplicated, each with a step pair to bench; raises ConfigError saying what to
    change."""
    n = num_phases(cfg)
    phases = tuple(range(n)) if opts.phases is None else tuple(sorted(set(opts.phases)))
    valid = ", ".join(f"{p} ({phase_label(cfg, p)})" for p in range(n))
    bad = [p for p in phases if not 0 <= p < n]
    if bad:
        raise ConfigError(f"--phase {bad[0]} is not a phase of config {cfg.name!r}: use {valid}")
    if not phases:
        raise ConfigError(f"no phase to bench: give --phase one or more times ({valid}), or leave it out for all")
    if opts.steps < 1:
        raise ConfigError(f"--steps must be at least 1 (timed steps per phase), got {opts.steps}")
    if opts.warmup < 0:
        raise ConfigError(f"--warmup must be 0 or more (untimed steps per phase), got {opts.warmup}")
    if opts.devices is not None and not 1 <= opts.devices <= jax.local_device_count():
        raise ConfigError(
            f"--devices {opts.devices}: this process sees {jax.local_device_count()} device(s) "
            f"(on CPU, more come from XLA_FLAGS=--xla_force_host_platform_device_count=N set before Python starts)"
        )
    for p in phases:
        step_pair(cfg, p)  # a phase too short to bench fails here, before minutes of compilation
    return phases


def step_pair(cfg: Config, p: int) -> tuple[int, int]:
    """The first (even, odd) pair of training steps of phase p that share one gradient variant, neither being the
    untie step (recipe §1.11): alternating them runs the loop's Adam-every-other-step pattern (recipe §3.4) at the phase's
    shapes."""
    sched = cfg.schedule
    stage = schedule.stages(sched)[p]
    first, end = stage.first_step, stage.end_step
    where = f"--phase {p} ({stage.label}"
    if first >= end:
        raise ConfigError(f"{where}) has no training steps in config {cfg.name!r}: leave it out, or lengthen it "
                          f"(schedule.scheduled_steps, schedule.extension_steps)")
    untie = schedule.untie_step(sched)
    for even in range(first + first % 2, end - 1, 2):
        shapes = [schedule.step_shape(s, sched) for s in (even, even + 1)]
        if untie not in (even, even + 1) and engine.grad_key(shapes[0]) == engine.grad_key(shapes[1]):
            return even, even + 1
    raise ConfigError(
        f"{where}, steps {first} .. {end - 1}) has no even/odd pair of steps with one gradient variant "
        f"outside the untie step {untie}: leave it out, or lengthen the schedule (schedule.scheduled_steps, "
        f"schedule.extension_steps)"
    )


# ----------------------------------------------------------------------------------------------------------------------
# Compilation
# ----------------------------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def fresh_compilation_cache():
    """An empty persistent compilation cache in a temporary directory that takes every executable; the previous
    cache settings are restored on exit."""
    previous_dir = jax.config.jax_compilation_cache_dir
    previous_min_s = jax.config.jax_persistent_cache_min_compile_time_secs
    with tempfile.TemporaryDirectory(prefix="jaxrun-stepbench-cache-") as path:
        compilation_cache.set_cache_dir(path)
        compilation_cache.reset_cache()  # the cache is opened once per process; make it open this directory
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
        try:
            yield Path(path)
        finally:
            jax.config.update("jax_persistent_cache_min_compile_time_secs", previous_min_s)
            compilation_cache.set_cache_dir(previous_dir)
            compilation_cache.reset_cache()


def variants_to_compile(cfg: Config, opts: StepBenchOptions, phases: tuple[int, ...]) -> dict:
    """engine.compile_step_functions' steps and evals: everything a run compiles (the compile figures' meaning), or
    with benched_variants_only the benched step pairs' gradient and optimizer variants and no evaluation."""
    if not opts.benched_variants_only:
        return {}
    return {"steps": [s for p in phases for s in step_pair(cfg, p)], "evals": []}


def compile_cold_and_warm(session: engine.Session, lowering_threads: int = 1, **variants) -> tuple[engine.StepFunctions, dict]:
    """(the warm-compiled step functions, {cold_s, warm_s, lower_s, ...}); ``variants``: variants_to_compile. Cold:
    empty XLA and lowering caches (the latter only if the session has one); warm: the same two, as the cold compile
    left them, in a process whose in-memory caches are cleared, as a second start would find them."""
    with fresh_compilation_cache() as cache_dir, tempfile.TemporaryDirectory(prefix="jaxrun-stepbench-lowered-") as low:
        lowered = dataclasses.replace(session.lowering_cache, directory=low) if session.lowering_cache.directory else None
        jax.clear_caches()
        cold = engine.compile_step_functions(session, cache=lowered, lowering_threads=lowering_threads, **variants)
        cache_files = sum(1 for f in cache_dir.rglob("*") if f.is_file())
        jax.clear_caches()
        warm = engine.compile_step_functions(session, cache=lowered, lowering_threads=lowering_threads, **variants)
    return warm, {"cold_s": cold.seconds, "warm_s": warm.seconds, "lower_s": warm.lower_seconds,
                  "cold_lower_s": cold.lower_seconds, "variants": warm.counts(), "cache_files": cache_files,
                  "lowering_cache": warm.lowering_summary(), "cold_slowest": cold.slowest(),
                  "cold_timeline": {f"{k[0]} {k[1]}": list(v) for k, v in cold.timeline.items()}}


# ----------------------------------------------------------------------------------------------------------------------
# Timed steps
# ----------------------------------------------------------------------------------------------------------------------


def bench_phase(session: engine.Session, fns: engine.StepFunctions, state: dict, p: int, opts: StepBenchOptions,
                peak_tflops: float | None, announce=print) -> tuple[dict, dict]:
    """(the state after the phase's steps, the phase's figures). Each step is engine.train_step, the loop's own, on the
    configured shards; the state is donated step by step, as in training."""
    cfg, mesh = session.cfg, session.mesh
    pair = step_pair(cfg, p)
    shape = schedule.step_shape(pair[0], cfg.schedule)
    windows = (shape.window_short, shape.window_long)
    tokens_per_rank = shape.tokens_per_rank
    num_devices = mesh.devices.size
    group = engine.ranks_per_forward(cfg, tokens_per_rank, num_devices)
    announce(f"{phase_label(cfg, p)}: steps {'/'.join(map(str, pair))}, {opts.warmup} warm-up + {opts.steps} timed; "
             f"{group} rank(s) per forward ({group * tokens_per_rank:,} tokens)")

    def step(state, i):
        s = pair[i % 2]
        batch = engine.next_batch(session, s)
        state, loss = engine.train_step(session, fns, state, s, batch)
        return state, loss, batch["seg_ids"]

    for i in range(opts.warmup):
        state, loss, _ = step(state, i)
    jax.block_until_ready(state)
    seconds, seg_ids, losses = [], [], []
    for i in range(opts.warmup, opts.warmup + opts.steps):
        start = time.perf_counter()
        state, loss, seg = step(state, i)
        jax.block_until_ready((state, loss))
        seconds.append(time.perf_counter() - start)
        seg_ids.append(seg)
        losses.append(float(loss))

    # This process holds only its own ranks' rows; on several processes the others' are counted as alike.
    step_flops = [flops.train_step_flops(cfg.model, seg, windows) * cfg.data.num_ranks // seg.shape[0] for seg in seg_ids]
    total_s = sum(seconds)
    tokens_per_step = cfg.data.num_ranks * tokens_per_rank
    tflops = sum(step_flops) / total_s / 1e12
    figures = {
        "phase": p,
        "label": phase_label(cfg, p),
        "steps": list(pair),
        "tokens_per_rank": tokens_per_rank,
        "tokens_per_step": tokens_per_step,
        "ranks_per_forward": group,
        "windows": list(windows),
        "tied": shape.tied,
        "warmup_steps": opts.warmup,
        "timed_steps": opts.steps,
        "step_ms": [1e3 * s for s in seconds],
        "median_ms": 1e3 * statistics.median(seconds),
        "mean_ms": 1e3 * total_s / opts.steps,
        "tokens_per_s": tokens_per_step * opts.steps / total_s,
        "flops_per_step": step_flops,
        "tflops": tflops,
        "tflops_per_device": tflops / num_devices,
        "mfu": tflops / (peak_tflops * num_devices) if peak_tflops else None,
        "peak_memory_bytes": engine.peak_memory_bytes(mesh.local_devices),
        "train_losses": losses,
    }
    if opts.profile_dir:  # after the timed steps, so tracing never slows them
        traced_seg_ids = []
        with profiling.trace(Path(opts.profile_dir) / f"phase{p}") as trace_dir:
            for i in range(opts.warmup + opts.steps, opts.warmup + opts.steps + PROFILE_STEPS):
                state, loss, seg = step(state, i)
                traced_seg_ids.append(seg)
            jax.block_until_ready((state, loss))
        # the compiled HLO beside the trace: its stack frames say which function each fused kernel comes from; and the
        # traced steps' attention FLOPs (this process's rows), which the HLO does not give, for the attention's floors
        profiling.save_hlo(trace_dir, fns.grad[engine.grad_key(shape)].as_text(), [f.as_text() for f in fns.update.values()])
        profiling.save_attention_flops(trace_dir, sum(flops.attention_forward_flops(cfg.model, row, windows)
                                                      for seg in traced_seg_ids for row in seg))
        try:
            summary = profiling.summarize(trace_dir, PROFILE_STEPS)
        except ValueError as err:  # no device kernels in the trace (CPU): the trace is still there to open
            print(f"profile: {err}")
            figures["profile"] = {"trace": str(trace_dir), "error": str(err)}
        else:
            profiling.print_summary(summary, top=25)
            summary["by_source"] = profiling.attribute(summary, trace_dir)
            profiling.print_sources(summary, summary["by_source"])
            print("\n" + profiling.markdown_floors(summary, top=25))
            figures["profile"] = {k: v for k, v in summary.items() if k != "by_name"} | {"by_name": summary["by_name"][:40]}
    return state, figures


# ----------------------------------------------------------------------------------------------------------------------
# The benchmark
# ----------------------------------------------------------------------------------------------------------------------


def run_step_bench(cfg: Config, opts: StepBenchOptions, announce=print) -> dict:
    """Compile (cold and warm), then time every requested phase; returns the JSON-ready result (see print_report)."""
    phases = check_options(cfg, opts)
    reference = reference_step_ms(opts.compare_to, cfg) if opts.compare_to else None  # a bad log fails before compiling
    sharding.init_distributed()
    configured = dict(cfg.model.backends)
    session = engine.setup(cfg, devices=opts.devices, announce=announce)
    cfg, num_devices = session.cfg, session.num_devices
    device_kind = session.mesh.devices.flat[0].device_kind
    peak = flops.peak_tflops(device_kind)
    result = {
        "config": cfg.name,
        "device_kind": device_kind,
        "devices": num_devices,
        "processes": jax.process_count(),
        "jax": jax.__version__,
        "peak_tflops_per_device": peak,
        "backends": configured,
        "backends_resolved": dict(cfg.model.backends),
        "train_forward_tokens": cfg.model.train_forward_tokens,
        "forward_tokens_note": session.forward_tokens_note,
        "forward_plan": engine.forward_plan(cfg, num_devices),
        "options": dataclasses.asdict(opts) | {"phases": list(phases)},
    }
    if reference is not None:  # JSON keys are strings
        result["reference"] = {"log": opts.compare_to, "step_ms": {str(p): ms for p, ms in reference.items()},
                               "skip_steps": REFERENCE_SKIP_STEPS}
    peak_text = f"{peak:.0f} TFLOP/s bf16 dense per device" if peak else "unknown (MFU n/a)"
    announce(f"{num_devices} x {device_kind}, peak {peak_text}; "
             f"config {cfg.name}; backends {', '.join(f'{op}={b}' for op, b in result['backends_resolved'].items())}")
    announce(f"{session.forward_tokens_note}; per device: {'; '.join(result['forward_plan'])}")
    try:
        if opts.cold_compile:
            announce("compiling every step variant: cold (empty persistent cache), then warm (from it)")
            fns, result["compile"] = compile_cold_and_warm(session, opts.lowering_threads,
                                                           **variants_to_compile(cfg, opts, phases))
        else:
            announce("compiling every step variant once, through the usual persistent cache")
            engine.enable_compile_cache(cfg)
            fns = engine.compile_step_functions(session, lowering_threads=opts.lowering_threads,
                                                **variants_to_compile(cfg, opts, phases))
            result["compile"] = {"cold_s": None, "warm_s": None, "once_s": fns.seconds, "lower_s": fns.lower_seconds,
                                 "cache_files": None, "variants": fns.counts(), "lowering_cache": fns.lowering_summary()}
        announce(f"compile: {compile_summary(result['compile'])}")
        with engine.explained_oom("benchmarking the step", cfg, num_devices):
            state = engine.initial_state(session)
            result["phases"] = []
            for p in phases:
                state, figures = bench_phase(session, fns, state, p, opts, peak, announce)
                result["phases"].append(figures)
    finally:
        session.close()
    return result


# ----------------------------------------------------------------------------------------------------------------------
# Report and command line
# ----------------------------------------------------------------------------------------------------------------------

def _bench_json_step_ms(path: str, cfg: Config) -> dict:
    try:
        phases = json.loads(Path(path).read_text())["phases"]
        timed = {int(f["phase"]): (list(f["steps"]), float(f["median_ms"])) for f in phases}
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ConfigError(f"--compare-to {path}: not a `bench step --json` result ({type(err).__name__}: {err})") from err
    for p, (steps, _) in timed.items():
        ours = list(step_pair(cfg, p)) if 0 <= p < len(schedule.stages(cfg.schedule)) else None
        if steps != ours:
            raise ConfigError(f"--compare-to {path}: its phase {p} timed steps {steps}, config {cfg.name!r} would time "
                              f"{ours}: the schedules differ")
    return {p: ms for p, (_, ms) in sorted(timed.items())}


REFERENCE_SKIP_STEPS = 10  # a log's first steps include its own warm-up effects; GPU.md's reference figures skip them too


def reference_step_ms(path: str, cfg: Config) -> dict:
    """{phase index: median ms per step} of the training log at ``path`` (a PyTorch speedrun log, a jaxrun run folder or
    log.txt; jaxrun.logs reads them), from its per-step clock lines: each step's time is the difference of two
    consecutive readings (the clock excludes validation, recipe §6). Steps before REFERENCE_SKIP_STEPS are left out; a
    phase the log did not reach is absent. The log must follow this config's schedule (its phase boundaries).

    ``path`` may also be another ``bench step --json`` (say of the code before a change, run in the same lease): its
    per-phase medians, whose step pairs must be this config's."""
    from jaxrun.logs import LogError, read_group

    if path.endswith(".json"):
        return _bench_json_step_ms(path, cfg)

    try:
        runs = read_group(path).runs
    except LogError as err:
        raise ConfigError(f"--compare-to {path}: {err}") from err
    if len(runs) != 1 or not runs[0].step_steps:
        raise ConfigError(f"--compare-to {path}: needs one log with per-step lines (step:N/M train_time:...ms), "
                          f"found {len(runs)} run(s)" + ("" if not runs else f", {len(runs[0].step_steps)} step lines"))
    run = runs[0]
    if run.total_steps != cfg.schedule.total_steps:
        raise ConfigError(f"--compare-to {path}: its schedule has {run.total_steps} steps, config {cfg.name!r} "
                          f"{cfg.schedule.total_steps}: phases would not line up")
    per_phase: dict[int, list[float]] = {}
    readings = list(zip(run.step_steps, run.step_times_ms))
    for (s0, t0), (s1, t1) in zip(readings, readings[1:]):
        if s1 == s0 + 1 and s0 >= REFERENCE_SKIP_STEPS:  # step s0 (0-based) ran between the two readings
            per_phase.setdefault(schedule.phase(s0, cfg.schedule), []).append(t1 - t0)
    return {p: statistics.median(v) for p, v in sorted(per_phase.items())}


HEADER = (f"{'phase':10s} {'steps':>11s} {'tokens/step':>11s} {'windows':>10s} {'median ms':>10s} {'mean ms':>9s} "
          f"{'tokens/s':>11s} {'TFLOP/s':>8s} {'/device':>8s} {'MFU':>6s} {'peak MiB':>9s}")


def format_row(f: dict) -> str:
    mfu = f"{100 * f['mfu']:5.1f}%" if f["mfu"] is not None else f"{'n/a':>6s}"
    memory = f"{f['peak_memory_bytes'] / 2**20:9.0f}" if f["peak_memory_bytes"] is not None else f"{'n/a':>9s}"
    steps, windows = "{}/{}".format(*f["steps"]), "{}/{}".format(*f["windows"])
    return (f"{f['label']:10s} {steps:>11s} {f['tokens_per_step']:11,d} {windows:>10s} {f['median_ms']:10.2f} "
            f"{f['mean_ms']:9.2f} {f['tokens_per_s']:11,.0f} {f['tflops']:8.2f} {f['tflops_per_device']:8.2f} "
            f"{mfu} {memory}")


def compile_summary(c: dict) -> str:
    """How the step functions compiled: cold then warm (``result["compile"]`` of a default run), or once (--skip-cold)."""
    lowering = f"; lowering (tracing, sequential) {c['lower_s']:.1f} s of it" if c.get("lower_s") is not None else ""
    lowering += f" ({c['lowering_cache']})" if c.get("lowering_cache") else ""
    if c["cold_s"] is None:
        return f"{c['once_s']:.1f} s through the usual persistent cache{lowering}"
    cold_lowering = f", lowering {c['cold_lower_s']:.1f} s of it" if c.get("cold_lower_s") is not None else ""
    slowest = f"; last to finish cold: {c['cold_slowest']}" if c.get("cold_slowest") else ""
    return (f"cold {c['cold_s']:.1f} s{cold_lowering}, warm {c['warm_s']:.1f} s ({c['cache_files']} cache files)"
            + lowering.replace(" of it", " of the warm one") + slowest)


def print_report(result: dict) -> None:
    c, v = result["compile"], result["compile"]["variants"]
    print(f"\n{result['config']} on {result['devices']} x {result['device_kind']} (jax {result['jax']}); compile "
          f"{v['grad']} grad + {v['update']} update + {v['eval']} eval + {v.get('untie', 0)} untie variants: {compile_summary(c)}")
    ref = result.get("reference")
    print(HEADER + (f" {'ref ms':>9s} {'ratio':>6s}" if ref else ""))
    for figures in result["phases"]:
        row = format_row(figures)
        if ref:
            ms = ref["step_ms"].get(str(figures["phase"]))
            row += f" {ms:9.2f} {figures['median_ms'] / ms:6.3f}" if ms else f" {'n/a':>9s} {'n/a':>6s}"
        print(row)
    if ref:
        what = ("its timed steps" if ref["log"].endswith(".json") else f"steps from {REFERENCE_SKIP_STEPS} on")
        print(f"(ref: median ms per step of {ref['log']} in each phase, {what}; ratio = jaxrun median / ref; compare "
              f"only figures measured on the same GPU in one sitting)")
    print("(times per optimizer step, each synchronised; TFLOP/s over all devices (recipe §9 count); peak memory since "
          "the process started)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="config file (default: configs/tiny.py, the CPU default)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config field (repeatable)")
    parser.add_argument("--phase", type=int, action="append",
                        help="0, 1, 2 = the scheduled phases, 3 = the extension (repeatable; default: all)")
    parser.add_argument("--steps", type=int, default=StepBenchOptions.steps, help="timed steps per phase")
    parser.add_argument("--warmup", type=int, default=StepBenchOptions.warmup, help="untimed steps per phase first")
    parser.add_argument("--devices", type=int, help="use the first N local devices (default: all)")
    parser.add_argument("--json", help="write the environment, compile times and per-phase figures here")
    parser.add_argument("--skip-cold", action="store_true",
                        help="compile once through the usual persistent cache instead of cold and then warm")
    parser.add_argument("--benched-variants-only", action="store_true",
                        help="compile only the benched phases' gradient and optimizer variants (no evaluation, no "
                             "untie): a quicker bench, whose compile figures then cover only those")
    parser.add_argument("--lowering-threads", type=int, default=StepBenchOptions.lowering_threads,
                        help="lower this many step variants at once (default: one after another, as training does)")
    parser.add_argument("--compare-to", metavar="LOG", help="a training log of the same schedule (the PyTorch record's, "
                        "or a jaxrun run), or another bench step --json (e.g. of the code before a change): print its "
                        "median step time per phase and jaxrun's ratio to it")
    parser.add_argument("--profile", metavar="DIR", help=f"after timing, trace {PROFILE_STEPS} more steps of each phase "
                        "into DIR/phase<N> and print where the device time goes (jaxrun.profiling); the whole run is "
                        "then without CUDA graphs (XLA_FLAGS gets --xla_gpu_enable_command_buffer=, so each kernel "
                        "names its HLO instruction), so its timed steps are not the shipped ones")


def command(args: argparse.Namespace, parser: argparse.ArgumentParser, environment: dict) -> dict:
    """Run the step benchmark for parsed arguments; a bad option or config exits through parser.error (status 2), a
    data or memory problem with its message (status 1)."""
    if args.lowering_threads < 1:
        parser.error(f"--lowering-threads must be at least 1, got {args.lowering_threads}")
    opts = StepBenchOptions(phases=tuple(args.phase) if args.phase else None, steps=args.steps, warmup=args.warmup,
                            devices=args.devices, profile_dir=args.profile, cold_compile=not args.skip_cold,
                            compare_to=args.compare_to, benched_variants_only=args.benched_variants_only,
                            lowering_threads=args.lowering_threads)
    try:
        result = run_step_bench(load_config(args.config, args.overrides), opts)
    except ConfigError as err:
        parser.error(str(err))
    except (data_lib.DataError, engine.OutOfMemory) as err:
        raise SystemExit(f"error: {err}") from err
    print_report(result)
    return {"environment": environment, **result}
