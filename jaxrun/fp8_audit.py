"""Audit of the FP8 LM head inside the compiled gradient function the training loop runs.

    python -m jaxrun.fp8_audit --config configs/record60.py --set data.train_files=... [--resume runs/NAME] --dump DIR
    python tools/fp8_audit_torch.py DIR step101          # optional: the same tensors against torch._scaled_mm

For each FP8 backend of the head (xla, triton) the loop's gradient function (`engine.make_grad_fn`, the whole record
model, 8 micro-batches of a real batch) is compiled with the head wrapped in a tap: the tap runs the backend's own
forward and backward and hands the head's tensors of the first micro-batch (h, W, the FP8 operands, the logits, the
incoming gradient, dh, dW) to the host, which writes them to DIR (with --save) for `tools/fp8_audit_torch.py` to
compare with fp64 and with `torch._scaled_mm` on the same operands. The backward products of the tapped tensors are
also recomputed stand-alone by every implementation and accumulation setting and compared with an fp32 product. It also compares every parameter's whole gradient with the bf16
head's on the same batch, and writes the optimized HLO of the untapped function (which GEMMs are FP8, with what).
"""

from __future__ import annotations

import argparse
import dataclasses
import gzip
import json
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from jaxrun import engine, ops, schedule, sharding
from jaxrun.checkpoint import Checkpointer
from jaxrun.config import load_config

TAP_NAMES = ("h", "w", "xq", "wq", "logits", "g", "dh", "dw")


def tapped_gathered_rows(sink: list):
    """ops.gathered_rows that also passes (tokens, cotangent) of the input-embedding rows to ``sink`` when it is
    differentiated: the loop's gradient function (engine.make_grad_fn) gathers the rows itself and takes their
    gradient, which is the input embedding's part of the table gradient before the scatter-add."""

    def keep(tokens, g):
        if not sink:
            sink.append({"tokens": np.asarray(tokens), "de": np.asarray(g)})

    @jax.custom_vjp
    def rows_of(rows, tokens):
        return rows

    def fwd(rows, tokens):
        return rows, tokens

    def bwd(tokens, g):
        jax.debug.callback(keep, tokens, g)
        return g, None

    rows_of.defvjp(fwd, bwd)
    return rows_of


def tapped_head(backend: str, sink: list):
    """An lm_head op with the signature of ops' heads that computes exactly what ``backend``'s FP8 head computes and
    passes its tensors of the first call to ``sink`` (the names of TAP_NAMES)."""
    if backend == "xla":
        fwd_impl, bwd_impl = ops.fp8_head_forward, ops._fp8_head_bwd
    else:
        from jaxrun.kernels import fp8_head

        fwd_impl, bwd_impl = fp8_head._fp8_lm_head_fwd, fp8_head._fp8_lm_head_bwd

    def keep(*arrays):
        if not sink:
            sink.append({name: np.asarray(a) for name, a in zip(TAP_NAMES, arrays)})

    def head(h, w, *, fp8, scales):
        assert fp8, "the tap is for the FP8 training head"
        scales = tuple(float(s) for s in scales)

        @jax.custom_vjp
        def f(h, w):
            return fwd_impl(h, w, scales)[0]

        def f_fwd(h, w):
            out, res = fwd_impl(h, w, scales)
            return out, (res, h, w, out)

        def f_bwd(saved, g):
            res, h, w, out = saved
            dh, dw = bwd_impl(scales, res, g)
            jax.debug.callback(keep, h, w, res[0], res[1], out, g, dh, dw)
            return dh, dw

        f.defvjp(f_fwd, f_bwd)
        return f(h, w)

    return head


def backward_variants(t: dict, scales, heads) -> dict:
    """The head's backward products of the tapped tensors, recomputed by each implementation stand-alone (the old and
    the new accumulation settings), against an fp32 product of the same FP8 operands; ms per call beside."""
    import time

    from jaxrun.ops import scaled_fp8_dot

    xs, ws, gs = scales
    xq, wq, g = (jnp.asarray(t[k]) for k in ("xq", "wq", "g"))
    gq = jax.jit(lambda g: ops.quantize_fp8(g, gs, jnp.float8_e5m2))(g)
    hi = jax.lax.Precision.HIGHEST
    ref = jax.jit(lambda gq, wq, xq: (jnp.dot(gq.astype(jnp.float32), wq.astype(jnp.float32), precision=hi) * (gs * ws),
                                      jnp.dot(gq.astype(jnp.float32).T, xq.astype(jnp.float32), precision=hi) * (gs * xs)),
                  compiler_options={"xla_allow_excess_precision": False})
    dh_ref, dw_ref = ref(gq, wq, xq)

    def rel(a, b):
        a, b = jnp.asarray(a, jnp.float32), b.astype(jnp.float32)
        return float(jnp.linalg.norm(a - b) / jnp.linalg.norm(b))

    out = {"tap": {"dh": rel(t["dh"], dh_ref), "dw": rel(t["dw"], dw_ref)}}
    print(f"    {'tap (in the step)':<20} dh {out['tap']['dh']:.4g}  dw {out['tap']['dw']:.4g}")
    cases = {
        "xla_fast": jax.jit(lambda gq, wq, xq: (scaled_fp8_dot(gq, wq, (1, 0), gs * ws, fast_accum=True),
                                                scaled_fp8_dot(gq, xq, (0, 0), gs * xs, fast_accum=True))),
        "xla_accurate": jax.jit(lambda gq, wq, xq: (scaled_fp8_dot(gq, wq, (1, 0), gs * ws, fast_accum=False),
                                                    scaled_fp8_dot(gq, xq, (0, 0), gs * xs, fast_accum=False))),
    }
    if "triton" in heads:
        from jaxrun.kernels import fp8_head as k

        def triton_case(fast):
            def f(g, wq, xq):
                kw = dict(fast_accum=fast, a_quant_scale=gs)
                dh = k.scaled_fp8_matmul(g, wq.T, out_scale=gs * ws, tiles=k.GRAD_INPUT_TILES, **kw)
                dw = k.scaled_fp8_matmul(g, xq.T, out_scale=gs * xs, tiles=k.GRAD_WEIGHT_TILES, a_transposed=True, **kw)
                return dh, dw
            return jax.jit(f)

        cases["triton_fast"] = triton_case(True)
        cases["triton_accurate"] = triton_case(False)
    for name, fn in cases.items():
        args = (g, wq, xq) if name.startswith("triton") else (gq, wq, xq)
        try:
            dh, dw = jax.block_until_ready(fn(*args))
            t0 = time.perf_counter()
            for _ in range(10):
                res = fn(*args)
            jax.block_until_ready(res)
            ms = (time.perf_counter() - t0) * 100
            out[name] = {"dh": rel(dh, dh_ref), "dw": rel(dw, dw_ref), "ms_dh_plus_dw": ms}
            if name.startswith("xla"):
                hlo = fn.lower(*args).compile().as_text()
                out[name]["fp8_gemms"] = hlo.count("matmul$f8")
                out[name]["gemms"] = [row[:300] for row in fp8_gemms(hlo)]
        except Exception as err:  # noqa: BLE001 - report and go on: this is a diagnostic
            out[name] = {"error": f"{type(err).__name__}: {err}"[:500]}
        print(f"    {name:<20} " + "  ".join(f"{k} {v:.4g}" for k, v in out[name].items() if isinstance(v, float)))
    return out


def fp8_gemms(hlo: str) -> list[str]:
    """The custom calls of an optimized HLO module that are GEMMs, one line each (operand types, target, config)."""
    rows = []
    for line in hlo.splitlines():
        if "custom_call_target=" in line and ("gemm" in line or "matmul" in line):
            target = re.search(r'custom_call_target="([^"]+)"', line).group(1)
            shapes = re.findall(r"(f8e4m3fn|f8e5m2|bf16|f32)\[[0-9,]*\]", line)
            cfg = re.search(r"backend_config=(\{.*\})", line)
            rows.append(f"{target} {' '.join(shapes[:4])} :: {cfg.group(1)[:600] if cfg else ''}")
    return rows


def converts_to_fp8(hlo: str) -> int:
    return len(re.findall(r"= f8e(?:4m3fn|5m2)\[[0-9,]*\][^ ]* convert\(", hlo))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--config", default="configs/record60.py")
    p.add_argument("--set", dest="overrides", action="append", default=[])
    p.add_argument("--resume", action="append", default=[],
                   help="also audit at this run's latest checkpoint (repeatable); the initial state (step 0) always")
    p.add_argument("--dump", required=True, help="folder for the tapped tensors and the report")
    p.add_argument("--heads", default="xla,triton", help="FP8 head backends to audit (comma-separated)")
    p.add_argument("--save", action="append", default=[], help="write the tapped tensors of TAG_BACKEND (e.g. step101_xla) "
                   "for tools/fp8_audit_torch.py")
    p.add_argument("--skip-initial", action="store_true", help="audit only the --resume states")
    args = p.parse_args()
    heads = args.heads.split(",")
    dump = Path(args.dump)
    dump.mkdir(parents=True, exist_ok=True)

    cfg = load_config(args.config, args.overrides)
    engine.enable_compile_cache(cfg)  # the untapped function is the training run's: from the cache
    session = engine.setup(cfg)  # the training run's mesh, shards, loader and state layout
    cfg, mesh, shapes = session.cfg, session.mesh, session.shapes
    fresh_data = session.loader.get_state()

    # The states to audit: (tag, state, loader state, step). Every one must be in the same phase (one compile).
    states = [] if args.skip_initial else [("step0", engine.initial_state(session), fresh_data, 0)]
    for run in args.resume:
        ckpt = Checkpointer(Path(run) / "checkpoints")
        state, data_state, meta = ckpt.restore(engine.abstract_state(session))
        ckpt.close()
        states.append((f"step{int(meta['step'])}", state, data_state, int(meta["step"])))
    shape = schedule.step_shape(states[0][3], cfg.schedule)
    assert all(engine.grad_key(schedule.step_shape(s[3], cfg.schedule)) == engine.grad_key(shape) for s in states), \
        "audit states must share one step variant (phase)"
    windows = (shape.window_short, shape.window_long)
    resolved = dict(cfg.model.backends)  # resolved once by engine.setup
    bf16_cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, fp8_head=False))
    lowered = {"loop": engine.lower_grad_fn(cfg, mesh, shapes, shape, session.kernels),
               "bf16": engine.lower_grad_fn(bf16_cfg, mesh, shapes, shape, session.kernels)}
    sinks = {}
    for head_backend in heads:  # the run's kernels with the head swapped for the tapped one
        sinks[head_backend] = sink = []
        # the head as its own op (head_loss's xla backend composes it), so the tap sees the head's gradient
        tapped = dataclasses.replace(session.kernels, lm_head=tapped_head(head_backend, sink), head_loss=ops.head_loss_xla)
        lowered[head_backend] = engine.lower_grad_fn(cfg, mesh, shapes, shape, tapped)
    with ThreadPoolExecutor(len(lowered)) as pool:
        compiled = dict(zip(lowered, pool.map(lambda low: low.compile(), lowered.values())))

    hlo = compiled["loop"].as_text()
    (dump / "hlo_loop.txt.gz").write_bytes(gzip.compress(hlo.encode()))
    report = {"backends": resolved, "device": jax.devices()[0].device_kind, "jax": jax.__version__,
              "windows": windows, "tied": shape.tied, "tokens_per_rank": shape.tokens_per_rank,
              "scales": list(cfg.model.fp8_scales),
              "hlo_loop": {"gemms": fp8_gemms(hlo), "converts_to_fp8": converts_to_fp8(hlo)}}
    print(f"[hlo loop, lm_head={resolved['lm_head']}] {converts_to_fp8(hlo)} converts to fp8; FP8 GEMM custom calls:")
    for row in fp8_gemms(hlo):
        if "f8" in row:
            print("   ", row[:700])

    quant = jax.jit(lambda g: ops.quantize_fp8(g, cfg.model.fp8_scales[2], jnp.float8_e5m2))
    for tag, state, data_state, step in states:
        session.loader.set_state(data_state)  # the batch the run's next step trains on
        local = engine.next_batch(session, step)
        batch = sharding.put_batch(mesh, {k: local[k] for k in engine.BATCH_KEYS}, cfg.data.num_ranks)
        dyn = jax.tree.map(jnp.asarray, engine.dyn_inputs(cfg, step))
        params = state["params"]
        rep = dict(report, step=step)
        loss_bf16, grads_bf16 = compiled["bf16"](params, batch, dyn)
        loss_loop, _ = compiled["loop"](params, batch, dyn)
        rep["loss_bf16_head"], rep["loss_loop"] = float(loss_bf16), float(loss_loop)
        for head_backend in heads:
            sinks[head_backend].clear()
            loss, grads = compiled[head_backend](params, batch, dyn)
            per_param = {}
            for name in grads:
                a, b = grads[name].astype(jnp.float32), grads_bf16[name].astype(jnp.float32)
                na, nb = float(jnp.linalg.norm(a)), float(jnp.linalg.norm(b))
                cos = float(jnp.vdot(a, b) / (na * nb)) if na > 0 and nb > 0 else float("nan")
                per_param[name] = {"cos_vs_bf16": cos, "norm_ratio_vs_bf16": na / nb if nb > 0 else float("nan")}
            rep[f"grads_{head_backend}"] = {"loss": float(loss), "per_param": per_param}
            print(f"[{tag} {head_backend}] loss {float(loss):.3f} (loop {float(loss_loop):.3f}, bf16 head {float(loss_bf16):.3f})")
            for name, r in per_param.items():
                print(f"    {name:<16} cos {r['cos_vs_bf16']:.5f}  norm ratio {r['norm_ratio_vs_bf16']:.4f}")
            del grads
            tapped = sinks[head_backend][0]
            xq_check = jax.jit(lambda h: ops.quantize_fp8(h, cfg.model.fp8_scales[0], jnp.float8_e4m3fn))(jnp.asarray(tapped["h"]))
            rep[f"xq_mismatch_{head_backend}"] = float(np.mean(np.asarray(xq_check).view(np.uint8) != tapped["xq"].view(np.uint8)))
            print(f"    xq: {rep[f'xq_mismatch_{head_backend}']:.4%} of entries differ from the stand-alone quantisation of h")
            if head_backend == heads[0]:
                rep["backward_variants"] = backward_variants(tapped, cfg.model.fp8_scales, heads)
            if f"{tag}_{head_backend}" not in args.save:
                sinks[head_backend].clear()
                del tapped
                continue
            # XLA's own e5m2 quantisation of the same incoming gradient, compiled on its own (the xla head fuses it)
            tapped["gq_jax"] = np.asarray(quant(jnp.asarray(tapped["g"])))
            for name, arr in tapped.items():
                np.save(dump / f"{tag}_{head_backend}_{name}.npy", arr.view(f"u{arr.dtype.itemsize}"))
            (dump / f"{tag}_{head_backend}_dtypes.json").write_text(json.dumps({k: str(v.dtype) for k, v in tapped.items()}))
            sinks[head_backend].clear()
            del tapped
        del grads_bf16
        (dump / f"{tag}_report.json").write_text(json.dumps(rep, indent=1))
    session.close()


if __name__ == "__main__":
    main()
