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


# ----------------------------------------------------------------------------------------------------------------------
# Where in the code a kernel comes from: the compiled HLO's stack frames
# ----------------------------------------------------------------------------------------------------------------------

_TABLE_ROW = re.compile(r"^(\d+) (.*)$")
_INSTRUCTION = re.compile(r'^\s*(?:ROOT )?%(\S+) = .*?metadata=\{op_name="([^"]*)"[^}]*?stack_frame_id=(\d+)', re.M)
UNATTRIBUTED = "unattributed"


def _hlo_tables(text: str) -> dict[str, dict[int, str]]:
    """The module-level tables of an optimized HLO text (FileNames, FunctionNames, FileLocations, StackFrames)."""
    tables, current = {}, None
    for line in text.splitlines():
        if line in ("FileNames", "FunctionNames", "FileLocations", "StackFrames"):
            current = tables.setdefault(line, {})
        elif current is not None and (m := _TABLE_ROW.match(line)):
            current[int(m.group(1))] = m.group(2)
        else:
            current = None
    return tables


def hlo_sources(text: str) -> dict[str, str]:
    """{instruction name: "function fwd|bwd"} of a compiled module's HLO text (``Compiled.as_text()``): the Python
    function whose line made the instruction (the innermost stack frame XLA kept, e.g. rms_norm, _relu2, smear), and
    bwd where the op belongs to the backward pass (a transpose(...) in its op_name). A GPU kernel of a fusion is named
    after the fusion instruction with '.' as '_'; both spellings are keys. Several modules in one text are read each
    with its own tables; where their names clash, the first module's win."""
    out: dict[str, str] = {}
    for module in re.split(r"^(?=HloModule )", text, flags=re.M):
        out = {**_module_sources(module), **out}
    return out


def _module_sources(text: str) -> dict[str, str]:
    """hlo_sources of one module's text."""
    tables = _hlo_tables(text)
    names = {i: v.strip('"') for i, v in tables.get("FunctionNames", {}).items()}
    locations = {}
    for i, v in tables.get("FileLocations", {}).items():
        m = re.search(r"function_name_id=(\d+)", v)
        locations[i] = names.get(int(m.group(1)), "?") if m else "?"
    frames = {}
    for i, v in tables.get("StackFrames", {}).items():
        m = re.search(r"file_location_id=(\d+)", v)
        frames[i] = locations.get(int(m.group(1)), "?") if m else "?"
    out = {}
    for m in _INSTRUCTION.finditer(text):
        name, op_name, frame = m.group(1), m.group(2), int(m.group(3))
        function = frames.get(frame, "?").replace(".<locals>.", ".")
        label = f"{function} {'bwd' if 'transpose(' in op_name else 'fwd'}"
        out[name] = label
        out[name.replace(".", "_")] = label
    return out


def by_source(summary: dict, sources: dict[str, str], update_sources: dict[str, str] | None = None) -> dict[str, float]:
    """Kernel microseconds per source label (hlo_sources of the gradient function's HLO; ``update_sources`` of the
    optimizer's, for its kernels) over a summary's kernels: by the HLO instruction that launched each kernel (the
    trace's hlo_op), else by the kernel's name (a fusion's kernel is named after it). Inside a CUDA graph hlo_op names
    the graph, so library GEMMs and triton kernels stay UNATTRIBUTED there; profile with
    XLA_FLAGS=--xla_gpu_enable_command_buffer= to attribute them too."""
    out: dict[str, float] = {}
    for row in summary.get("by_op", summary["by_name"]):
        name, op = row["name"], row.get("op", "")
        update = name.endswith(" (update)")
        table = (update_sources or {}) if update else sources
        name = name.removesuffix(" (update)")
        label = table.get(op) or table.get(name) or UNATTRIBUTED
        if update and label != UNATTRIBUTED:
            label = f"optimizer: {label}"
        out[label] = out.get(label, 0.0) + row["us"]
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))


HLO_FILES = ("hlo_grad.txt.gz", "hlo_update.txt.gz")  # what `bench step --profile` writes beside each phase's trace


def save_hlo(directory: str | Path, grad_text: str, update_texts: list[str]) -> None:
    """Write the compiled HLO of a profiled step's functions beside its trace (the update variants concatenated)."""
    directory = Path(directory)
    (directory / HLO_FILES[0]).write_bytes(gzip.compress(grad_text.encode()))
    (directory / HLO_FILES[1]).write_bytes(gzip.compress("\n".join(update_texts).encode()))


def attribute(summary: dict, directory: str | Path) -> dict | None:
    """summary's by_source from the HLO files saved in ``directory`` (save_hlo), or None where there are none."""
    grad, update = (Path(directory) / name for name in HLO_FILES)
    if not grad.is_file():
        return None
    read = lambda path: gzip.decompress(path.read_bytes()).decode() if path.is_file() else ""  # noqa: E731
    return by_source(summary, hlo_sources(read(grad)), hlo_sources(read(update)))


def markdown_sources(summaries: dict[str, dict], top: int = 30) -> str:
    """One markdown table of several attributed summaries: ms per step per source label (the labels of the first
    summary's top ones, then the rest summed)."""
    first = next(iter(summaries.values()))["by_source"]
    labels = list(first)[:top]
    lines = ["| where (function, pass) | " + " | ".join(f"{l} ms" for l in summaries) + " |",
             "|---|" + "---:|" * len(summaries)]
    for label in labels:
        lines.append(f"| {label} | " + " | ".join(f"{s['by_source'].get(label, 0.0) / 1e3 / s['steps']:.2f}"
                                                  for s in summaries.values()) + " |")
    rest = [sum(us for k, us in s["by_source"].items() if k not in labels) / 1e3 / s["steps"] for s in summaries.values()]
    lines.append("| everything else | " + " | ".join(f"{r:.2f}" for r in rest) + " |")
    return "\n".join(lines) + "\n"


def print_sources(summary: dict, sources: dict[str, float], top: int = 25) -> None:
    steps = summary["steps"]
    print(f"\n  {'ms/step':>9s} {'share':>6s}  where in the code (the function that made the fusion; fwd or bwd pass)")
    for label, us in list(sources.items())[:top]:
        print(f"  {us / 1e3 / steps:9.3f} {100 * us / summary['kernel_us']:5.1f}%  {label}")


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
    by_op: dict[tuple[str, str], dict] = {}  # (kernel, the HLO instruction that launched it): what attribute() reads
    for e in kernels:
        module = str(e.get("args", {}).get("hlo_module", ""))
        key = e["name"] if not OPTIMIZER_MODULE.search(module) else f"{e['name']} (update)"
        row = by_name.setdefault(key, {"name": key, "kind": kind_of(e["name"], module), "count": 0, "us": 0.0})
        row["count"] += 1
        row["us"] += float(e["dur"])
        op = str(e.get("args", {}).get("hlo_op", ""))
        by_op.setdefault((key, op), {"name": key, "op": op, "us": 0.0})["us"] += float(e["dur"])
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
        "by_op": sorted(by_op.values(), key=lambda r: -r["us"]),
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
    for path, summary in zip(args.path, summaries.values()):
        print_summary(summary, args.top)
        if Path(path).is_dir() and (sources := attribute(summary, path)) is not None:
            summary["by_source"] = sources
            print_sources(summary, sources, args.top)
    if args.markdown:
        text = markdown_table(summaries)
        if all("by_source" in s for s in summaries.values()):
            text += "\n" + markdown_sources(summaries, args.top)
        Path(args.markdown).write_text(text)
    if args.json:
        Path(args.json).write_text(json.dumps(next(iter(summaries.values())), indent=1))


if __name__ == "__main__":
    main()
