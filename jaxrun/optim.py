"""The record's optimizers (recipe §3) as optax transforms: NorMuon for the three matrix banks, cautious Adam for the rest.

Calling convention (recipe §3.4, §4.1), as train.py uses it:

    muon, adam = split_params(params)                  # by jaxrun.params' table, the one place the split lives
    masters = init_masters(muon)                       # fp32 masters of the bf16 banks, exactly equal at init
    muon_tx, adam_tx = normuon(cfg.optim, cfg.schedule), cautious_adam(cfg.optim, cfg.schedule)
    muon_state, adam_state = muon_tx.init(masters), adam_tx.init(adam)
    every step s (step = s, a traced int32):
        muon_grads, adam_grads = split_params(grads)
        updates, muon_state = muon_tx.update(muon_grads, muon_state, masters, step=s)
        masters = optax.apply_updates(masters, updates)
        bf16 banks = jax.tree.map(truncate_to_bf16, masters)          # recipe §3.2 item 7
        even s: acc = accumulate(None, adam_grads)                     # Adam waits for the next step
        odd s:  updates, adam_state = adam_tx.update(accumulate(acc, adam_grads), adam_state, adam, step=s)
                adam = optax.apply_updates(adam, updates)              # back to each parameter's dtype
        s == schedule.untie_step: params, adam_state = untie_embedding(params, adam_state)   # after the Adam step

State layout, for sharding along the leading (bank / row) axis: every per-parameter state array has its parameter's
shape (NorMuon's row second moment: the bank's shape with a trailing 1 instead of the columns); all are dicts keyed by
parameter name. Everything is batched over the bank axis: no Python loop per matrix.
"""

from __future__ import annotations

import math
import time
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax import export, lax

from jaxrun import params as param_table
from jaxrun import schedule
from jaxrun.config import ModelConfig, OptimConfig, ScheduleConfig
from jaxrun.params import MUON_PARAMS, TABLE

Params = dict[str, jax.Array]


def split_params(params: Params) -> tuple[Params, Params]:
    """(NorMuon banks, Adam parameters) of a flat parameter (or gradient) dict, by the table's optimizer (recipe §3.1)."""
    missing = [name for name in MUON_PARAMS if name not in params]
    if missing:
        raise KeyError(f"split_params: the NorMuon banks {missing} are missing from the parameter dict "
                       f"(expected all of {MUON_PARAMS} next to the Adam parameters; got {sorted(params)})")
    muon = {name: value for name, value in params.items() if name in MUON_PARAMS}
    adam = {name: value for name, value in params.items() if name not in MUON_PARAMS}
    return muon, adam


# --- fp32 masters and the bf16 copy (recipe §3.2 item 7) ------------------------------------------------------------------


def init_masters(muon_params: Params) -> Params:
    """fp32 master banks; every bf16 value is exactly representable, so the masters equal the bf16 banks."""
    return {name: bank.astype(jnp.float32) for name, bank in muon_params.items()}


def truncate_to_bf16(master: jax.Array) -> jax.Array:
    """The high 16 bits of each fp32 value as bf16 (round toward zero), like the reference's bf16 + mantissa pair."""
    if master.dtype != jnp.float32:
        raise TypeError(f"truncate_to_bf16 takes the fp32 master weights, got {master.dtype}")
    high = lax.bitcast_convert_type(master, jnp.uint32) >> 16  # logical shift: uint32
    return lax.bitcast_convert_type(high.astype(jnp.uint16), jnp.bfloat16)


# --- NorMuon (recipe §3.2) ------------------------------------------------------------------------------------------------


def _matmul_f32(a: jax.Array, b: jax.Array) -> jax.Array:
    """Batched bf16 matmul with fp32 accumulation."""
    return jnp.matmul(a, b, preferred_element_type=jnp.float32)


def polar_express_iterate(x: jax.Array, a: float, b: float, c: float, *, split_product: bool = False) -> jax.Array:
    """One Polar Express step on wide bf16 matrices (..., r, c<=...): A = X Xᵀ; B = bA + cA²; X = aX + BX.
    Each product has bf16 operands and fp32 accumulation and is rounded to bf16 once, after its fused epilogue, as
    the reference's Triton kernels and baddbmm do (recipe §7.3). split_product: BX is rounded to bf16 before aX is
    added and the sum rounded again, as the reference does for the MLP matrices (the table's split_product flag)."""
    gram = _matmul_f32(x, x.swapaxes(-1, -2)).astype(jnp.bfloat16)
    poly = (b * gram.astype(jnp.float32) + c * _matmul_f32(gram, gram)).astype(jnp.bfloat16)
    bx = _matmul_f32(poly, x)
    if split_product:  # pinned: XLA would otherwise fuse the add into the product and skip this rounding
        bx = lax.reduce_precision(bx, exponent_bits=8, mantissa_bits=7)
    return (a * x.astype(jnp.float32) + bx).astype(jnp.bfloat16)


def polar_express(u: jax.Array, coeffs, norm_scale: float, eps: float, *, split_product: bool = False) -> jax.Array:
    """Approximate orthogonal polar factor of each matrix in a batch (..., rows, cols), in bf16 (recipe §3.2 item 3).

    Tall matrices are transposed to wide first (X Xᵀ is then the small Gram matrix) and back at the end. Pure batched
    ops along the leading axes, so the batch may be sharded over devices.
    """
    tall = u.shape[-2] > u.shape[-1]
    x = u.astype(jnp.bfloat16)
    if tall:
        x = x.swapaxes(-1, -2)
    x32 = x.astype(jnp.float32)
    frobenius = jnp.sqrt(jnp.sum(jnp.square(x32), axis=(-2, -1), keepdims=True))
    x = (x32 / (frobenius * norm_scale + eps)).astype(jnp.bfloat16)  # spectral norm <= 1
    for a, b, c in coeffs:
        x = polar_express_iterate(x, a, b, c, split_product=split_product)
    return x.swapaxes(-1, -2) if tall else x


def normalize_rows(o: jax.Array, row_variance: jax.Array, beta2: float, eps: float) -> tuple[jax.Array, jax.Array]:
    """NorMuon's row normalisation of bf16 matrices o (..., rows, cols), reducing over the columns (recipe §3.2 item 4):
    rows are divided by a running RMS (row_variance (..., rows, 1), fp32, an EMA with beta2) and each matrix is
    rescaled back to its Frobenius norm. Returns (normalised o in bf16, new row_variance)."""
    ncols = o.shape[-1]
    row_mean_sq = jnp.mean(jnp.square(o.astype(jnp.float32)), axis=-1, keepdims=True)
    norm = jnp.sqrt(jnp.sum(row_mean_sq, axis=(-2, -1), keepdims=True) * ncols)
    row_variance = row_variance + (1 - beta2) * (row_mean_sq - row_variance)  # torch's lerp_(r, 1 - beta2)
    row_scale = lax.rsqrt(jnp.maximum(row_variance, eps))
    new_norm = jnp.sqrt(jnp.sum(row_mean_sq * ncols * jnp.square(row_scale), axis=(-2, -1), keepdims=True))
    scale = row_scale * (norm / jnp.maximum(new_norm, eps))
    return o * scale.astype(o.dtype), row_variance


def cautious_muon_update(o: jax.Array, master: jax.Array, lr: jax.Array, decay: jax.Array) -> jax.Array:
    """Update to ADD to the fp32 master (recipe §3.2 item 6): -lr * (decay * [O*P >= 0] * P + O).
    lr is the parameter's eta, decay = weight_decay * base lr * lr_factor (so the decay scales with lr²)."""
    o32 = o.astype(jnp.float32)
    mask = (o32 * master >= 0).astype(jnp.float32)
    return -(master * mask * decay * lr) - o32 * lr


class NorMuonState(NamedTuple):
    momentum: dict[str, jax.Array]  # per bank, the bank's shape, fp32
    row_variance: dict[str, jax.Array]  # per bank, (n, rows, 1) fp32: NorMuon's Q


# jax.export serialises a function's argument and result trees (jaxrun.lowering_cache keeps the update function's)
export.register_namedtuple_serialization(NorMuonState, serialized_name="jaxrun.optim.NorMuonState")


def _check_bank(name: str, shape: tuple[int, ...], cfg: OptimConfig) -> None:
    param_table.muon_lr_mul(name, cfg)  # a NorMuon bank with an lr_mul, or KeyError
    if len(shape) != 3:
        raise ValueError(f"normuon: bank {name!r} must be a stack (n, rows, cols) of matrices, got shape {shape}")
    _, rows, cols = shape
    if rows < cols:
        raise ValueError(f"normuon: bank {name!r} has stored matrices {rows}x{cols}; the row normalisation "
                         f"(recipe §3.2 item 4) is written for rows >= cols")
    if TABLE[name].square_blocks and rows % cols:
        raise ValueError(f"normuon: bank {name!r} ({rows}x{cols}) must split into square {cols}x{cols} blocks")


def _as_blocks(name: str, x: jax.Array, cols: int) -> jax.Array:
    """(n, rows, k) -> the batch of matrices that are orthogonalised and normalised separately: for square-block banks
    (the Q, K, V and O blocks of an attention matrix, recipe §3.2 item 2), (n * rows / cols, cols, k), where cols is the
    bank's column count (k = cols for updates, 1 for the row variance); other banks are orthogonalised whole."""
    return x.reshape(-1, cols, x.shape[-1]) if TABLE[name].square_blocks else x


def normuon(cfg: OptimConfig, sched: ScheduleConfig, *,
            orth_layout: Callable[[jax.Array], jax.Array] | None = None) -> optax.GradientTransformationExtraArgs:
    """NorMuon with Polar Express and cautious weight decay on fp32 masters (recipe §3.2), every number from cfg.

    update(grads, state, params, *, step): grads are the bf16 gradients of the banks (split_params), params the fp32
    master banks (init_masters), step the training step s (Python int or traced int32), giving the scheduled momentum
    and lr factor. Returns fp32 updates to ADD to the masters.

    orth_layout, if given, is applied to each stack of matrices (and its row statistics) before orthogonalisation:
    jaxrun.sharding passes a sharding constraint that splits the stack's matrix axis over the devices, so each device
    orthogonalises its share of the matrices and XLA gathers the results back into the masters' layout (the reference
    splits its matrices across ranks the same way, recipe §3.5).
    """
    place = orth_layout or (lambda x: x)

    def init_fn(params: Params) -> NorMuonState:
        for name, bank in params.items():
            _check_bank(name, bank.shape, cfg)
        return NorMuonState(
            momentum={name: jnp.zeros(bank.shape, jnp.float32) for name, bank in params.items()},
            row_variance={name: jnp.zeros((*bank.shape[:-1], 1), jnp.float32) for name, bank in params.items()},
        )

    def update_fn(grads: Params, state: NorMuonState, params: Params | None = None, *, step, **extra_args):
        del extra_args  # optax passes every transform's extra arguments to all of them
        if params is None:
            raise ValueError("normuon.update needs the fp32 master banks as params (the cautious weight decay reads them)")
        mu = schedule.muon_momentum(step, sched, cfg.muon_momentum_range)
        base_lr = cfg.muon_lr * schedule.lr_factor(step, sched)
        updates, momentum, row_variance = {}, {}, {}
        for name, grad in grads.items():
            master = params[name]
            if master.dtype != jnp.float32:
                raise TypeError(f"normuon.update: params must be the fp32 masters (init_masters), "
                                f"got {master.dtype} for {name!r}")
            _check_bank(name, master.shape, cfg)
            g = grad.astype(jnp.float32)
            # Nesterov-style momentum, both as torch's lerp (recipe §3.2 item 1): M <- lerp(M, G, 1-mu); U <- lerp(G, M, mu).
            m = state.momentum[name] + (1 - mu) * (g - state.momentum[name])
            u = m + (1 - mu) * (g - m)
            _, rows, cols = master.shape
            # The reference splits X <- aX + BX into two bf16 ops for its "mlp" group and fuses it for attention.
            o = polar_express(place(_as_blocks(name, u, cols)), cfg.polar_express_coeffs, cfg.polar_express_norm_scale,
                              cfg.polar_express_eps, split_product=TABLE[name].split_product)
            o, q = normalize_rows(o, place(_as_blocks(name, state.row_variance[name], cols)), cfg.muon_beta2,
                                  cfg.normuon_eps)
            # eta uses the STORED shape, so attention gets the x2 factor too (recipe §3.2 item 5).
            group = param_table.group(name, cfg)
            lr = jnp.float32(math.sqrt(max(1.0, rows / cols)) * group.lr_mul) * base_lr
            decay = cfg.muon_weight_decay * group.wd_mul * base_lr
            updates[name] = cautious_muon_update(o.reshape(master.shape), master, lr, decay)
            momentum[name], row_variance[name] = m, q.reshape(state.row_variance[name].shape)
        return updates, NorMuonState(momentum=momentum, row_variance=row_variance)

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


# --- cautious Adam (recipe §3.3, §3.4) ------------------------------------------------------------------------------------


class CautiousAdamState(NamedTuple):
    count: dict[str, jax.Array]  # per parameter, int32 (): Adam updates so far
    m: dict[str, jax.Array]  # per parameter, the parameter's shape, fp32
    v: dict[str, jax.Array]


export.register_namedtuple_serialization(CautiousAdamState, serialized_name="jaxrun.optim.CautiousAdamState")


def cautious_adam(cfg: OptimConfig, sched: ScheduleConfig) -> optax.GradientTransformationExtraArgs:
    """Adam with cautious decoupled weight decay ∝ lr² (recipe §3.3), per-parameter lr_mul / wd_mul / betas by name.

    The caller runs it only on ODD steps s, with the fp32 SUM of the gradients of steps s-1 and s (`accumulate`), and
    step=s (its lr factor is the odd step's, recipe §3.4); the last, even step's gradient is never applied.
    update(grads, state, params, *, step) returns fp32 updates to ADD (optax.apply_updates rounds p + u to each
    parameter's dtype). While the input embedding is tied to lm_head, "embed" is unused and its gradient is exactly
    zero: its moments stay zero, so its update is zero and the cautious decay (mask u * p > 0) leaves it alone, as in
    the reference, where it has no gradient; its step count does run on, but untie_embedding overwrites the whole
    state with lm_head's (recipe §1.11), so nothing of it survives.
    """

    def init_fn(params: Params) -> CautiousAdamState:
        for name in params:
            param_table.adam_group(name, cfg)  # an Adam parameter with a group, or KeyError
        return CautiousAdamState(
            count={name: jnp.zeros((), jnp.int32) for name in params},
            m={name: jnp.zeros(p.shape, jnp.float32) for name, p in params.items()},
            v={name: jnp.zeros(p.shape, jnp.float32) for name, p in params.items()},
        )

    def update_fn(grads: Params, state: CautiousAdamState, params: Params | None = None, *, step, **extra_args):
        del extra_args  # optax passes every transform's extra arguments to all of them
        if params is None:
            raise ValueError("cautious_adam.update needs the parameters (the cautious weight decay reads them)")
        base_lr = cfg.adam_lr * schedule.lr_factor(step, sched)
        updates, count, m, v = {}, dict(state.count), dict(state.m), dict(state.v)
        for name, grad in grads.items():
            p = params[name].astype(jnp.float32)
            group = param_table.adam_group(name, cfg)
            beta1, beta2 = group.betas
            g = grad.astype(jnp.float32)
            count[name] = state.count[name] + 1
            m[name] = state.m[name] * beta1 + g * (1 - beta1)
            v[name] = state.v[name] * beta2 + (1 - beta2) * g * g
            t = count[name].astype(jnp.float32)
            lr = base_lr * group.lr_mul
            step_size = lr * jnp.sqrt(1 - jnp.power(jnp.float32(beta2), t)) / (1 - jnp.power(jnp.float32(beta1), t))
            u = m[name] / (jnp.sqrt(v[name]) + cfg.adam_eps) * step_size  # eps on the UNCORRECTED sqrt(v)
            mask = (u * p > 0).astype(jnp.float32)  # strict, unlike NorMuon's >= (recipe §11.4)
            u = u + (lr * lr * cfg.adam_weight_decay * group.wd_mul) * p * mask
            updates[name] = -u
        return updates, CautiousAdamState(count=count, m=m, v=v)

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def accumulate(acc: Params | None, grads: Params) -> Params:
    """Running fp32 sum of the Adam gradients of the two steps of one Adam update (recipe §3.4); acc=None starts one.

    Deliberate deviation, kept: the reference sums in bf16 (recipe §14.4), where adding a step's gradient to a larger
    one drops its low bits. fp32 costs one fp32 buffer of the Adam parameters (ZeRO-sharded) and no time, and only
    removes that rounding; the micro-batch sum in engine.make_grad_fn is fp32 for the same reason."""
    if acc is None:
        return jax.tree.map(lambda g: g.astype(jnp.float32), grads)
    return jax.tree.map(lambda a, g: a + g.astype(jnp.float32), acc, grads)


def untie_embedding(params: Params, adam_state: CautiousAdamState) -> tuple[Params, CautiousAdamState]:
    """embed := lm_head, weights and Adam state (count, m, v) (recipe §1.11); called right after the Adam step of
    schedule.untie_step. params may be the full flat dict or the Adam part of it."""
    for name in ("lm_head", "embed"):
        if name not in params or name not in adam_state.m:
            raise KeyError(f"untie_embedding: {name!r} must be in both the parameters and the Adam state")

    def copy(d: dict) -> dict:
        return {**d, "embed": d["lm_head"]}

    return copy(params), CautiousAdamState(count=copy(adam_state.count), m=copy(adam_state.m), v=copy(adam_state.v))


# --- benchmark ----------------------------------------------------------------------------------------------------------


def _time_ms(fn, n_repeats: int) -> float:
    jax.block_until_ready(fn())  # compile and warm up
    start = time.perf_counter()
    for _ in range(n_repeats):
        jax.block_until_ready(fn())
    return (time.perf_counter() - start) / n_repeats * 1e3


def bench_normuon(cfg: OptimConfig, sched: ScheduleConfig, n_repeats: int = 20, *, model: ModelConfig, seed: int = 0) -> dict:
    """Time one NorMuon update of all banks of `model` (the 32 matrices of the record) done batched (one jitted update
    of the three banks) vs one matrix at a time (a jitted single-matrix update called once per matrix). Also reports the
    difference between the two results: the same arithmetic, but XLA may order a batched product's fp32 sums
    differently, and a bf16 rounding that flips early is carried through five Polar Express iterates, so single entries
    can move by several bf16 steps while the whole update (relative Frobenius difference) stays at rounding level."""
    shapes = {name: spec.shape for name, spec in param_table.shapes(model).items() if name in MUON_PARAMS}
    keys = jax.random.split(jax.random.key(seed), 2 * len(shapes))
    grads = {name: jax.random.normal(k, shape, jnp.bfloat16) for (name, shape), k in zip(shapes.items(), keys[::2])}
    masters = {name: 0.02 * jax.random.normal(k, shape, jnp.float32) for (name, shape), k in zip(shapes.items(), keys[1::2])}
    tx = normuon(cfg, sched)
    state = tx.init(masters)
    step = jnp.int32(sched.momentum_warmup_steps)

    batched = jax.jit(lambda g, st, p, s: tx.update(g, st, p, step=s))
    single = jax.jit(lambda g, st, p, s: tx.update(g, st, p, step=s))  # retraced per bank shape (3 variants)

    def one_matrix_inputs(name: str, i: int):
        pick = lambda x: x[i : i + 1]  # noqa: E731
        return ({name: pick(grads[name])},
                NorMuonState({name: pick(state.momentum[name])}, {name: pick(state.row_variance[name])}),
                {name: pick(masters[name])})

    per_matrix_inputs = [one_matrix_inputs(name, i) for name, shape in shapes.items() for i in range(shape[0])]

    def run_batched():
        return batched(grads, state, masters, step)

    def run_per_matrix():
        return [single(g, st, p, step) for g, st, p in per_matrix_inputs]

    batched_ms = _time_ms(run_batched, n_repeats)
    per_matrix_ms = _time_ms(run_per_matrix, n_repeats)
    batched_updates = run_batched()[0]
    pieces = iter(run_per_matrix())
    max_diff, sq_diff, sq_norm = 0.0, 0.0, 0.0
    for name, shape in shapes.items():
        stacked = jnp.concatenate([next(pieces)[0][name] for _ in range(shape[0])])
        max_diff = max(max_diff, float(jnp.max(jnp.abs(stacked - batched_updates[name]))))
        sq_diff += float(jnp.sum(jnp.square(stacked - batched_updates[name])))
        sq_norm += float(jnp.sum(jnp.square(batched_updates[name])))
    return {
        "device": jax.devices()[0].device_kind,
        "jax": jax.__version__,
        "banks": {name: list(shape) for name, shape in shapes.items()},
        "n_matrices": sum(shape[0] for shape in shapes.values()),
        "n_repeats": n_repeats,
        "batched_ms": batched_ms,
        "per_matrix_ms": per_matrix_ms,
        "speedup": per_matrix_ms / batched_ms,
        "max_abs_update_diff": max_diff,
        "rel_update_diff": math.sqrt(sq_diff / sq_norm),
        "max_abs_update": float(max(jnp.max(jnp.abs(u)) for u in batched_updates.values())),
    }


__all__ = [
    "CautiousAdamState",
    "NorMuonState",
    "accumulate",
    "bench_normuon",
    "cautious_adam",
    "cautious_muon_update",
    "init_masters",
    "normalize_rows",
    "normuon",
    "polar_express",
    "polar_express_iterate",
    "split_params",
    "truncate_to_bf16",
    "untie_embedding",
]
