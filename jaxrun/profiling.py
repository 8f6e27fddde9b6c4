"""Where a step's device time goes: record a jax.profiler trace, then total its GPU kernels by name and by kind.

    python -m jaxrun.bench step --config configs/record60.py --phase 0 --profile runs/profile   # records and summarises
    python -m jaxrun.profiling runs/profile [--top 40]                                          # summarises again

The trace is the Perfetto JSON that jax.profiler writes beside its xplane (create_perfetto_trace=True): Chrome trace
events, where each device stream is a thread of a process named after the device. Kernels are sorted into kinds by
name (the patterns below), so a step's time splits into attention, matrix products, fused elementwise work,
collectives and copies, and the idle part of the device's busy window shows host-side gaps.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import json
import re
from collections.abc import Iterator
from pathlib import Path

import jax

# kind -> name pattern, first match wins. Names: our triton kernels by their triton_call name, cuBLAS/cuBLASLt and
# CUTLASS GEMMs by their library prefixes, cuDNN attention, XLA's generated fusions, NCCL collectives.
KINDS = (
    ("attention (triton)", r"flash_attention|_attn_|attention"),
    ("lm head (triton)", r"scaled_fp8_matmul"),
    ("mlp (triton)", r"relu2"),
    ("cross entropy (triton)", r"softcap|cross_entropy|_ce_forward|_ce_backward|_ce_fused"),
    ("cudnn", r"cudnn|fmha|flash_fprop|flash_bprop"),
    ("matmul (cuBLAS/cutlass)", r"gemm|cutlass|xmma|nvjet|cublas|sm90_|matmul|dot"),
    ("collective", r"nccl|all_reduce|all_gather|reduce_scatter|all_to_all|collective"),
    ("copy/memset", r"memcpy|memset|copy|transpose"),
    ("reduction fusion", r"reduce"),
    ("elementwise fusion", r"fusion|loop|wrapped|convert|multiply|add"),
)


@contextlib.contextmanager
def trace(directory: str | Path) -> Iterator[Path]:
    """Record a jax.profiler trace (with its Perfetto JSON) of the block into a fresh directory."""
    path = Path(directory)
    path.mkdir(parents=True, exist_ok=True)
    with jax.profiler.trace(str(path), create_perfetto_trace=True):
        yield path


def find_trace(path: str | Path) -> Path:
    """The newest perfetto_trace.json.gz at or under path."""
    path = Path(path)
    if path.is_file():
        return path
    found = sorted(path.rglob("perfetto_trace.json.gz"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise FileNotFoundError(f"no perfetto_trace.json.gz under {path}: record one with "
                                f"`python -m jaxrun.bench step ... --profile {path}`")
    return found[-1]


# Kernels of the optimizer function (engine.make_update_fn, jitted as "update") form one kind whatever they are: the
# step's other kernels belong to the gradient function (its micro-batches and the reduce-scatter).
OPTIMIZER_KIND = "optimizer (NorMuon + Adam)"
OPTIMIZER_MODULE = re.compile(r"^jit_update")


def kind_of(name: str, module: str = "") -> str:
    """The kind of a kernel by its name, or OPTIMIZER_KIND for any kernel of the optimizer's module (hlo_module)."""
    if OPTIMIZER_MODULE.search(module):
        return OPTIMIZER_KIND
    for kind, pattern in KINDS:
        if re.search(pattern, name, re.IGNORECASE):
            return kind
    return "other"


def device_kernels(events: list[dict]) -> list[dict]:
    """The complete ('X') events on device streams: processes whose name mentions a GPU (or a TPU/device) that are
    not the host's."""
    names = {e["pid"]: e.get("args", {}).get("name", "") for e in events
             if e.get("ph") == "M" and e.get("name") == "process_name"}
    device_pids = {pid for pid, name in names.items()
                   if re.search(r"gpu|device|stream", name, re.IGNORECASE) and not re.search(r"host|cpu", name, re.IGNORECASE)}
    return [e for e in events if e.get("ph") == "X" and e.get("pid") in device_pids and "dur" in e]


def summarize(path: str | Path, steps: int = 1) -> dict:
    """Kernel time per name and per kind (microseconds, and per step), the device's busy window and its idle part."""
    path = find_trace(path)
    with gzip.open(path, "rt") as f:
        raw = json.load(f)
    events = raw["traceEvents"] if isinstance(raw, dict) else raw
    kernels = device_kernels(events)
    if not kernels:
        raise ValueError(f"{path} has no device kernel events (was it recorded on a GPU?)")
    by_name: dict[str, dict] = {}
    for e in kernels:
        module = str(e.get("args", {}).get("hlo_module", ""))
        key = e["name"] if not OPTIMIZER_MODULE.search(module) else f"{e['name']} (update)"
        row = by_name.setdefault(key, {"name": key, "kind": kind_of(e["name"], module), "count": 0, "us": 0.0})
        row["count"] += 1
        row["us"] += float(e["dur"])
    by_kind: dict[str, float] = {}
    for row in by_name.values():
        by_kind[row["kind"]] = by_kind.get(row["kind"], 0.0) + row["us"]
    start = min(float(e["ts"]) for e in kernels)
    end = max(float(e["ts"]) + float(e["dur"]) for e in kernels)
    busy = _union_length(sorted((float(e["ts"]), float(e["ts"]) + float(e["dur"])) for e in kernels))
    return {
        "trace": str(path),
        "steps": steps,
        "window_us": end - start,
        "busy_us": busy,
        "kernel_us": sum(by_kind.values()),
        "by_kind": dict(sorted(by_kind.items(), key=lambda kv: -kv[1])),
        "by_name": sorted(by_name.values(), key=lambda r: -r["us"]),
    }


def _union_length(intervals: list[tuple[float, float]]) -> float:
    """Total length covered by sorted intervals (overlapping streams count once)."""
    total, current_start, current_end = 0.0, None, None
    for a, b in intervals:
        if current_end is None or a > current_end:
            if current_end is not None:
                total += current_end - current_start
            current_start, current_end = a, b
        else:
            current_end = max(current_end, b)
    if current_end is not None:
        total += current_end - current_start
    return total


def print_summary(summary: dict, top: int = 30) -> None:
    steps = summary["steps"]
    ms = lambda us: us / 1e3 / steps  # noqa: E731 - per step
    print(f"\n{summary['trace']}: {steps} step(s); per step: device window {ms(summary['window_us']):.2f} ms, busy "
          f"{ms(summary['busy_us']):.2f} ms (idle {ms(summary['window_us'] - summary['busy_us']):.2f} ms), kernels "
          f"{ms(summary['kernel_us']):.2f} ms")
    for kind, us in summary["by_kind"].items():
        print(f"  {kind:26s} {ms(us):9.2f} ms/step {100 * us / summary['kernel_us']:5.1f}%")
    print(f"\n  {'ms/step':>9s} {'calls/step':>10s}  kernel (top {top})")
    for row in summary["by_name"][:top]:
        print(f"  {ms(row['us']):9.3f} {row['count'] / steps:10.1f}  [{row['kind']}] {row['name'][:110]}")


def markdown_table(summaries: dict[str, dict]) -> str:
    """One markdown table of several summaries (e.g. one per phase): per kind, ms per step and share of the kernel
    time; then the device's idle time inside its busy window (host gaps), the kernel total and the window."""
    kinds = list(dict.fromkeys(k for s in summaries.values() for k in s["by_kind"]))
    head = "| kind | " + " | ".join(f"{label} ms | share" for label in summaries) + " |"
    lines = [head, "|---|" + "---:|---:|" * len(summaries)]
    per_step = {label: (lambda us, s=s: us / 1e3 / s["steps"]) for label, s in summaries.items()}
    for kind in kinds:
        cells = [f"{per_step[l](s['by_kind'].get(kind, 0.0)):.2f} | {100 * s['by_kind'].get(kind, 0.0) / s['kernel_us']:.1f}%"
                 for l, s in summaries.items()]
        lines.append(f"| {kind} | " + " | ".join(cells) + " |")
    for label, key in (("idle inside the window (host gaps)", None), ("kernels", "kernel_us"), ("device window", "window_us")):
        cells = []
        for l, s in summaries.items():
            us = s["window_us"] - s["busy_us"] if key is None else s[key]
            cells.append(f"{per_step[l](us):.2f} | {100 * us / s['window_us']:.1f}%" if key != "kernel_us"
                         else f"{per_step[l](us):.2f} | ")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m jaxrun.profiling", description=__doc__.splitlines()[0])
    parser.add_argument("path", nargs="+", help="a perfetto_trace.json.gz, or a directory holding one (the newest is "
                                                "read); several: one table of them all (--markdown)")
    parser.add_argument("--steps", type=int, default=1, help="how many steps each trace holds (for per-step figures)")
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--labels", help="comma-separated column labels for the traces (default: their paths)")
    parser.add_argument("--markdown", help="write the table of every trace's kinds here")
    parser.add_argument("--json", help="write the summary (of the first trace) here")
    args = parser.parse_args(argv)
    labels = args.labels.split(",") if args.labels else list(args.path)
    if len(labels) != len(args.path):
        parser.error(f"--labels names {len(labels)} traces, {len(args.path)} given")
    summaries = {label: summarize(path, args.steps) for label, path in zip(labels, args.path)}
    for summary in summaries.values():
        print_summary(summary, args.top)
    if args.markdown:
        Path(args.markdown).write_text(markdown_table(summaries))
    if args.json:
        Path(args.json).write_text(json.dumps(next(iter(summaries.values())), indent=1))


if __name__ == "__main__":
    main()
