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
UPDATE_SUFFIX = " (update)"  # appended to the names of the optimizer's kernels in a summary


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


# CUDA graphs (XLA's command buffers) hide which HLO instruction launched each kernel inside them (the trace's hlo_op
# names the graph), so a profiled process runs without them: `bench step --profile` sets this before JAX starts.
COMMAND_BUFFERS_OFF = "--xla_gpu_enable_command_buffer="


def xla_flags_for_profiling(flags: str) -> str:
    """XLA_FLAGS for a profiled process: command buffers off (COMMAND_BUFFERS_OFF), unless the flags already choose."""
    if "--xla_gpu_enable_command_buffer" in flags:
        return flags
    return f"{flags} {COMMAND_BUFFERS_OFF}".strip()


def by_source(summary: dict, sources: dict[str, str], update_sources: dict[str, str] | None = None) -> dict[str, float]:
    """Kernel microseconds per source label (hlo_sources of the gradient function's HLO; ``update_sources`` of the
    optimizer's, for its kernels) over a summary's kernels: by the HLO instruction that launched each kernel (the
    trace's hlo_op), else by the kernel's name (a fusion's kernel is named after it). Inside a CUDA graph hlo_op names
    the graph, so library GEMMs and triton kernels stay UNATTRIBUTED there; profile with
    XLA_FLAGS=--xla_gpu_enable_command_buffer= to attribute them too (`bench step --profile` does)."""
    out: dict[str, float] = {}
    for row in summary.get("by_op", summary["by_name"]):
        label = source_label(row["name"], row.get("op", ""), sources, update_sources)
        out[label] = out.get(label, 0.0) + row["us"]
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))


def source_label(kernel: str, op: str, sources: dict[str, str], update_sources: dict[str, str] | None = None) -> str:
    """The source label of one kernel of a summary (its name, " (update)" for the optimizer's, and the HLO op that
    launched it): by the op, else by the kernel's name, in the gradient's or the optimizer's table; "optimizer: ..."
    for the optimizer's; UNATTRIBUTED where neither names it."""
    update = kernel.endswith(UPDATE_SUFFIX)
    table = (update_sources or {}) if update else sources
    label = table.get(op) or table.get(kernel.removesuffix(UPDATE_SUFFIX)) or UNATTRIBUTED
    return f"optimizer: {label}" if update and label != UNATTRIBUTED else label


# ----------------------------------------------------------------------------------------------------------------------
# Roofline floors from the compiled HLO: bytes each kernel must move, FLOPs of the GEMMs
# ----------------------------------------------------------------------------------------------------------------------

# The ceilings a floor divides by (one H200): the bf16 GEMM rate measured through XLA (GPU.md: ~790 TFLOP/s), the
# FP8 rate `bench ops` measured on an H100, whose tensor cores an H200 shares (1,450 TFLOP/s, 2026-11-25; the
# record's FP8 head GEMMs reach ~1,200 in a step), and an HBM copy rate of 90% of the 4.8 TB/s specification
# (assumed, not measured). `python -m jaxrun.profiling --ceilings bf16,fp8,copy` (TFLOP/s, TFLOP/s, TB/s) overrides.
CEILINGS = {"bf16": 790e12, "fp8": 1450e12, "copy": 4.3e12}

_DTYPE_BYTES = {"pred": 1, "s8": 1, "u8": 1, "s16": 2, "u16": 2, "f16": 2, "bf16": 2, "s32": 4, "u32": 4, "f32": 4,
                "s64": 8, "u64": 8, "f64": 8, "c64": 8, "c128": 16}
_ARRAY = re.compile(r"\b([a-z]+[0-9]*[a-z0-9]*)\[([0-9,]*)\]")
_DEFINITION = re.compile(r"^\s*(?:ROOT )?%?([\w.\-]+) = (\([^()]*\)|\S+) ([\w\-]+)\(([^()]*)\)(.*)$")
_CONTRACTING = re.compile(r'"?lhs_contracting_dim(?:ension)?s"?[=:]\s*[\[{]([^\]}]*)[\]}]')


def _arrays(shape: str) -> list[tuple[str, list[int]]]:
    return [(dtype, [int(d) for d in dims.split(",") if d]) for dtype, dims in _ARRAY.findall(shape)]


def _nbytes(dtype: str, dims: list[int]) -> int:
    n = 1
    for d in dims:
        n *= d
    return n * (1 if dtype.startswith("f8") else _DTYPE_BYTES.get(dtype, 4))


def hlo_costs(text: str) -> dict[str, dict]:
    """{instruction name: {"bytes", "flops", "rate"}} of an optimized HLO text (Compiled.as_text()), for every
    instruction that launches kernels: bytes = its operands' plus its outputs' sizes, as XLA passes them (an operand
    read in part counts whole; cuBLAS's s8 workspace is left out); flops = 2·M·N·K of a cuBLAS GEMM or an XLA GEMM
    fusion (None for everything else, e.g. our triton kernels, whose FLOPs the HLO does not say); rate = "fp8" for
    FP8 GEMMs, else "bf16". Names as hlo_sources' keys, with '.' and with '_'."""
    shapes: dict[str, str] = {}
    rows = []
    dots: dict[str, tuple[str, str, str]] = {}  # computation -> (its dot's lhs operand, contracting dims, out shape)
    current = None
    for line in text.splitlines():
        if (c := re.match(r"^\s*%?([\w.\-]+) (?:\([^)]*\) -> .*)?\{\s*$", line)) or line.startswith("ENTRY"):
            current = c.group(1) if c else "ENTRY"
        m = _DEFINITION.match(line)
        if not m:
            continue
        name, shape, opcode, operands, rest = m.groups()
        shapes[name] = shape
        rows.append((name, shape, opcode, operands, rest))
        if opcode == "dot" and current and (k := _CONTRACTING.search(rest)):
            dots[current] = (operands.split(",")[0].strip().lstrip("%"), k.group(1), shape)
    out: dict[str, dict] = {}
    for name, shape, opcode, operands, rest in rows:
        if opcode not in ("fusion", "custom-call", "copy", "transpose", "reduce", "scatter", "gather", "sort"):
            continue
        names = [o.strip().lstrip("%") for o in operands.split(",") if o.strip()]
        constraint = re.search(r"operand_layout_constraints=\{((?:[^{}]|\{[^{}]*\})*)\}", rest)
        read = (sum(_nbytes(d, dims) for d, dims in _arrays(constraint.group(1))) if constraint
                else sum(_nbytes(d, dims) for o in names for d, dims in _arrays(shapes.get(o, ""))))
        outputs = _arrays(shape)
        cublas = "cublas" in rest
        if cublas:
            outputs = [a for a in outputs if a[0] != "s8"]
        flops, rate = None, "bf16"
        if cublas and (k := _CONTRACTING.search(rest)) and names:
            flops = _gemm_flops(shapes.get(names[0], ""), k.group(1), outputs)
            rate = "fp8" if "f8" in rest.split("custom_call_target=")[-1][:40] else "bf16"
        elif opcode == "fusion" and (called := re.search(r"calls=%?([\w.\-]+)", rest)) and called.group(1) in dots:
            lhs, contracting, dot_shape = dots[called.group(1)]
            flops = _gemm_flops(shapes.get(lhs, ""), contracting, _arrays(dot_shape))
        operand_arrays = (_arrays(constraint.group(1)) if constraint
                          else [a for o in names for a in _arrays(shapes.get(o, ""))[:1]])
        cost = {"bytes": read + sum(_nbytes(d, dims) for d, dims in outputs), "flops": flops, "rate": rate,
                "operands": [dims for _, dims in operand_arrays]}
        out[name] = out[name.replace(".", "_")] = cost
    return out


def _gemm_flops(lhs_shape: str, contracting: str, outputs) -> int | None:
    lhs = _arrays(lhs_shape)
    if not lhs or not outputs:
        return None
    k = 1
    for i in (int(x.strip().strip('"')) for x in contracting.split(",") if x.strip()):
        k *= lhs[0][1][i]
    m_n = 1
    for d in outputs[0][1]:
        m_n *= d
    return 2 * m_n * k


def floor_us(cost: dict | None, ceilings: dict = CEILINGS) -> float | None:
    """The roofline floor of one kernel launch: max(bytes / copy rate, FLOPs / GEMM rate), microseconds."""
    if cost is None:
        return None
    t = cost["bytes"] / ceilings["copy"]
    if cost["flops"]:
        t = max(t, cost["flops"] / ceilings[cost["rate"]])
    return t * 1e6


def floors_by_source(summary: dict, sources: dict, costs: dict, update_sources: dict | None = None,
                     update_costs: dict | None = None, ceilings: dict = CEILINGS,
                     attention_flops: dict | None = None) -> dict[str, dict]:
    """{"label | kind": {"label", "kind", "us", "floor_us", "bytes", "flops", "covered_us", "flops_known"}} over a
    summary's kernels (labels as by_source): the measured time, the sum of its launches' floors, and how much of the
    measured time had a cost in the HLO (covered_us; kernels matched only by name, inside CUDA graphs, have none).
    flops_known is False where FLOP-bound kernels have no FLOP count (attention): the floor then counts bytes only,
    unless ``attention_flops`` ({"forward", "backward"}: the traced steps' attention FLOPs, save_attention_flops)
    gives the triton attention kernels theirs (with_attention_flops)."""
    # One HLO instruction may launch several kernels (a split-K GEMM and its reduction): its cost counts once per
    # launch, and a launch is one call of its most frequent kernel.
    # Inside a CUDA graph a kernel's hlo_op names the graph, not an instruction of the HLO: such a kernel is its own
    # launch, costed by its name where that names a fusion (a fusion's kernel is named after it), as source_label does.
    kinds = {row["name"]: row["kind"] for row in summary.get("by_name", [])}
    launches: dict[tuple[bool, str], dict] = {}
    for row in summary.get("by_op", []):
        update = row["name"].endswith(UPDATE_SUFFIX)
        op = row.get("op", "")
        cost_table = (update_costs or {}) if update else costs
        cost_key = op if op in cost_table else row["name"].removesuffix(UPDATE_SUFFIX)
        group = launches.setdefault((update, cost_key), {"name": row["name"], "op": op, "cost": cost_table.get(cost_key),
                                                         "us": 0.0, "count": 0})
        group["us"] += row["us"]
        group["count"] = max(group["count"], row.get("count", 1))
    out: dict[str, dict] = {}
    for (update, _), group in launches.items():
        label = source_label(group["name"], group["op"], sources, update_sources)
        kernel = group["name"].removesuffix(UPDATE_SUFFIX)
        cost = _with_kernel_flops(group["cost"], kernel)
        kind = kinds.get(group["name"]) or (OPTIMIZER_KIND if update else kind_of(kernel))
        entry = out.setdefault(f"{label} | {kind}", {"label": label, "kind": kind, "us": 0.0, "floor_us": 0.0,
                                                      "bytes": 0, "flops": 0, "covered_us": 0.0, "flops_known": True,
                                                      "kernels": []})
        entry["kernels"].append(kernel)
        if cost is not None and cost["flops"] is None and kind in FLOP_BOUND_KINDS:
            entry["flops_known"] = False
        entry["us"] += group["us"]
        if cost is not None:
            entry["floor_us"] += group["count"] * floor_us(cost, ceilings)
            entry["bytes"] += group["count"] * cost["bytes"]
            entry["flops"] += group["count"] * (cost["flops"] or 0)
            entry["covered_us"] += group["us"]
    if attention_flops:
        with_attention_flops(out, attention_flops, ceilings)
    return dict(sorted(out.items(), key=lambda kv: -kv[1]["us"]))


FLOP_BOUND_KINDS = ("attention (triton)", "cudnn")  # kernels whose FLOPs the HLO does not give: floors are ">="

# The triton attention kernels of each pass (jaxrun.kernels.flash_attention): the forward, and the backward's dQ and
# dK/dV kernels
ATTENTION_PASSES = {"forward": re.compile(r"_attn_fwd"), "backward": re.compile(r"_attn_(dq|dkdv)")}
ATTENTION_FLOPS_FILE = "attention_flops.json"  # what `bench step --profile` writes beside each phase's trace


def with_attention_flops(floors: dict[str, dict], attention_flops: dict, ceilings: dict = CEILINGS) -> None:
    """Give the triton attention entries of floors (floors_by_source) their pass's FLOPs, in place: a pass's FLOPs
    shared among the entries holding its kernels by their measured time (one entry per pass in a step), and each
    entry's floor the larger of its bytes floor and its FLOPs over the bf16 GEMM rate. The FLOPs are the useful work of
    the visible (query, key) pairs (jaxrun.flops, recipe §9: backward = 2 x forward), not the kernels' own count, which
    recomputes the scores in both backward kernels and spends whole tiles on the masked edges."""
    for name, pattern in ATTENTION_PASSES.items():
        entries = [e for e in floors.values()
                   if e["kind"] == "attention (triton)" and any(pattern.search(k) for k in e["kernels"])]
        total_us = sum(e["us"] for e in entries)
        for e in entries:
            share = attention_flops[name] * (e["us"] / total_us if total_us else 1 / len(entries))
            e["flops"] += int(share)
            e["floor_us"] = max(e["floor_us"], share / ceilings["bf16"] * 1e6)
            e["flops_known"] = True


def save_attention_flops(directory: str | Path, forward: int) -> None:
    """Write the attention FLOPs of a profiled phase's traced steps (forward, summed over the process's rows) beside
    its trace; the backward's are twice the forward's, as jaxrun.flops counts them."""
    Path(directory, ATTENTION_FLOPS_FILE).write_text(json.dumps({"forward": int(forward), "backward": 2 * int(forward)}))


def _with_kernel_flops(cost: dict | None, kernel: str) -> dict | None:
    """The fused ReLU² matmul's FLOPs, 2·M·N·K from its operands a (M, K) and b (N, K), which the HLO's custom call
    does not state."""
    if cost is None or cost["flops"] is not None or "relu2" not in kernel or len(cost.get("operands", [])) < 2:
        return cost
    (m, k), (n, _) = cost["operands"][0][-2:], cost["operands"][1][-2:]
    return {**cost, "flops": 2 * m * n * k}


def markdown_floors(summary: dict, top: int = 30) -> str:
    """One phase's attributed kernels with their roofline floors (floors_by_source, in summary["floors"]). "of
    floor" is measured over floor; ">=" marks FLOP-bound kernels whose floor counts only their bytes."""
    steps = summary["steps"]
    lines = ["| where (function, pass) | kind | ms | floor ms | of floor | GB moved | TFLOP |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for f in list(summary["floors"].values())[:top]:
        ms, floor = f["us"] / 1e3 / steps, f["floor_us"] / 1e3 / steps
        ratio = ("" if f["flops_known"] else "<=") + (f"{ms / floor:.1f}x" if floor > 0 else "—")
        floor_text = ("" if f["flops_known"] else ">=") + f"{floor:.2f}"
        lines.append(f"| {f['label']} | {f['kind']} | {ms:.2f} | {floor_text} | {ratio} | "
                     f"{f['bytes'] / 1e9 / steps:.2f} | {f['flops'] / 1e12 / steps:.2f} |")
    return "\n".join(lines) + "\n"


HLO_FILES = ("hlo_grad.txt.gz", "hlo_update.txt.gz")  # what `bench step --profile` writes beside each phase's trace


def save_hlo(directory: str | Path, grad_text: str, update_texts: list[str]) -> None:
    """Write the compiled HLO of a profiled step's functions beside its trace (the update variants concatenated)."""
    directory = Path(directory)
    (directory / HLO_FILES[0]).write_bytes(gzip.compress(grad_text.encode()))
    (directory / HLO_FILES[1]).write_bytes(gzip.compress("\n".join(update_texts).encode()))


def attribute(summary: dict, directory: str | Path, ceilings: dict = CEILINGS) -> dict | None:
    """summary's by_source from the HLO files saved in ``directory`` (save_hlo), or None where there are none; also
    sets summary["floors"] (floors_by_source, with the attention FLOPs saved there by save_attention_flops, if any)."""
    grad, update = (Path(directory) / name for name in HLO_FILES)
    if not grad.is_file():
        return None
    read = lambda path: gzip.decompress(path.read_bytes()).decode() if path.is_file() else ""  # noqa: E731
    grad_text, update_text = read(grad), read(update)
    sources, update_sources = hlo_sources(grad_text), hlo_sources(update_text)
    flops_file = Path(directory) / ATTENTION_FLOPS_FILE
    attention_flops = json.loads(flops_file.read_text()) if flops_file.is_file() else None
    summary["floors"] = floors_by_source(summary, sources, hlo_costs(grad_text), update_sources,
                                         hlo_costs(update_text), ceilings, attention_flops)
    return by_source(summary, sources, update_sources)


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
        key = e["name"] if not OPTIMIZER_MODULE.search(module) else e["name"] + UPDATE_SUFFIX
        row = by_name.setdefault(key, {"name": key, "kind": kind_of(e["name"], module), "count": 0, "us": 0.0})
        row["count"] += 1
        row["us"] += float(e["dur"])
        op = str(e.get("args", {}).get("hlo_op", ""))
        op_row = by_op.setdefault((key, op), {"name": key, "op": op, "us": 0.0, "count": 0})
        op_row["us"] += float(e["dur"])
        op_row["count"] += 1
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
    parser.add_argument("--ceilings", help="the roofline floors' rates: bf16 TFLOP/s, FP8 TFLOP/s, copy TB/s "
                        f"(default {CEILINGS['bf16'] / 1e12:.0f},{CEILINGS['fp8'] / 1e12:.0f},{CEILINGS['copy'] / 1e12:.1f}: "
                        "one H200, see CEILINGS)")
    args = parser.parse_args(argv)
    ceilings = CEILINGS
    if args.ceilings:
        try:
            bf16, fp8, copy = (float(x) for x in args.ceilings.split(","))
        except ValueError:
            parser.error(f"--ceilings wants three numbers, bf16,fp8,copy (TFLOP/s, TFLOP/s, TB/s), got {args.ceilings!r}")
        ceilings = {"bf16": bf16 * 1e12, "fp8": fp8 * 1e12, "copy": copy * 1e12}
    labels = args.labels.split(",") if args.labels else list(args.path)
    if len(labels) != len(args.path):
        parser.error(f"--labels names {len(labels)} traces, {len(args.path)} given")
    summaries = {label: summarize(path, args.steps) for label, path in zip(labels, args.path)}
    for path, summary in zip(args.path, summaries.values()):
        print_summary(summary, args.top)
        if Path(path).is_dir() and (sources := attribute(summary, path, ceilings)) is not None:
            summary["by_source"] = sources
            print_sources(summary, sources, args.top)
            print("\n" + markdown_floors(summary, args.top))
    if args.markdown:
        text = markdown_table(summaries)
        if all("by_source" in s for s in summaries.values()):
            text += "\n" + markdown_sources(summaries, args.top)
            for label, s in summaries.items():
                text += f"\n{label}, roofline floors:\n\n" + markdown_floors(s, args.top)
        Path(args.markdown).write_text(text)
    if args.json:
        Path(args.json).write_text(json.dumps(next(iter(summaries.values())), indent=1))


if __name__ == "__main__":
    main()
