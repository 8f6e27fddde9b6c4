"""`python -m jaxrun.compare`: jaxrun runs side by side with the PyTorch speedrun logs.

    python -m jaxrun.compare runs/<name> record60                # one group per argument
    python -m jaxrun.compare 'runs/sweep*' single_gpu --reach 4.0 3.5 3.28 --json
    python -m jaxrun.compare fp8='runs/fp8_s*' bf16='runs/bf16_s*' torch=train_gpt.log   # LABEL=... names a group

Each argument is one group (jaxrun.logs.read_group: a run directory, a folder of runs, a glob, a raw PyTorch log, a CSV
extract, or a shipped reference name; mixed freely). Per group the table gives: the number of runs, the final
validation loss (mean ± std over finished runs) with the speedrun's one-sided t-test against the target, the training
time, step_avg per phase of the schedule, peak memory, and when each loss level is first reached.

The curve table compares the groups where runs stop early too: at every validation step that the first group and at
least one other have (in at least one run each), each group's mean ± std (n), its difference from the first group and Welch's t-test p of that
difference; steps where p < 0.01 are flagged. Plots of validation loss against step (each group's mean with a ±1 std
band where it has 2+ runs) and against training time go to --out (runs/compare/ by default).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.stats

from jaxrun import schedule
from jaxrun.config import CONFIG_DIR, Config, ScheduleConfig, config_from_file
from jaxrun.logs import Group, LogError, LoggedRun, read_group

RECORD_CONFIG = CONFIG_DIR / "record60.py"
DEFAULT_OUT = Path("runs") / "compare"
EXTRA_REACH_LEVELS = (4.0, 3.5)  # milestones of the curve shown besides the target; any levels can be given instead
PLOT_FILES = ("val_loss_vs_step.png", "val_loss_vs_time.png")
FLAG_P = 0.01  # the curve table flags differences with a Welch p below this


@dataclass(frozen=True)
class Reach:
    step: float
    time_ms: float


def phase_bounds(cfg_schedule: ScheduleConfig) -> tuple[int, ...]:
    """First step of phases 2 .. n and of the extension: phase k holds the steps with int(n * s / scheduled) = k - 1."""
    return schedule.phase_starts(cfg_schedule)[1:]


def check_bounds(bounds: tuple[int, ...]) -> tuple[int, ...]:
    if not bounds or bounds[0] <= 0 or any(b <= a for a, b in zip(bounds, bounds[1:])):
        raise ValueError(f"phase boundaries must be positive and increasing, got {' '.join(map(str, bounds))}")
    return bounds


def phase_names(num_bounds: int) -> list[str]:
    """The last segment, from the last boundary to the end, is the extension (recipe §4)."""
    return [schedule.stage_label(k, num_bounds) for k in range(num_bounds + 1)]


def clock_readings(run: LoggedRun, source: str = "auto") -> tuple[np.ndarray, np.ndarray, str]:
    """(steps completed, train_time ms) of a run: the per-step lines where the log has them, else the validation lines.

    The clock starts at 0 before step 0, so (0, 0) is a reading too.
    """
    if source == "auto" and run.step_steps:
        steps, times, name = run.step_steps, run.step_times_ms, "step lines"
    else:
        steps, times, name = run.val_steps, run.val_times_ms, "val lines"
    if steps[0] != 0:
        steps, times = (0, *steps), (0.0, *times)
    return np.asarray(steps, dtype=np.int64), np.asarray(times, dtype=np.float64), name


def phase_step_avgs(steps: np.ndarray, times_ms: np.ndarray, bounds: tuple[int, ...], total_steps: int) -> list[float | None]:
    """Mean time per step (ms) in each phase and the extension, from cumulative clock readings.

    A phase [a, b) is measured between the first and last readings inside [a, b] (the clock reading after b steps
    closes it); with fewer than two readings there it is None.
    """
    edges = (0, *bounds, total_steps)
    out = []
    for a, b in zip(edges, edges[1:]):
        inside = (steps >= a) & (steps <= min(b, total_steps))
        if a >= total_steps or inside.sum() < 2:
            out.append(None)
            continue
        s, t = steps[inside], times_ms[inside]
        out.append(float((t[-1] - t[0]) / (s[-1] - s[0])))
    return out


def first_reach(steps, losses, times_ms, level: float) -> Reach | None:
    """Step and time at which the validation loss first reaches `level` (<=), linearly interpolated between the
    validation point before and the one at or below it; None when no validation point gets there."""
    points = [(s, v, t) for s, v, t in zip(steps, losses, times_ms) if math.isfinite(v)]
    for i, (s, v, t) in enumerate(points):
        if v <= level:
            if i == 0:
                return Reach(float(s), float(t))
            s0, v0, t0 = points[i - 1]
            frac = (v0 - level) / (v0 - v)
            return Reach(s0 + frac * (s - s0), t0 + frac * (t - t0))
    return None


def p_value_below(losses: list[float], target: float) -> float | None:
    """The speedrun's rule: one-sided t-test that the mean final loss is below the target; None for < 2 runs or
    identical losses, where the test is undefined."""
    if len(losses) < 2 or np.std(losses) == 0:
        return None
    return float(scipy.stats.ttest_1samp(losses, target, alternative="less").pvalue)


def _mean_std(values: list[float]) -> dict:
    return {
        "mean": float(np.mean(values)) if values else None,
        "std": float(np.std(values, ddof=1)) if len(values) > 1 else None,
        "values": [float(v) for v in values],
    }


def _p_value_note(finished: int, losses: list[float]) -> str | None:
    if finished == 0:
        return "no finished run"
    if finished == 1:
        return "1 run: a t-test needs 2 or more"
    if np.std(losses) == 0:
        return "identical losses"
    return None


def summarize(group: Group, target: float, reach_levels: tuple[float, ...], bounds: tuple[int, ...] | None,
              default_bounds: tuple[int, ...], step_avg_from: str = "auto") -> dict:
    """The table column of one group, as plain JSON-ready values (None where a figure does not exist).

    `bounds` (from the command line) applies to every run; without it a jaxrun run uses its own config's schedule and
    any other run `default_bounds` (the record's).
    """
    finished = [r for r in group.runs if r.finished]
    losses = [r.final_loss for r in finished]
    run_bounds = [bounds or (phase_bounds(r.schedule) if r.schedule else default_bounds) for r in group.runs]
    per_run_avgs, sources = [], set()
    for run, b in zip(group.runs, run_bounds):
        steps, times, source = clock_readings(run, step_avg_from)
        sources.add(source)
        per_run_avgs.append(phase_step_avgs(steps, times, b, run.total_steps))
    step_avg = []
    for k, name in enumerate(phase_names(max(len(b) for b in run_bounds))):
        values = [avgs[k] for avgs in per_run_avgs if k < len(avgs) and avgs[k] is not None]
        step_avg.append({"phase": name, "runs": len(values), **_mean_std(values)})
    reach = []
    for level in reach_levels:
        hits = [first_reach(r.val_steps, r.val_losses, r.val_times_ms, level) for r in group.runs]
        hits = [h for h in hits if h is not None]
        reach.append({
            "loss": level,
            "runs_reached": len(hits),
            "step": float(np.mean([h.step for h in hits])) if hits else None,
            "time_s": float(np.mean([h.time_ms for h in hits])) / 1000 if hits else None,
        })
    allocated = [r.peak_allocated_mib for r in group.runs if r.peak_allocated_mib is not None]
    reserved = [r.peak_reserved_mib for r in group.runs if r.peak_reserved_mib is not None]
    return {
        "label": group.label,
        "runs": [{"name": r.name, "source": r.source, "finished": r.finished, "last_step": r.val_steps[-1],
                  "total_steps": r.total_steps, "final_val_loss": r.final_loss, "train_time_s": r.final_time_ms / 1000}
                 for r in group.runs],
        "num_runs": len(group.runs),
        "num_finished": len(finished),
        "target": target,
        "final_val_loss": _mean_std(losses),
        "p_value": p_value_below(losses, target),
        "p_value_note": _p_value_note(len(finished), losses),
        "train_time_s": _mean_std([r.final_time_ms / 1000 for r in finished]),
        "phase_bounds": [list(b) for b in sorted(set(run_bounds))],
        "step_avg_source": " + ".join(sorted(sources)),
        "step_avg_ms": step_avg,
        "peak_allocated_mib": max(allocated) if allocated else None,
        "peak_reserved_mib": max(reserved) if reserved else None,
        "reach": reach,
    }


def welch_p(a: list[float], b: list[float]) -> float | None:
    """Two-sided Welch t-test p of mean(a) != mean(b); None where it is undefined (a group of one run, or no spread in
    either group)."""
    if len(a) < 2 or len(b) < 2 or (np.std(a) == 0 and np.std(b) == 0):
        return None
    return float(scipy.stats.ttest_ind(a, b, equal_var=False).pvalue)


def _losses_by_step(group: Group) -> dict[int, list[float]]:
    """step -> the finite validation losses of the group's runs that validated there."""
    at: dict[int, list[float]] = {}
    for run in group.runs:
        for step, loss in zip(run.val_steps, run.val_losses):
            if math.isfinite(loss):
                at.setdefault(step, []).append(loss)
    return at


def curve_table(groups: list[Group]) -> list[dict]:
    """Per validation step that the first group and at least one other have (the first group alone where it is the
    only one): each group's losses there (mean, std, n; n = 0 where it has none), and for groups 2.. their difference
    from group 1 with Welch's p and whether p < FLAG_P. Runs that stopped early count at the steps they reached, so
    groups of different lengths compare over the steps they share."""
    by_group = [_losses_by_step(group) for group in groups]
    if not by_group:
        return []
    steps = set(by_group[0])
    if len(by_group) > 1:
        steps &= set.union(*(set(at) for at in by_group[1:]))
    rows = []
    for step in sorted(steps):
        stats = [{"label": g.label, "n": len(at.get(step, [])), **_mean_std(at.get(step, []))}
                 for g, at in zip(groups, by_group)]
        base = by_group[0][step]
        for st, at in zip(stats[1:], by_group[1:]):
            if step not in at:
                st.update(diff=None, p=None, flagged=False)
                continue
            p = welch_p(at[step], base)
            st.update(diff=st["mean"] - stats[0]["mean"], p=p, flagged=p is not None and p < FLAG_P)
        rows.append({"step": step, "groups": stats})
    return rows


def format_curve_table(rows: list[dict]) -> str:
    if not rows:
        return "curve: the groups share no validation step"
    labels = [g["label"] for g in rows[0]["groups"]]
    header = ["step"] + [f"{labels[0]} mean ± std (n)"]
    for label in labels[1:]:
        header += [f"{label} mean ± std (n)", f"{label} - {labels[0]}", "Welch p"]
    body = []
    for row in rows:
        g0, others = row["groups"][0], row["groups"][1:]
        cells = [str(row["step"]), f"{_fmt(g0, 4)} ({g0['n']})"]
        for g in others:
            if g["n"] == 0:  # this group did not validate at this step
                cells += ["—", "—", "—"]
                continue
            p = "n/a" if g["p"] is None else f"{g['p']:.3g}" + (" *" if g["flagged"] else "")
            cells += [f"{_fmt(g, 4)} ({g['n']})", f"{g['diff']:+.4f}", p]
        body.append(cells)
    widths = [max(len(r[i]) for r in [header] + body) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in [header] + body]
    if len(labels) > 1:
        lines.append(f"* the difference from {labels[0]} has Welch p < {FLAG_P}; n/a: a group of one run or no spread;"
                     " —: the group did not validate at that step")
    return "\n".join(lines)


def _fmt(stats: dict, digits: int) -> str:
    if stats["mean"] is None:
        return "n/a"
    text = f"{stats['mean']:.{digits}f}"
    return text if stats["std"] is None else f"{text} ± {stats['std']:.{digits}f}"


def _cells(summary: dict) -> list[tuple[str, str]]:
    s = summary
    unfinished = s["num_runs"] - s["num_finished"]
    rows = [
        ("runs", f"{s['num_runs']}" + (f" ({unfinished} unfinished: see the curve table)" if unfinished else "")),
        ("final val loss", _fmt(s["final_val_loss"], 4)),
        (f"p(mean < {s['target']})", f"{s['p_value']:.4f}" if s["p_value"] is not None else f"n/a ({s['p_value_note']})"),
        ("train time (s)", _fmt(s["train_time_s"], 2)),
        ("phase boundaries", " | ".join(" ".join(map(str, b)) for b in s["phase_bounds"])),
        ("step_avg from", s["step_avg_source"]),
    ]
    for phase in s["step_avg_ms"]:
        rows.append((f"step_avg {phase['phase']} (ms)", _fmt(phase, 2)))
    rows.append(("peak allocated (MiB)", "n/a" if s["peak_allocated_mib"] is None else str(s["peak_allocated_mib"])))
    rows.append(("peak reserved (MiB)", "n/a" if s["peak_reserved_mib"] is None else str(s["peak_reserved_mib"])))
    for r in s["reach"]:
        some = "" if r["runs_reached"] == s["num_runs"] else f" ({r['runs_reached']}/{s['num_runs']} runs)"
        reached = r["runs_reached"] > 0
        rows.append((f"reach {r['loss']}: step", f"{r['step']:.0f}{some}" if reached else "not reached"))
        rows.append((f"reach {r['loss']}: time (s)", f"{r['time_s']:.2f}" if reached else "not reached"))
    return rows


def format_table(summaries: list[dict]) -> str:
    """Rows = figures, one column per group."""
    columns = [dict(_cells(s)) for s in summaries]
    row_names = list(dict.fromkeys(name for s in summaries for name, _ in _cells(s)))
    header = [""] + [s["label"] for s in summaries]
    body = [[name] + [col.get(name, "") for col in columns] for name in row_names]
    widths = [max(len(row[i]) for row in [header] + body) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in [header] + body)


def plot_groups(groups: list[Group], out_dir: Path, target: float) -> list[Path]:
    """Validation loss against step and against training time, every run drawn, one colour per group. The right panel
    zooms on the losses below those at the runs' half-way validation, where groups differ by hundredths."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    out_dir.mkdir(parents=True, exist_ok=True)
    x_axes = (("step", lambda r: np.asarray(r.val_steps, float)), ("training time (s)", lambda r: np.asarray(r.val_times_ms) / 1000))
    runs = [r for g in groups for r in g.runs]
    finite = [v for r in runs for v in r.val_losses if math.isfinite(v)]
    zoom_low = min(finite + [target])
    halfway = [(r, i) for r in runs if (i := _halfway_index(r)) is not None]
    halfway_losses = [r.val_losses[i] for r, i in halfway if math.isfinite(r.val_losses[i])]
    zoom_high = max((halfway_losses or finite) + [target])
    pad = 0.03 * (zoom_high - zoom_low) or 0.01
    paths = []
    for (xlabel, x_of), filename in zip(x_axes, PLOT_FILES):
        fig = Figure(figsize=(12, 4.5))
        FigureCanvasAgg(fig)
        full, zoom = fig.subplots(1, 2)
        for colour, group in zip(_colours(len(groups)), groups):
            band = _spread(group) if xlabel == "step" else None
            for i, run in enumerate(group.runs):
                label = f"{group.label} ({len(group.runs)} run{'s' * (len(group.runs) > 1)})" if i == 0 else None
                for ax in (full, zoom):
                    ax.plot(x_of(run), run.val_losses, "o-", color=colour, alpha=0.7 if band is None else 0.35, lw=1,
                            ms=2.5, label=label)
            if band is not None:  # the group's mean and a ±1 std band over its runs
                steps, mean, std = band
                for ax in (full, zoom):
                    ax.plot(steps, mean, "-", color=colour, lw=2)
                    ax.fill_between(steps, mean - std, mean + std, color=colour, alpha=0.2, lw=0)
        for ax, title in ((full, "validation loss"), (zoom, "final approach")):
            ax.axhline(target, color="grey", ls="--", lw=1)
            ax.set_xlabel(xlabel)
            ax.set_ylabel("validation loss")
            ax.set_title(title)
            ax.grid(alpha=0.3)
        zoom.set_ylim(zoom_low - pad, zoom_high + pad)
        starts = [x_of(r)[i] for r, i in halfway]
        x_max = max(x_of(r)[-1] for r in runs)
        if starts and min(starts) < x_max:
            zoom.set_xlim(min(starts) - 0.02 * x_max, x_max * 1.02)
        full.legend(fontsize=8)
        fig.tight_layout()
        path = out_dir / filename
        fig.savefig(path, dpi=110)
        paths.append(path)
    return paths


def _spread(group: Group):
    """(steps, mean, std) of a group's validation losses at the steps where 2+ of its runs validated; None if none."""
    at = _losses_by_step(group)
    steps = sorted(s for s, v in at.items() if len(v) > 1)
    if not steps:
        return None
    return (np.asarray(steps, float), np.asarray([np.mean(at[s]) for s in steps]),
            np.asarray([np.std(at[s], ddof=1) for s in steps]))


def _halfway_index(run: LoggedRun) -> int | None:
    """Index of the run's first validation at or past half the steps it ran (a run stopped early zooms on its own
    second half)."""
    i = int(np.searchsorted(run.val_steps, run.val_steps[-1] / 2))
    return i if i < len(run.val_steps) else None


def _colours(n: int) -> list:
    from matplotlib import colormaps

    cmap = colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(n)]


def build_parser(record: Config, default_bounds: tuple[int, ...]) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m jaxrun.compare", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("groups", nargs="+", metavar="[LABEL=]RUN_OR_LOG",
                   help="one group each: runs/<name>, a log.txt / .txt / .csv, a folder of runs, a quoted glob, or a shipped "
                        "reference (record60, single_gpu, record59_single_gpu_run, ...); LABEL= names the group")
    p.add_argument("--target", type=float, default=record.run.target_val_loss,
                   help="loss the t-test compares the mean final loss with (default %(default)s)")
    p.add_argument("--reach", type=float, nargs="+", metavar="LOSS",
                   help=f"loss levels to report the first step/time for (default: {' '.join(map(str, EXTRA_REACH_LEVELS))} and the target)")
    p.add_argument("--phase-bounds", type=int, nargs="+", metavar="STEP",
                   help=f"first step of phase 2, 3, ... and of the extension (default: a jaxrun run's own config, else the "
                        f"record's {' '.join(map(str, default_bounds))})")
    p.add_argument("--step-avg-from", choices=("auto", "val"), default="auto",
                   help="auto: per-step lines where a log has them, else validation lines; val: validation lines for every run "
                        "(like for like against CSV extracts)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="folder for the plots and compare.json (default %(default)s)")
    p.add_argument("--json", action="store_true", help="also write the table as compare.json in --out")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    return p


def labelled_group(arg: str) -> Group:
    """`LABEL=SOURCE` reads SOURCE and names the group LABEL in the tables and plots; a plain SOURCE is its own label.
    LABEL is a bare name (no '/'), so a path that contains '=' still reads as a path."""
    label, sep, source = arg.partition("=")
    if sep and label and "/" not in label and source:
        return dataclasses.replace(read_group(source), label=label)
    return read_group(arg)


def main(argv: list[str] | None = None) -> int:
    record = config_from_file(RECORD_CONFIG)
    default_bounds = phase_bounds(record.schedule)
    parser = build_parser(record, default_bounds)
    args = parser.parse_args(argv)
    levels = tuple(args.reach) if args.reach else (*EXTRA_REACH_LEVELS, args.target)
    if not all(math.isfinite(v) for v in (args.target, *levels)):
        parser.error("--target and --reach need finite numbers")
    try:
        bounds = check_bounds(tuple(args.phase_bounds)) if args.phase_bounds else None
    except ValueError as e:
        parser.error(f"--phase-bounds: {e} (the record's: {' '.join(map(str, default_bounds))})")
    try:
        groups = [labelled_group(arg) for arg in args.groups]
    except LogError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    summaries = [summarize(g, args.target, levels, bounds, default_bounds, args.step_avg_from) for g in groups]
    curve = curve_table(groups)
    print(format_table(summaries))
    print()
    print(format_curve_table(curve))
    if not args.no_plots:
        for path in plot_groups(groups, args.out, args.target):
            print(f"wrote {path}")
    if args.json:
        args.out.mkdir(parents=True, exist_ok=True)
        path = args.out / "compare.json"
        path.write_text(json.dumps({"groups": summaries, "curve": curve}, indent=2) + "\n")
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
