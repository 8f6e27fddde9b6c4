"""Benchmarks of the heavy ops per backend, side by side in one run, with roofline floors and JSON output.

    python -m jaxrun.bench ops [--op NAME ...] [--json PATH]     every backend of each op at the record's shapes
    python -m jaxrun.bench tune-attention [--json PATH]           tile sweep of the triton attention kernels
    python -m jaxrun.bench step [--config PATH] [--phase N ...]   the whole training step per phase (jaxrun.stepbench)
    python -m jaxrun.bench model [--config PATH] [--set K=V]      model forward + backward on one micro-batch
    python -m jaxrun.bench normuon [--config PATH]                NorMuon update: batched vs one matrix at a time
    python -m jaxrun.bench project --step-json PATH [--devices 8]  the 8-GPU train time on paper (jaxrun.projection)

A case is one function of one backend at one shape, with the FLOPs and bytes it must at least do and move. Its floor
is max(FLOPs / matmul rate, bytes / copy bandwidth), the rates measured in the same run (`measure_rates`). Times are
medians of per-call averages over back-to-back calls (so dispatch overhead is amortised), synchronised with
block_until_ready, after compilation and warm-up.

Attention FLOPs count only the visible (query, key) pairs, exactly, from the segment ids and the window
(jaxrun.flops.visible_pairs): 4 d FLOPs per pair and head forward (QK^T and PV), 2.5x that backward as FlashAttention
counts it (dV, dP, dQ, dK plus the QK^T recompute), so fwd+bwd = 3.5 x forward.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxrun import engine, model, ops, profiling, projection, schedule, stepbench
from jaxrun.config import CONFIG_DIR, Config, load_config
from jaxrun.flops import train_step_flops, visible_pairs

BACKWARD_FLOPS_FACTOR = 2.5  # FlashAttention's convention: backward = 2.5 x forward


@dataclass
class Case:
    name: str  # what is computed at which shape; backends of one name are compared side by side
    backend: str
    fn: Callable = field(repr=False)
    args: tuple = field(repr=False)
    flops: float = 0.0
    bytes: float = 0.0
    rate: str = "bf16"  # the measured matmul rate that bounds the FLOPs: "bf16" or "fp8"
    note: str = ""  # e.g. "computes a different function"


# ----------------------------------------------------------------------------------------------------------------------
# Timing and rooflines
# ----------------------------------------------------------------------------------------------------------------------


def time_ms(fn, args, *, warmup=2, samples=5, min_sample_s=0.02) -> tuple[float, float]:
    """(median ms per call, compile s) of jit(fn)(*args). Each sample times enough back-to-back calls to last
    min_sample_s, then blocks; the result is the median of the samples' per-call averages."""
    start = time.perf_counter()
    compiled = jax.jit(fn).lower(*args).compile()
    compile_s = time.perf_counter() - start
    for _ in range(warmup):
        jax.block_until_ready(compiled(*args))
    start = time.perf_counter()
    jax.block_until_ready(compiled(*args))
    calls = max(1, int(min_sample_s / max(time.perf_counter() - start, 1e-6)))
    per_call = []
    for _ in range(samples):
        start = time.perf_counter()
        for _ in range(calls):
            out = compiled(*args)
        jax.block_until_ready(out)  # one stream: the last call finishing means all have
        per_call.append((time.perf_counter() - start) / calls)
    return statistics.median(per_call) * 1e3, compile_s


def _random(seed, shape, scale=1.0, dtype=jnp.bfloat16):
    return (jax.random.normal(jax.random.key(seed), shape, jnp.float32) * scale).astype(dtype)


def measure_rates(n: int | None = None, copy_bytes: int | None = None) -> dict[str, float]:
    """bf16 and FP8 (bf16 out) n^3 matmul FLOP/s through XLA, and copy bandwidth (bytes read + written); sizes
    default to ones that fill a GPU (smaller on CPU, where this is only a smoke test)."""
    on_gpu = jax.default_backend() == "gpu"
    n = n or (8192 if on_gpu else 512)
    copy_bytes = copy_bytes or (4 << 30 if on_gpu else 64 << 20)
    a, b = _random(11, (n, n)), _random(12, (n, n))
    fp8 = lambda a, b: lax.dot_general(a, b, (((1,), (1,)), ((), ())), preferred_element_type=jnp.bfloat16)  # noqa: E731
    x = jnp.ones((copy_bytes // 2,), jnp.bfloat16)
    time_ms(jnp.dot, (a, b))  # bring the clocks up before timing
    return {
        "bf16": 2.0 * n**3 / (time_ms(jnp.dot, (a, b))[0] * 1e-3),
        "fp8": 2.0 * n**3 / (time_ms(fp8, (a.astype(jnp.float8_e4m3fn), b.astype(jnp.float8_e4m3fn)))[0] * 1e-3),
        "copy": 2.0 * copy_bytes / (time_ms(lambda x: x + 1, (x,))[0] * 1e-3),
    }


def floor_ms(case: Case, rates: dict[str, float]) -> float:
    return max(case.flops / rates[case.rate], case.bytes / rates["copy"]) * 1e3


def with_vjp(f):
    """f's output and its VJP at a cotangent passed as the last argument, in one function (forward + backward)."""

    def run(*args):
        out, vjp = jax.vjp(f, *args[:-1])
        return out, vjp(args[-1])

    return run


def backends(op: str, names) -> dict[str, Callable]:
    """The named backends of an op that can be imported here (the others are reported and skipped)."""
    found = {}
    for name in names:
        try:
            found[name] = ops.get(op, name)
        except ops.BackendUnavailableError as err:
            print(f"skipping {op}/{name}: {err}", flush=True)
    return found


# ----------------------------------------------------------------------------------------------------------------------
# Attention cases
# ----------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AttentionShape:
    label: str
    rows: int  # T, or 2T for a paired layout (recipe §1.6)
    heads: int
    window: int  # in rows
    rows_per_token: int  # 2 for a paired layout: both rows of a token share its segment
    backward: bool = True


def attention_shapes(cfg: Config) -> list[AttentionShape]:
    """The record's attention calls: per training phase (and the extension) the standard short and long windows and
    the paired layout; at the final validation the long window. Shapes are per device."""
    m, s = cfg.model, cfg.schedule
    h = m.num_heads
    shapes = []
    for stage in schedule.stages(s):
        label, t, (short, long) = stage.label, stage.tokens_per_rank, stage.window_blocks
        short_w, long_w = short * s.window_block_size, long * s.window_block_size
        shapes += [
            AttentionShape(f"{label} short", t, h, short_w, 1),
            AttentionShape(f"{label} long", t, h, long_w, 1),
            AttentionShape(f"{label} paired", 2 * t, h // 2, short_w, 2),
        ]
    short_w = s.window_blocks[-1][0] * s.window_block_size
    long_w = s.final_eval_long_window * s.window_block_size
    shapes += [
        AttentionShape("final val long", cfg.data.val_seq_len, h, long_w, 1, backward=False),
        AttentionShape("final val paired", 2 * cfg.data.val_seq_len, h // 2, short_w, 2, backward=False),
    ]
    return shapes


def random_documents(tokens: int, max_len: int, rng: np.random.Generator) -> np.ndarray:
    """Non-decreasing segment ids of documents with lengths uniform in 1..max_len, cut at `tokens`."""
    ends = np.cumsum(rng.integers(1, max_len + 1, size=tokens))  # at least `tokens` documents of length >= 1
    return np.searchsorted(ends, np.arange(tokens), side="right").astype(np.int32)


def cudnn_without_documents(q, k, v, seg_ids, scale: float, *, window: int):
    """Public cuDNN causal + sliding window with NO document mask (seg_ids ignored): a different function, timed as
    the speed reference that GPU.md measured."""
    del seg_ids
    return jax.nn.dot_product_attention(
        q[None], k[None], v[None], scale=scale, is_causal=True, local_window_size=(window, 0), implementation="cudnn"
    )[0]


def attention_call(attention, *, scale, window: int, backward: bool, **kwargs):
    """attention as a function of (q, k, v, seg_ids), or of (q, k, v, seg_ids, dout) returning (out, (dq, dk, dv))."""

    def forward(q, k, v, seg_ids):
        return attention(q, k, v, seg_ids, scale, window=window, **kwargs)

    def forward_backward(q, k, v, seg_ids, dout):
        return with_vjp(lambda q, k, v: forward(q, k, v, seg_ids))(q, k, v, dout)

    return forward_backward if backward else forward


def attention_inputs(shape: AttentionShape, head_dim: int, max_doc_len: int, seed: int):
    """Random bf16 q, k, v, dout and segment ids of random documents (1..max_doc_len tokens; a paired layout's two
    rows of a token share its segment)."""
    tokens = shape.rows // shape.rows_per_token
    seg = np.repeat(random_documents(tokens, max_doc_len, np.random.default_rng(seed)), shape.rows_per_token)
    q, k, v, dout = (_random(10 * seed + j, (shape.rows, shape.heads, head_dim)) for j in range(4))
    return q, k, v, dout, seg


ATTENTION_BACKENDS = ("triton", "cudnn", "xla", "cudnn-nodoc")
# Forward-only timings (to split a fwd+bwd time) are taken for the kernel and the cuDNN reference; at the validation
# shapes (forward only) for every backend but the slow xla reference. Keyed by "the shape has a backward".
FORWARD_ONLY_SKIPPED = {True: ("cudnn", "xla"), False: ("xla",)}


def attention_cases(cfg: Config | None = None, names=ATTENTION_BACKENDS, shapes=None) -> list[Case]:
    """Each backend at each of the record's attention shapes (or the given ones), plus public cuDNN without
    documents as a speed reference."""
    cfg = cfg or load_config(CONFIG_DIR / "record60.py")
    d, scale = cfg.model.head_dim, cfg.schedule.attn_scale_init
    found = backends("attention", [n for n in names if n != "cudnn-nodoc"])
    cases = []
    for i, shape in enumerate(shapes or attention_shapes(cfg)):
        q, k, v, dout, seg = attention_inputs(shape, d, cfg.data.max_doc_len, seed=i)
        seg_ids = jnp.asarray(seg)
        io = 2.0 * shape.rows * shape.heads * d  # bytes of one (T, H, d) bf16 tensor
        pairs = visible_pairs(seg, shape.window) * shape.heads
        nodoc_pairs = visible_pairs(np.zeros_like(seg), shape.window) * shape.heads
        name = f"attention {shape.label} T={shape.rows} H={shape.heads} W={shape.window}"
        # forward reads q, k, v and writes out; backward reads q, k, v, out, dout and writes dq, dk, dv
        variants = [(f"{name} fwd", False, 1.0, 4 * io)]
        if shape.backward:
            variants.append((f"{name} fwd+bwd", True, 1.0 + BACKWARD_FLOPS_FACTOR, 12 * io))
        for case_name, backward, factor, nbytes in variants:
            args = (q, k, v, seg_ids, dout) if backward else (q, k, v, seg_ids)
            for backend, attention in found.items():
                if not backward and backend in FORWARD_ONLY_SKIPPED[shape.backward]:
                    continue
                # cuDNN's packed layout needs a static bound on the documents: the true count here, rounded up
                extra = {"max_segments": -(-(int(seg[-1]) + 1) // 64) * 64} if backend == "cudnn" else {}
                fn = attention_call(attention, scale=jnp.float32(scale), window=shape.window, backward=backward, **extra)
                cases.append(Case(case_name, backend, fn, args, factor * 4 * d * pairs, nbytes))
            if "cudnn-nodoc" not in names:
                continue
            nodoc = attention_call(cudnn_without_documents, scale=scale, window=shape.window, backward=backward)
            cases.append(Case(case_name, "cudnn-nodoc", nodoc, args, factor * 4 * d * nodoc_pairs, nbytes,
                              note="no document mask: a different function; FLOPs on its own visible pairs"))
    return cases


# ----------------------------------------------------------------------------------------------------------------------
# Dense op cases: FP8 LM head, ReLU² MLP, soft-capped cross entropy
# ----------------------------------------------------------------------------------------------------------------------


def training_tokens(cfg: Config) -> list[int]:
    """Tokens per device in each training phase (recipe §4)."""
    return [n * cfg.schedule.seq_len for n in cfg.schedule.seqs_per_rank]


def lm_head_cases(cfg: Config | None = None, names=("xla", "triton")) -> list[Case]:
    """The FP8 training head, forward and forward + backward, per phase; and the bare FP8 GEMM at the head's shape
    (bf16 out, unscaled) through XLA (cuBLASLt) and through the triton kernel, the pair the kernel is measured by."""
    cfg = cfg or load_config(CONFIG_DIR / "record60.py")
    m = cfg.model
    v, d = m.vocab_size, m.model_dim
    found = backends("lm_head", names)
    gemm = lambda a, b: lax.dot_general(a, b, (((1,), (1,)), ((), ())), preferred_element_type=jnp.bfloat16)  # noqa: E731
    cases = []
    for t in training_tokens(cfg):
        h, w, dlogits = _random(1, (t, d)), _random(2, (v, d), m.init_lm_head_std), _random(3, (t, v), 0.05)
        flops, io = 2.0 * t * v * d, 2.0 * (t * d + v * d + t * v)
        for backend, head in found.items():
            fp8 = lambda h, w, head=head: head(h, w, fp8=True, scales=m.fp8_scales)  # noqa: E731
            cases.append(Case(f"lm_head T={t} fp8 fwd", backend, fp8, (h, w), flops, io, "fp8"))
            # the backward reads dlogits and writes dh and dW
            cases.append(Case(f"lm_head T={t} fp8 fwd+bwd", backend, with_vjp(fp8), (h, w, dlogits), 3 * flops,
                              io + 2.0 * (t * v + t * d + v * d), "fp8"))  # fmt: skip
        xq, wq = h.astype(jnp.float8_e4m3fn), (w * 100).astype(jnp.float8_e4m3fn)
        gemm_io = t * d + v * d + 2.0 * t * v
        name = f"lm_head T={t} FP8 GEMM only"
        cases.append(Case(name, "xla", gemm, (xq, wq), flops, gemm_io, "fp8", note="cuBLASLt via lax.dot_general"))
        if "triton" in found:
            from jaxrun.kernels import fp8_head

            kernel = lambda a, b: fp8_head.scaled_fp8_matmul(  # noqa: E731
                a, b, out_scale=1.0, fast_accum=True, tiles=fp8_head.FORWARD_TILES
            )
            cases.append(Case(name, "triton", kernel, (xq, wq), flops, gemm_io, "fp8"))
    return cases


def mlp_cases(cfg: Config | None = None, names=("xla", "triton")) -> list[Case]:
    """relu(u fc^T)^2 proj, forward and forward + backward per phase, forward at the validation length."""
    cfg = cfg or load_config(CONFIG_DIR / "record60.py")
    d, f = cfg.model.model_dim, cfg.model.mlp_hidden
    found = backends("mlp", names)
    cases = []
    for t, backward in [(t, True) for t in training_tokens(cfg)] + [(cfg.data.val_seq_len, False)]:
        u, fc, proj, g = _random(1, (t, d)), _random(2, (f, d), d**-0.5), _random(3, (f, d), f**-0.5), _random(4, (t, d))
        flops, io = 4.0 * t * f * d, 2.0 * (2 * t * d + 2 * f * d)  # u, fc, proj read; out written
        for backend, mlp in found.items():
            cases.append(Case(f"mlp T={t} fwd", backend, mlp, (u, fc, proj), flops, io))
            if backward:  # the backward reads g and writes du, dfc, dproj
                cases.append(Case(f"mlp T={t} fwd+bwd", backend, with_vjp(mlp), (u, fc, proj, g), 3 * flops, 2 * io))
    return cases


def cross_entropy_cases(cfg: Config | None = None, names=("xla", "triton")) -> list[Case]:
    """The soft-capped MTP cross entropy (phase-1 weights), forward and forward + backward per phase, and the
    next-token forward on one evaluation chunk (ModelConfig.eval_token_chunk tokens, recipe §2.2). Memory-bound: the
    floor counts the logits read by each pass and d_logits written."""
    cfg = cfg or load_config(CONFIG_DIR / "record60.py")
    m = cfg.model
    v, depth = m.vocab_size, max(len(w) for w in cfg.schedule.mtp_weights)
    found = backends("cross_entropy", names)
    next_token = (1.0,) + (0.0,) * (depth - 1)
    cases = []
    shapes = [(t, cfg.schedule.mtp_weights[0], True) for t in training_tokens(cfg)]
    for t, weights, backward in shapes + [(m.eval_token_chunk, next_token, False)]:
        logits = _random(1, (t, v), 2.0)
        targets = jax.random.randint(jax.random.key(2), (t,), 0, v, jnp.int32)
        weights = jnp.asarray(weights + (0.0,) * (depth - len(weights)), jnp.float32)
        label = "mtp" if backward else "next-token"
        for backend, ce in found.items():
            loss = lambda lg, w, ce=ce, targets=targets: ce(lg, targets, w, softcap=m.softcap)  # noqa: E731
            cases.append(Case(f"cross_entropy T={t} {label} fwd", backend, loss, (logits, weights), 0.0, 2.0 * t * v))
            if backward:  # the backward reads the logits again and writes d_logits
                cases.append(Case(f"cross_entropy T={t} {label} fwd+bwd", backend, with_vjp(loss),
                                  (logits, weights, jnp.ones((t,), jnp.float32)), 0.0, 6.0 * t * v))  # fmt: skip
    return cases


def head_loss_cases(cfg: Config | None = None, names=("xla", "triton")) -> list[Case]:
    """The training loss of the FP8 head and the CE (phase-1 weights), forward + backward per phase: xla is the two
    ops in a row (the xla head, then the triton CE where it runs, else the xla CE), triton the fused kernel. The floor
    counts the FP8 products at the FP8 rate, or the logits' bytes once read and their e5m2 gradient written."""
    cfg = cfg or load_config(CONFIG_DIR / "record60.py")
    m = cfg.model
    v, d = m.vocab_size, m.model_dim
    found = backends("head_loss", names)
    on_gpu = jax.default_backend() == "gpu"  # the triton module imports anywhere; its kernels run only there
    ce_name = "triton" if on_gpu and "triton" in backends("cross_entropy", ("triton",)) else "xla"
    parts = {"lm_head": ops.lm_head_xla, "cross_entropy": ops.get("cross_entropy", ce_name)}
    weights = jnp.asarray(schedule.mtp_weights(0, cfg.schedule))  # phase 1's, zero-padded as the step passes them
    cases = []
    for t in training_tokens(cfg):
        h, w = _random(1, (t, d)), _random(2, (v, d), m.init_lm_head_std * 50)
        targets = jax.random.randint(jax.random.key(3), (t,), 0, v, jnp.int32)
        for backend, head_loss in found.items():
            loss = lambda h, w, head_loss=head_loss, targets=targets: head_loss(  # noqa: E731
                h, w, targets, weights, fp8=True, scales=m.fp8_scales, softcap=m.softcap, **parts)
            note = f"lm_head xla + cross_entropy {ce_name}" if backend == "xla" else "one kernel for CE + e5m2 grad"
            cases.append(Case(f"head_loss T={t} fp8 fwd+bwd", backend, with_vjp(loss), (h, w, jnp.float32(1.0)),
                              3 * 2.0 * t * v * d, 3.0 * t * v, "fp8", note=note))  # fmt: skip
    return cases


# op -> case builder(cfg, backend names); backend names are the ops registry's plus bench-only references.
OP_CASES: dict[str, Callable[..., list[Case]]] = {
    "attention": attention_cases,
    "lm_head": lm_head_cases,
    "mlp": mlp_cases,
    "cross_entropy": cross_entropy_cases,
    "head_loss": head_loss_cases,
}


# ----------------------------------------------------------------------------------------------------------------------
# The whole model on one micro-batch, and the NorMuon update
# ----------------------------------------------------------------------------------------------------------------------


def bench_model(cfg: Config, phase: int | None = None, seed: int = 0) -> dict:
    """Forward + backward of the whole model (the summed training loss and the gradients of every parameter) on one
    micro-batch of the given phase (default: the last, 49,152 tokens in the record) at that phase's windows, tied or
    not as the phase is; random tokens in random documents. Peak memory is this process's high-water mark, so run it
    in a fresh process for a clean figure."""
    sched = cfg.schedule
    phase = stepbench.num_phases(cfg) - 2 if phase is None else phase
    s = stepbench.step_pair(cfg, phase)[0]
    shape = schedule.step_shape(s, sched)
    t = shape.tokens_per_rank
    rng = np.random.default_rng(seed)
    tokens = rng.integers(0, cfg.model.vocab_size, size=t + 1).astype(np.int32)
    batch = {"inputs": jnp.asarray(tokens[:-1]), "targets": jnp.asarray(tokens[1:]),
             "seg_ids": jnp.asarray(random_documents(t, cfg.data.max_doc_len, rng))}
    params = jax.jit(lambda k: model.init_params(cfg.model, k))(jax.random.key(seed))
    dyn = engine.dyn_inputs(cfg, s)
    windows = (shape.window_short, shape.window_long)
    kernels = ops.kernels(cfg.model.backends)  # resolved and imported once, as the engine does
    loss_and_grads = jax.value_and_grad(
        lambda p, b, d: model.train_loss(p, b, d, cfg=cfg.model, windows=windows, tied=shape.tied, kernels=kernels))
    ms, compile_s = time_ms(loss_and_grads, (params, batch, dyn), samples=5, min_sample_s=0.0)
    step_flops = train_step_flops(cfg.model, np.asarray(batch["seg_ids"])[None], windows)
    result = {
        "phase": stepbench.phase_label(cfg, phase), "step": s, "tokens": t, "windows": list(windows), "tied": shape.tied,
        "backends": dict(kernels.backends),
        "ms": ms, "compile_s": compile_s, "tflops": step_flops / ms * 1e-9, "flops": step_flops,
        "peak_memory_bytes": engine.peak_memory_bytes(jax.local_devices()[:1]),
    }
    memory = result["peak_memory_bytes"]
    print(f"model fwd+bwd, {result['phase']} (step {s}): {t:,} tokens, windows {windows[0]}/{windows[1]}, "
          f"{'tied' if shape.tied else 'untied'}; backends {result['backends']}: {ms:.2f} ms, "
          f"{result['tflops']:.0f} TFLOP/s, compile {compile_s:.1f} s, peak memory "
          + (f"{memory / 2**30:.2f} GiB" if memory is not None else "n/a"), flush=True)
    return result


def bench_normuon_command(cfg: Config, repeats: int) -> dict:
    from jaxrun import optim

    result = optim.bench_normuon(cfg.optim, cfg.schedule, repeats, model=cfg.model)
    print(f"NorMuon update of {result['n_matrices']} matrices ({', '.join(f'{k} {tuple(v)}' for k, v in result['banks'].items())}) "
          f"on {result['device']}: batched {result['batched_ms']:.2f} ms, one matrix at a time {result['per_matrix_ms']:.2f} ms "
          f"({result['speedup']:.1f}x); largest difference {result['max_abs_update_diff']:.2e} "
          f"(largest update {result['max_abs_update']:.2e})", flush=True)
    return result


# ----------------------------------------------------------------------------------------------------------------------
# Attention tile sweep
# ----------------------------------------------------------------------------------------------------------------------

# (block_m, block_n, num_warps, num_stages) per kernel; dkdv's block_n is its key block. All compile for sm_90a with
# at most a few bytes of register spill (checked offline with ptxas) except where noted in the commit.
TILE_CANDIDATES = {
    "fwd": [(128, 64, 8, 3), (128, 128, 8, 3), (64, 64, 4, 3), (128, 32, 8, 3)],
    # dQ reads the dK dV kernel's dS tiles: its key block is theirs (64), its query rows a multiple of theirs
    "dq": [(128, 64, 8, 3), (64, 64, 4, 3), (64, 64, 8, 2), (32, 64, 4, 2)],
    # its key block stays the table's dQ key block (64; AttentionConfig checks it), so no 128-key tiles
    "dkdv": [(32, 64, 4, 2), (16, 64, 4, 2), (32, 64, 4, 3), (64, 64, 4, 2), (64, 64, 4, 3)],
}


TUNE_SHAPES = ("phase 1 short", "extension long")  # the two window classes of the table


def tune_attention(cfg: Config | None = None, labels=TUNE_SHAPES, kernels=tuple(TILE_CANDIDATES)) -> list[dict]:
    """Time each tile candidate of each kernel at representative training shapes, the other two kernels at the
    table's config: the forward alone for "fwd", forward + backward for "dq" and "dkdv"."""
    from jaxrun.kernels import flash_attention as fa

    cfg = cfg or load_config(CONFIG_DIR / "record60.py")
    d, scale = cfg.model.head_dim, jnp.float32(cfg.schedule.attn_scale_init)
    rows = []
    for i, shape in enumerate(s for s in attention_shapes(cfg) if s.label in labels):
        q, k, v, dout, seg = attention_inputs(shape, d, cfg.data.max_doc_len, seed=i)
        seg_ids = jnp.asarray(seg)
        base = fa.config_for(shape.window, d)
        for kernel in kernels:
            candidates = TILE_CANDIDATES[kernel]
            backward = kernel != "fwd"
            args = (q, k, v, seg_ids, dout) if backward else (q, k, v, seg_ids)
            for tiles in candidates:
                row = {"shape": shape.label, "rows": shape.rows, "heads": shape.heads, "window": shape.window,
                       "kernel": kernel, "tiles": tiles, "is_table": getattr(base, kernel) == fa.KernelConfig(*tiles)}
                try:  # a tile the kernels refuse with the table's other two, or that does not compile or run, is reported
                    config = dataclasses.replace(base, **{kernel: fa.KernelConfig(*tiles)})
                    fn = attention_call(fa.attention, scale=scale, window=shape.window, backward=backward, config=config)
                    row["ms"] = time_ms(fn, args, samples=3, min_sample_s=0.01)[0]
                except Exception as err:  # noqa: BLE001 - the sweep goes on
                    row["error"] = f"{type(err).__name__}: {err}"[:300]
                print(f"{shape.label:18s} T={shape.rows:6d} H={shape.heads} W={shape.window:5d} {kernel:4s} "
                      f"{str(tiles):18s} {row.get('ms', float('nan')):8.3f} ms{' (table)' if row['is_table'] else ''}"
                      f"{' ' + row['error'] if 'error' in row else ''}", flush=True)
                rows.append(row)
    return rows


# ----------------------------------------------------------------------------------------------------------------------
# Running, table, CLI
# ----------------------------------------------------------------------------------------------------------------------


def run(cases: list[Case], rates: dict[str, float]) -> list[dict]:
    rows = []
    for case in cases:
        row = {k: v for k, v in asdict(case).items() if k not in ("fn", "args")}
        try:
            row["ms"], row["compile_s"] = time_ms(case.fn, case.args)
            row["floor_ms"] = floor_ms(case, rates)
            row["tflops"] = case.flops / row["ms"] * 1e-9
        except Exception as err:  # a backend that fails here is reported, the others still run
            row["error"] = f"{type(err).__name__}: {err}"[:500]
        print_row(row)
        rows.append(row)
    return rows


def print_row(row: dict) -> None:
    if "error" in row:
        print(f"{row['name']:62s} {row['backend']:11s} FAILED {row['error']}", flush=True)
        return
    print(f"{row['name']:62s} {row['backend']:11s} {row['ms']:9.3f} ms  {row['tflops']:6.1f} TFLOP/s  "
          f"floor {row['floor_ms']:8.3f} ms ({100 * row['floor_ms'] / row['ms']:5.1f}%)"
          f"{'  [' + row['note'] + ']' if row['note'] else ''}", flush=True)  # fmt: skip


def print_table(rows: list[dict], reference_backends=("cudnn-nodoc", "xla")) -> None:
    """One line per case, grouped by name, with each backend's time relative to the reference backends' times
    (>1 means faster than the reference)."""
    by_name: dict[str, dict[str, dict]] = {}
    for row in rows:
        by_name.setdefault(row["name"], {})[row["backend"]] = row
    header = f"{'case':62s} {'backend':11s} {'ms':>9s} {'TFLOP/s':>8s} {'%floor':>7s}"
    header += "".join(f" {'vs ' + ref:>15s}" for ref in reference_backends)
    print("\n" + header)
    for name, group in by_name.items():
        for backend, row in group.items():
            if "error" in row:
                print(f"{name:62s} {backend:11s} FAILED")
                continue
            line = f"{name:62s} {backend:11s} {row['ms']:9.3f} {row['tflops']:8.1f} {100 * row['floor_ms'] / row['ms']:6.1f}%"
            for ref in reference_backends:
                ref_row = group.get(ref)
                ok = ref_row is not None and "error" not in ref_row and backend != ref
                line += f" {ref_row['ms'] / row['ms']:14.2f}x" if ok else f" {'':15s}"
            print(line)


# cuDNN attention is exact only up to a static number of documents per call (NaN beyond), so auto never picks it.
NOT_FOR_AUTO = {("attention", "cudnn")}


def pick_backends(rows: list[dict]) -> dict[str, str]:
    """op -> the backend with the least total time over the op's forward + backward cases (what a training step runs),
    among the registry's backends that ran every one of those cases without error."""
    totals: dict[str, dict[str, float]] = {}
    failed: set[tuple[str, str]] = set()
    for row in rows:
        op = row["name"].split()[0]
        if "fwd+bwd" not in row["name"] or (op, row["backend"]) not in ops.BACKENDS or (op, row["backend"]) in NOT_FOR_AUTO:
            continue
        if "error" in row:
            failed.add((op, row["backend"]))
        else:
            totals.setdefault(op, {}).setdefault(row["backend"], 0.0)
            totals[op][row["backend"]] += row["ms"]
    picks = {}
    for op, by_backend in totals.items():
        ok = {b: ms for b, ms in by_backend.items() if (op, b) not in failed}
        if ok:
            picks[op] = min(ok, key=ok.get)
    return picks


def environment() -> dict:
    env = {"device": jax.devices()[0].device_kind, "jax": jax.__version__, "backend": jax.default_backend()}
    for module in ("jaxlib", "triton", "jax_triton"):
        try:
            env[module] = __import__(module).__version__
        except Exception:  # not installed here
            env[module] = None
    env.update(engine.xla_environment())  # what the figures were measured with
    return env


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m jaxrun.bench", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    ops_parser = commands.add_parser("ops", help="every backend of each op at the record's shapes")
    ops_parser.add_argument("--op", choices=sorted(OP_CASES), action="append", help="repeatable; default: all")
    ops_parser.add_argument("--backend", action="append", help="repeatable; default: every backend of the op")
    ops_parser.add_argument("--config", default=str(CONFIG_DIR / "record60.py"), help="shapes from this config")
    ops_parser.add_argument("--json", help="write the environment, rates and every row here")
    ops_parser.add_argument("--no-auto", action="store_true",
                            help="do not record the fastest backends for `auto` (default: recorded in "
                                 "$JAXRUN_AUTO_BACKENDS or ~/.cache/jaxrun/auto_backends.json on a GPU)")
    tune_parser = commands.add_parser("tune-attention", help="tile sweep of the triton attention kernels")
    tune_parser.add_argument("--shape", action="append", help=f"shape label, repeatable; default: {', '.join(TUNE_SHAPES)}")
    tune_parser.add_argument("--kernel", action="append", choices=sorted(TILE_CANDIDATES), help="repeatable; default: all")
    tune_parser.add_argument("--json", help="write every timing here")
    model_parser = commands.add_parser("model", help="forward + backward of the whole model on one micro-batch: time, memory")
    model_parser.add_argument("--config", default=str(CONFIG_DIR / "record60.py"))
    model_parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    model_parser.add_argument("--phase", type=int, help="0-based phase whose micro-batch and windows to use (default: "
                              "the last scheduled phase, 49,152 tokens in the record)")
    model_parser.add_argument("--json")
    normuon_parser = commands.add_parser("normuon", help="one NorMuon update of every matrix: batched vs one at a time")
    normuon_parser.add_argument("--config", default=str(CONFIG_DIR / "record60.py"))
    normuon_parser.add_argument("--repeats", type=int, default=20)
    normuon_parser.add_argument("--json")
    step_parser = commands.add_parser("step", help="the whole training step per phase: time, tokens/s, MFU, memory, compile")
    stepbench.add_arguments(step_parser)
    project_parser = commands.add_parser("project", help="the D-GPU train time on paper from a one-rank `bench step` "
                                         "and the D-device step's collectives")
    projection.add_arguments(project_parser)
    args = parser.parse_args(argv)
    if args.command == "step" and args.profile:
        # before JAX starts its backend (environment() below does): every traced kernel then names its HLO instruction
        os.environ["XLA_FLAGS"] = profiling.xla_flags_for_profiling(os.environ.get("XLA_FLAGS", ""))

    env = environment()
    print(", ".join(f"{k} {v}" for k, v in env.items() if v != ""), flush=True)
    if args.command == "step":
        result = stepbench.command(args, step_parser, env)
    elif args.command == "project":
        result = {"environment": env, **projection.command(args, project_parser)}
    elif args.command == "model":
        result = {"environment": env, **bench_model(load_config(args.config, args.overrides), args.phase)}
    elif args.command == "normuon":
        result = {"environment": env, **bench_normuon_command(load_config(args.config), args.repeats)}
    elif args.command == "tune-attention":
        rows = tune_attention(labels=args.shape or TUNE_SHAPES, kernels=args.kernel or tuple(TILE_CANDIDATES))
        result = {"environment": env, "rows": rows}
    else:
        rates = measure_rates()
        print(f"measured: bf16 {rates['bf16'] / 1e12:.0f} TFLOP/s, fp8 {rates['fp8'] / 1e12:.0f} TFLOP/s, "
              f"copy {rates['copy'] / 1e12:.2f} TB/s", flush=True)  # fmt: skip
        rows = []
        cfg = load_config(args.config)
        for op in args.op or sorted(OP_CASES):
            builder = OP_CASES[op]
            rows += run(builder(cfg, args.backend) if args.backend else builder(cfg), rates)
        print_table(rows)
        picks = pick_backends(rows)
        result = {"environment": env, "rates": rates, "rows": rows, "auto": picks}
        print(f"fastest (auto): {', '.join(f'{op} {b}' for op, b in sorted(picks.items())) or 'nothing measured'}")
        if picks and env["backend"] == "gpu" and not args.no_auto:
            print(f"auto now picks these on {env['device']}: recorded in {ops.write_auto_picks(picks, env['device'])}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
