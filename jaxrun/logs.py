"""Read training logs in the speedrun's line format, from jaxrun runs and from the published PyTorch runs.

The format is the reference's (recipe §6), rank 0 only; jaxrun.train writes the same lines:

    step:{s}/{N} val_loss:{loss:.4f} train_time:{ms:.0f}ms step_avg:{ms/max(s,1):.2f}ms   validation after s steps
    step:{s}/{N} train_time:{ms:.0f}ms step_avg:{ms/s:.2f}ms                                after training step s-1
    peak memory allocated: {A} MiB reserved: {B} MiB                                       at the end

Readable inputs: a jaxrun run directory (``runs/<name>/`` with ``log.txt`` and ``config.json``), a ``log.txt``, a raw
published PyTorch log (its source code, a line of 100 '=', versions and nvidia-smi, another '=' line, then the log), a
CSV extract of the validation lines (``step,total_steps,val_loss,train_time_ms,step_avg_ms``), and the shipped
reference extracts by name (``record60``, ``single_gpu``, ``record59_single_gpu_run``, ...; jaxrun/assets/reference/).
"""

from __future__ import annotations

import csv
import glob
import json
import re
import warnings
from dataclasses import dataclass, replace
from pathlib import Path

from jaxrun.config import ConfigError, ScheduleConfig, from_dict

REFERENCE_DIR = Path(__file__).resolve().parent / "assets" / "reference"
RUN_LOG_NAME = "log.txt"  # inside runs/<name>/
RUN_CONFIG_NAME = "config.json"
CSV_COLUMNS = ("step", "total_steps", "val_loss", "train_time_ms", "step_avg_ms")
# Per-folder figures that a CSV extract cannot hold: {"<csv stem>": {"allocated_mib": A, "reserved_mib": B}}.
PEAK_MEMORY_NAME = "peak_memory.json"
# The published logs print the source code first; the log proper follows the last line of 100 '='. Track-1 logs have
# 2 to 4 such lines (older records print another block of data-loader lines between two of them), the log always last.
SEPARATOR = "=" * 100

# Anchored at the start of a line: the source code above the log holds these strings inside indented f-strings.
_VAL_LINE = re.compile(r"step:(\d+)/(\d+) val_loss:(\S+) train_time:(\d+(?:\.\d*)?)ms step_avg:\S+ms")
# Old records also print the training loss on each step line.
_STEP_LINE = re.compile(r"step:(\d+)/(\d+)(?: train_loss:\S+)? train_time:(\d+(?:\.\d*)?)ms step_avg:\S+ms")
_PEAK_LINE = re.compile(r"peak memory allocated: (\d+) MiB reserved: (\d+) MiB")
_OLD_PEAK_LINE = re.compile(r"peak memory consumption: (\d+) MiB")  # records before 2025 print the allocated peak only


class LogError(ValueError):
    """A log that cannot be read; the message names the file and what was expected."""


@dataclass(frozen=True)
class LoggedRun:
    """One training run: its validation points, per-step clock readings and peak memory."""

    name: str
    source: str
    total_steps: int
    val_steps: tuple[int, ...]  # steps completed before each validation, increasing
    val_losses: tuple[float, ...]
    val_times_ms: tuple[float, ...]  # train_time of each validation line (clock stopped, after a sync)
    step_steps: tuple[int, ...] = ()  # steps completed, from the per-step lines (absent in CSV extracts)
    step_times_ms: tuple[float, ...] = ()
    peak_allocated_mib: int | None = None
    peak_reserved_mib: int | None = None
    schedule: ScheduleConfig | None = None  # a jaxrun run's own schedule (config.json), for its phase boundaries

    @property
    def finished(self) -> bool:
        return self.val_steps[-1] == self.total_steps

    @property
    def final_loss(self) -> float:
        return self.val_losses[-1]

    @property
    def final_time_ms(self) -> float:
        return self.val_times_ms[-1]


@dataclass(frozen=True)
class Group:
    """The runs named by one command-line argument."""

    label: str
    runs: tuple[LoggedRun, ...]


def _number(text: str, source: str, lineno: int) -> float:
    try:
        return float(text)
    except ValueError:
        raise LogError(f"{source}:{lineno}: {text!r} is not a number") from None


def _check_total(totals: set[int], source: str) -> int:
    if len(totals) > 1:
        raise LogError(f"{source}: lines of runs with different step counts ({', '.join(map(str, sorted(totals)))}); keep one run per file")
    return totals.pop()


def parse_log_text(text: str, name: str, source: str) -> LoggedRun:
    """Read a jaxrun log or a raw published PyTorch log (only what follows the last '=' separator line counts)."""
    lines = text.splitlines()
    separators = [i for i, line in enumerate(lines) if line.rstrip() == SEPARATOR]
    start = separators[-1] + 1 if separators else 0
    val: dict[int, tuple[float, float]] = {}
    steps: dict[int, float] = {}
    totals: set[int] = set()
    peak = (None, None)
    for lineno, raw in enumerate(lines[start:], start + 1):
        line = raw.rstrip()
        if m := _VAL_LINE.fullmatch(line):
            totals.add(int(m[2]))
            # A resumed run may repeat steps: the later line is the one that counts.
            val[int(m[1])] = (_number(m[3], source, lineno), _number(m[4], source, lineno))
        elif m := _STEP_LINE.fullmatch(line):
            totals.add(int(m[2]))
            steps[int(m[1])] = _number(m[3], source, lineno)
        elif m := _PEAK_LINE.fullmatch(line):
            peak = (int(m[1]), int(m[2]))
        elif m := _OLD_PEAK_LINE.fullmatch(line):
            peak = (int(m[1]), None)
    if not val:
        where = f" after the last line of 100 '=' (line {start})" if separators else ""
        raise LogError(
            f"{source}: no validation lines ('step:S/N val_loss:X train_time:Tms step_avg:Ams'){where}; "
            "expected a jaxrun log.txt, a published speedrun log or a CSV extract"
        )
    val_steps = sorted(val)
    step_steps = sorted(steps)
    return LoggedRun(
        name=name,
        source=source,
        total_steps=_check_total(totals, source),
        val_steps=tuple(val_steps),
        val_losses=tuple(val[s][0] for s in val_steps),
        val_times_ms=tuple(val[s][1] for s in val_steps),
        step_steps=tuple(step_steps),
        step_times_ms=tuple(steps[s] for s in step_steps),
        peak_allocated_mib=peak[0],
        peak_reserved_mib=peak[1],
    )


def _peak_memory_of(csv_path: Path) -> tuple[int | None, int | None]:
    table_path = csv_path.parent / PEAK_MEMORY_NAME
    if not table_path.is_file():
        return None, None
    try:
        entry = json.loads(table_path.read_text()).get(csv_path.stem)
        return (None, None) if entry is None else (int(entry["allocated_mib"]), int(entry["reserved_mib"]))
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise LogError(f'{table_path}: expected {{"<csv name>": {{"allocated_mib": A, "reserved_mib": B}}, ...}} ({e!r})') from None


def read_csv_extract(path: Path) -> LoggedRun:
    with path.open(newline="") as f:
        reader = csv.reader(f)
        header = tuple(next(reader, ()))
        if header != CSV_COLUMNS:
            raise LogError(f"{path}: header {','.join(header) or '(empty file)'!r} is not the CSV extract's {','.join(CSV_COLUMNS)!r}")
        rows = [(lineno, row) for lineno, row in enumerate(reader, 2) if row]
    if not rows:
        raise LogError(f"{path}: a CSV extract with a header but no validation rows")
    for lineno, row in rows:
        if len(row) != len(CSV_COLUMNS):
            raise LogError(f"{path}:{lineno}: expected {len(CSV_COLUMNS)} columns ({','.join(CSV_COLUMNS)}), got {len(row)}")
    val = {int(_number(r[0], str(path), n)): (_number(r[2], str(path), n), _number(r[3], str(path), n)) for n, r in rows}
    steps = sorted(val)
    allocated, reserved = _peak_memory_of(path)
    return LoggedRun(
        name=path.stem,
        source=str(path),
        total_steps=_check_total({int(_number(r[1], str(path), n)) for n, r in rows}, str(path)),
        val_steps=tuple(steps),
        val_losses=tuple(val[s][0] for s in steps),
        val_times_ms=tuple(val[s][1] for s in steps),
        peak_allocated_mib=allocated,
        peak_reserved_mib=reserved,
    )


def _run_schedule(run_dir: Path) -> ScheduleConfig | None:
    config_path = run_dir / RUN_CONFIG_NAME
    if not config_path.is_file():
        return None
    try:
        return from_dict(json.loads(config_path.read_text())).schedule
    except (json.JSONDecodeError, ConfigError, KeyError, TypeError) as e:
        warnings.warn(f"{config_path}: unreadable ({e!r}); its run gets the default phase boundaries", stacklevel=2)
        return None


def read_run(path: str | Path) -> LoggedRun:
    """One run: a run directory (``log.txt`` inside), a log file (.txt / .log) or a CSV extract (.csv)."""
    path = Path(path)
    if path.is_dir():
        if not (path / RUN_LOG_NAME).is_file():
            raise LogError(f"{path}: a run directory needs a {RUN_LOG_NAME} (written by python -m jaxrun.train)")
        path = path / RUN_LOG_NAME
    if not path.is_file():
        raise LogError(f"{path}: no such file or directory")
    if path.suffix == ".csv":
        return read_csv_extract(path)
    text = path.read_text(errors="replace")
    if path.name == RUN_LOG_NAME:  # a jaxrun run: named after its folder, phase boundaries from its own config
        return replace(parse_log_text(text, path.parent.name, str(path)), schedule=_run_schedule(path.parent))
    return parse_log_text(text, path.stem, str(path))


def _logs_in(directory: Path) -> list[Path]:
    """The runs of a folder: sub-folders with a log.txt, then *.txt / *.log / *.csv files, in sorted order."""
    run_dirs = sorted(p for p in directory.iterdir() if p.is_dir() and (p / RUN_LOG_NAME).is_file())
    files = sorted(p for p in directory.iterdir() if p.is_file() and p.suffix in (".txt", ".log", ".csv"))
    return run_dirs + files


def _references() -> dict[str, list[Path]]:
    """Shipped references by name: each folder is a group, each CSV stem one run."""
    refs = {p.name: _logs_in(p) for p in sorted(REFERENCE_DIR.iterdir()) if p.is_dir()}
    refs.update({p.stem: [p] for p in sorted(REFERENCE_DIR.glob("*/*.csv"))})
    return refs


def reference_names() -> list[str]:
    return list(_references())


def read_group(arg: str) -> Group:
    """The runs one argument names: a path (a run directory is one run, another folder all runs in it), a glob, or a
    shipped reference name. Existing paths win over reference names."""
    path = Path(arg)
    label = arg.rstrip("/") or arg
    if path.is_dir() and not (path / RUN_LOG_NAME).is_file():
        paths = _logs_in(path)
        if not paths:
            raise LogError(f"{arg}: this folder holds no runs (sub-folders with {RUN_LOG_NAME}, or .txt / .log / .csv logs)")
    elif path.exists():
        paths = [path]
    elif glob.has_magic(arg):
        paths = sorted(Path(p) for p in glob.glob(arg))
        if not paths:
            raise LogError(f"{arg}: the pattern matches no file or folder")
    else:
        paths = _references().get(arg, [])
        if not paths:
            raise LogError(f"{arg}: no such file or directory, and not a shipped reference (shipped: {', '.join(reference_names())})")
    return Group(label=label, runs=tuple(read_run(p) for p in paths))


__all__ = [
    "CSV_COLUMNS",
    "Group",
    "LogError",
    "REFERENCE_DIR",
    "LoggedRun",
    "parse_log_text",
    "read_csv_extract",
    "read_group",
    "read_run",
    "reference_names",
]
