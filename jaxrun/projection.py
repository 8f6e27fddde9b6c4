"""The 8-GPU record time on paper (`python -m jaxrun.bench project`), while no multi-GPU machine is at hand.

    python -m jaxrun.bench step --config configs/record60.py --set data.num_ranks=1 --json one_rank.json   # on one GPU
    python -m jaxrun.bench project --step-json one_rank.json [--devices 8] [--link-gbps 360]

On D GPUs each device trains one of the recipe's 8 virtual ranks per step (recipe §3.6): one micro-batch forward and
backward, then the gradient reduce-scatter, its share of the optimizer, and the all-gather of the new weights. The
projection adds, per schedule stage:
- compute: the median step time that `bench step` measured on one GPU with one virtual rank (data.num_ranks=1: one
  micro-batch per step, the per-device work of the D-GPU run), and
- communication: the collectives of the step compiled for D devices (counted from the compiled HLO on D fake CPU
  devices, in a subprocess), priced as ring collectives at the assumed bus bandwidth: reduce-scatter and all-gather move
  (D-1)/D of the full tensor per device, all-reduce twice that, all-to-all (D-1)/D of a device's data (NCCL's busbw
  convention), a collective-permute (XLA's resharding) a device's whole buffer.
Assumptions, printed with the result: the one-GPU figure runs the whole optimizer, which D GPUs split D ways (so the
compute term is an over-estimate by (D-1)/D of the optimizer's time); jaxrun's gradient reduce-scatter starts after the
backward and the all-gather after the update, so "no overlap" (compute + communication) is the projection and "full
overlap" (the larger of the two) the bound a schedule that hid every collective could reach; XLA:CPU widens bf16
collectives to f32, so gathered weights are priced at 2 bytes an element (the model stores them in bf16) and reduced
gradients at 4 (fp32); validation, compilation and the data pipeline are outside the clock (recipe §6).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

from jaxrun import schedule
from jaxrun.config import Config, ConfigError, load_config

RECORD_TRAIN_S = 105.8  # record #60 on 8 x H100 (1775 steps)
DEFAULT_LINK_GBPS = 360.0  # NCCL bus bandwidth of large collectives over H100 NVLink (900 GB/s bidirectional), assumed
# fp32 gradients, bf16 weights; None: the HLO's own dtype (NorMuon's all-to-all moves the matrices it orthogonalises)
BYTES_PER_ELEMENT = {"reduce-scatter": 4, "all-reduce": 4, "all-gather": 2, "all-to-all": None, "collective-permute": None}
RING_FACTOR = {"reduce-scatter": lambda d: (d - 1) / d, "all-gather": lambda d: (d - 1) / d,
               "all-reduce": lambda d: 2 * (d - 1) / d, "all-to-all": lambda d: (d - 1) / d,
               "collective-permute": lambda d: 1.0}  # each device sends its buffer to one peer


def _elements(shape: str) -> int:
    dims = shape[shape.index("[") + 1 : -1]
    n = 1
    for d in dims.split(","):
        if d:
            n *= int(d)
    return n


def step_collectives(cfg: Config, devices: int) -> dict:
    """{variant: [{kind, elements (of the full tensor), bytes (priced as above)}]} of the training step compiled for
    ``devices`` devices of this process: "grad" (one gradient variant: the collectives hold parameter-sized tensors, so
    every batch size and window gives the same ones; the tied and the untied step differ by the embedding) and
    "update" (the Adam step, which adds to NorMuon's). The batch is shrunk to one 128-token sequence: shapes of the
    collectives do not depend on it, compile time does."""
    import dataclasses

    import jax

    from jaxrun import engine, sharding

    if jax.device_count() < devices:
        raise ConfigError(f"{devices} devices needed, this process has {jax.device_count()} (on CPU set "
                          f"XLA_FLAGS=--xla_force_host_platform_device_count={devices} before Python starts)")
    small = dataclasses.replace(cfg.schedule, seq_len=128, seqs_per_rank=(1,) * len(cfg.schedule.seqs_per_rank))
    cfg = dataclasses.replace(cfg, schedule=small)
    mesh = sharding.make_mesh(cfg.data.num_ranks, jax.devices()[:devices])
    shapes = jax.eval_shape(lambda k: engine.init_state(cfg, k), jax.random.PRNGKey(0))
    shardings = engine.state_shardings(shapes, mesh)
    out = {}
    for tied in (True, False):
        shape = schedule.step_shape(1 if tied else schedule.untie_step(small) + 1, small)
        out["grad_tied" if tied else "grad_untied"] = engine.lower_grad_fn(cfg, mesh, shapes, shape).compile().as_text()
    for adam in (True, False):
        lowered = engine.lower_update_fn(cfg, mesh, shapes, shardings, adam)
        out["update_adam" if adam else "update_muon"] = lowered.compile().as_text()
    result = {}
    for variant, hlo in out.items():
        rows = []
        for c in sharding.collectives(hlo):
            if c["kind"] not in BYTES_PER_ELEMENT:
                raise ValueError(f"{variant}: a {c['kind']} the projection has no cost model for")
            per_result = sum(_elements(s) for s in c["shapes"])
            full = per_result * devices if c["kind"] == "reduce-scatter" else per_result  # its result is one shard
            width = BYTES_PER_ELEMENT[c["kind"]]
            nbytes = full * width if width else c["bytes"]  # all-to-all, permute: a device's own data, as NCCL counts it
            rows.append({"kind": c["kind"], "elements": full, "bytes": nbytes})
        result[variant] = rows
    return result


def collectives_in_subprocess(config: str | None, overrides: list[str], devices: int) -> dict:
    """step_collectives on ``devices`` fake CPU devices: XLA fixes the device count when it starts, so it runs in a
    fresh Python."""
    env = {**os.environ, "JAX_PLATFORMS": "cpu",
           "XLA_FLAGS": (os.environ.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={devices}").strip()}
    argv = [sys.executable, "-m", "jaxrun.projection", "--devices", str(devices)]
    argv += (["--config", config] if config else []) + [a for o in overrides for a in ("--set", o)]
    done = subprocess.run(argv, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"counting the {devices}-device step's collectives failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def comm_ms(rows: list[dict], devices: int, link_gbps: float) -> float:
    """Milliseconds of ring collectives at ``link_gbps`` GB/s bus bandwidth, one after another."""
    return sum(RING_FACTOR[r["kind"]](devices) * r["bytes"] for r in rows) / (link_gbps * 1e9) * 1e3


def project(cfg: Config, step_result: dict, collectives: dict, devices: int, link_gbps: float) -> dict:
    """Per stage: steps, compute ms (the one-rank bench), communication ms, the step with no overlap and with full
    overlap, and the stage's seconds; totals beside the record's train time."""
    by_phase = {f["phase"]: f for f in step_result["phases"]}
    stages, total_none, total_full = [], 0.0, 0.0
    for stage in schedule.stages(cfg.schedule):
        n = stage.end_step - stage.first_step
        if n <= 0:
            continue
        f = by_phase.get(stage.index)
        if f is None:
            raise ConfigError(f"the step bench has no figure for {stage.label} (--phase {stage.index}): bench every phase")
        if f["tokens_per_step"] != f["tokens_per_rank"]:
            raise ConfigError(f"{stage.label} was benched with {f['tokens_per_step'] // f['tokens_per_rank']} virtual ranks "
                              f"per step: measure one device's share with --set data.num_ranks=1")
        if f["tokens_per_rank"] != stage.tokens_per_rank:
            raise ConfigError(f"{stage.label}: the bench ran {f['tokens_per_rank']:,} tokens per rank, this config's "
                              f"schedule {stage.tokens_per_rank:,}: bench the same config")
        tied_steps = max(0, min(stage.end_step, schedule.untie_step(cfg.schedule) + 1) - stage.first_step)
        grad = (tied_steps * comm_ms(collectives["grad_tied"], devices, link_gbps)
                + (n - tied_steps) * comm_ms(collectives["grad_untied"], devices, link_gbps)) / n  # mean over the stage
        update = 0.5 * (comm_ms(collectives["update_adam"], devices, link_gbps)
                        + comm_ms(collectives["update_muon"], devices, link_gbps))  # Adam every other step
        compute, comm = f["median_ms"], grad + update
        none, full = compute + comm, max(compute, comm)
        total_none += n * none / 1e3
        total_full += n * full / 1e3
        stages.append({"stage": stage.label, "steps": n, "compute_ms": compute, "grad_comm_ms": grad,
                       "update_comm_ms": update, "step_ms_no_overlap": none, "step_ms_full_overlap": full,
                       "seconds_no_overlap": n * none / 1e3})
    return {"devices": devices, "link_gbps": link_gbps, "measured_on": step_result.get("device_kind"),
            "stages": stages, "train_s_no_overlap": total_none, "train_s_full_overlap": total_full,
            "record_train_s": RECORD_TRAIN_S, "ratio_no_overlap": total_none / RECORD_TRAIN_S}


def print_projection(p: dict) -> None:
    print(f"\n{p['devices']}-GPU projection from one {p['measured_on']}; collectives at {p['link_gbps']:.0f} GB/s bus bandwidth")
    print(f"{'stage':10s} {'steps':>6s} {'compute ms':>10s} {'grad comm':>10s} {'upd comm':>9s} {'step ms':>8s} "
          f"{'overlapped':>10s} {'seconds':>8s}")
    for s in p["stages"]:
        print(f"{s['stage']:10s} {s['steps']:6d} {s['compute_ms']:10.2f} {s['grad_comm_ms']:10.2f} {s['update_comm_ms']:9.2f} "
              f"{s['step_ms_no_overlap']:8.2f} {s['step_ms_full_overlap']:10.2f} {s['seconds_no_overlap']:8.1f}")
    print(f"train time: {p['train_s_no_overlap']:.1f} s with no overlap ({p['ratio_no_overlap']:.2f}x the record's "
          f"{p['record_train_s']} s), {p['train_s_full_overlap']:.1f} s if every collective were hidden")
    print("assumptions: " + " ".join(__doc__.split("Assumptions, printed with the result: ")[1].split("\n\"\"\"")[0].split()))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--step-json", required=True, help="`bench step --set data.num_ranks=1 --json` of one GPU, every phase")
    parser.add_argument("--config", help="the config benched (default: configs/tiny.py; the record: configs/record60.py)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="config overrides, as given to bench step (data.num_ranks=1 is for the bench only: "
                             "the projection uses the config's own ranks)")
    parser.add_argument("--devices", type=int, default=8, help="GPUs to project onto (default 8)")
    parser.add_argument("--link-gbps", type=float, default=DEFAULT_LINK_GBPS,
                        help=f"bus bandwidth of the collectives, GB/s (default {DEFAULT_LINK_GBPS:.0f}: H100 NVLink)")
    parser.add_argument("--json", help="write the projection and the collectives counted here")


def command(args: argparse.Namespace, parser: argparse.ArgumentParser) -> dict:
    overrides = [o for o in args.overrides if not o.replace(" ", "").startswith("data.num_ranks=")]
    try:
        cfg = load_config(args.config, overrides)
        if cfg.data.num_ranks % args.devices:
            raise ConfigError(f"--devices {args.devices} does not divide the config's {cfg.data.num_ranks} virtual ranks")
        with open(args.step_json) as f:
            step_result = json.load(f)
        collectives = collectives_in_subprocess(args.config, overrides, args.devices)
        result = project(cfg, step_result, collectives, args.devices, args.link_gbps)
    except (ConfigError, OSError, json.JSONDecodeError, KeyError) as err:
        parser.error(f"{type(err).__name__}: {err}" if not isinstance(err, ConfigError) else str(err))
    print_projection(result)
    return {"projection": result, "collectives": collectives}


def main(argv=None) -> None:
    """The subprocess of collectives_in_subprocess: prints step_collectives as one JSON line."""
    p = argparse.ArgumentParser(prog="python -m jaxrun.projection")
    p.add_argument("--config")
    p.add_argument("--set", dest="overrides", action="append", default=[])
    p.add_argument("--devices", type=int, required=True)
    args = p.parse_args(argv)
    print(json.dumps(step_collectives(load_config(args.config, args.overrides), args.devices)))


if __name__ == "__main__":
    main()
