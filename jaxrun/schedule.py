"""Every schedule of the recipe as a pure function of the training step s (recipe §4, §1.7, §1.11).

Step-dependent *shapes* (tokens per rank, attention windows, tied/untied embedding, Adam or not) are static Python values
(`StepShape`): each distinct one is a compiled step variant. Step-dependent *numbers* that enter the traced step function
(`lr_factor`, `muon_momentum`, `mtp_weights`) accept a Python int (returning Python/numpy values computed in float64) or
a traced int32 step (returning float32 arrays), so one compiled step serves every s. The YaRN state changes only at a
few steps and is computed host-side in float32 as the reference does (`yarn_state`), then passed to the step as arrays.

Phase boundaries follow the reference's float expressions exactly (phase = int(n * (s / N)), lr_max switches at
x > p / n, cooldown at x >= 1 - cooldown_frac); they are turned into integer thresholds once so that the Python and the
traced paths agree.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import jax.numpy as jnp
import numpy as np

from jaxrun.config import ScheduleConfig


def _num_phases(cfg: ScheduleConfig) -> int:
    return len(cfg.seqs_per_rank)


def stage_label(p: int, num_phases: int) -> str:
    """The name of stage p of a schedule with num_phases phases: "phase 1" .. "phase n", then "extension" (recipe §4).
    The one place the phase vocabulary is spelled; logs without a config (jaxrun.compare) use it too."""
    if not 0 <= p <= num_phases:
        raise ValueError(f"stage {p} is not in a schedule of {num_phases} phases (0 .. {num_phases}, the last the extension)")
    return "extension" if p == num_phases else f"phase {p + 1}"


@dataclass(frozen=True)
class Stage:
    """One stage of the schedule as one record: a phase of the scheduled steps, or the extension after them (which
    keeps the last phase's batch, lr_max and MTP weights and has its own windows, recipe §4)."""

    index: int  # 0 .. n-1 the phases, n the extension
    label: str  # stage_label
    first_step: int
    end_step: int  # exclusive; the extension ends at total_steps (the final evaluation)
    seqs_per_rank: int
    tokens_per_rank: int
    window_blocks: tuple[int, int]  # (short, long) in blocks of window_block_size
    lr_max: float  # the flat learning-rate multiplier before the cooldown ([NOTE] recipe §4: it switches at x > p/n)
    mtp_weights: tuple[float, ...]  # at the stage's start (schedule.mtp_weights has the decay inside it)


def stages(cfg: ScheduleConfig) -> tuple[Stage, ...]:
    """The n phases and the extension, in order; any number of phases (the record has three)."""
    n = _num_phases(cfg)
    starts = phase_starts(cfg)
    edges = (*starts, cfg.total_steps)
    out = []
    for p in range(n + 1):
        last = min(p, n - 1)  # the extension keeps the last phase's batch, lr_max and MTP weights
        out.append(Stage(index=p, label=stage_label(p, n), first_step=edges[p], end_step=edges[p + 1],
                         seqs_per_rank=cfg.seqs_per_rank[last], tokens_per_rank=cfg.seqs_per_rank[last] * cfg.seq_len,
                         window_blocks=tuple(cfg.window_blocks[p]), lr_max=cfg.lr_max[last],
                         mtp_weights=tuple(cfg.mtp_weights[last])))
    return tuple(out)


def num_stages(cfg: ScheduleConfig) -> int:
    """Scheduled phases plus the extension."""
    return _num_phases(cfg) + 1


def tied_at(s: int, cfg: ScheduleConfig) -> bool:
    """Whether the input embedding is still the lm_head after s optimizer steps, i.e. during training step s and at the
    validation after s steps: the untie happens after the optimizer step of untie_step (recipe §1.11, §4)."""
    return s <= untie_step(cfg)


def _first_step_where(guess: int, holds) -> int:
    """Smallest s near `guess` (exact for these monotone float conditions) with holds(s) true."""
    s = max(0, guess)
    while s > 0 and holds(s - 1):
        s -= 1
    while not holds(s):
        s += 1
    return s


def phase_starts(cfg: ScheduleConfig) -> tuple[int, ...]:
    """First step of each phase 0 .. n-1, then of the extension (= scheduled_steps)."""
    n, total = _num_phases(cfg), cfg.scheduled_steps
    # The reference's get_bs/get_ws: index = int(n * (s / N)) (recipe §4).
    starts = [_first_step_where(math.ceil(p * total / n), lambda s, p=p: int(n * (s / total)) >= p) for p in range(n)]
    return (*starts, total)


def _lr_max_starts(cfg: ScheduleConfig) -> tuple[int, ...]:
    """First step at which lr_max[p] applies, p = 1 .. n-1: the reference switches at x > p/n (strict), which differs
    from the phase start when p * N / n is an integer (e.g. the tiny config)."""
    n, total = _num_phases(cfg), cfg.scheduled_steps
    return tuple(_first_step_where(math.floor(p * total / n), lambda s, p=p: s / total > p / n) for p in range(1, n))


def _cooldown_start(cfg: ScheduleConfig) -> int:
    total = cfg.scheduled_steps
    return _first_step_where(math.ceil((1 - cfg.cooldown_frac) * total), lambda s: s / total >= 1 - cfg.cooldown_frac)


def _check_step(s: int, cfg: ScheduleConfig) -> int:
    if isinstance(s, bool) or not isinstance(s, (int, np.integer)):
        raise TypeError(f"step must be a Python int here (a static schedule value), got {type(s).__name__}")
    if not 0 <= s <= cfg.total_steps:
        raise ValueError(f"step {s} is outside the schedule 0 .. {cfg.total_steps} (scheduled_steps + extension_steps; "
                         f"{cfg.total_steps} is the final evaluation)")
    return int(s)


def _is_static(s) -> bool:
    return isinstance(s, (int, np.integer)) and not isinstance(s, bool)


def phase(s: int, cfg: ScheduleConfig) -> int:
    """0 .. n-1 for the scheduled phases, n (= 3 in the record) for the extension steps and the final evaluation."""
    s = _check_step(s, cfg)
    return sum(s >= start for start in phase_starts(cfg)[1:])


def tokens_per_rank(s: int, cfg: ScheduleConfig) -> int:
    """Tokens in one rank's packed sequence at step s; the extension keeps the last phase's size (recipe §4)."""
    return cfg.seqs_per_rank[min(phase(s, cfg), _num_phases(cfg) - 1)] * cfg.seq_len


def window_blocks(s: int, cfg: ScheduleConfig) -> tuple[int, int]:
    """(short, long) attention windows in blocks of window_block_size tokens during training step s."""
    short, long = cfg.window_blocks[phase(s, cfg)]
    return short, long


def untie_step(cfg: ScheduleConfig) -> int:
    """The step after whose optimizer update embed := lm_head (recipe §1.11): the reference's ceil(2/3 * N) | 1, i.e. the
    first step of the last phase, made odd so that Adam has just stepped (1157 in the record)."""
    return phase_starts(cfg)[_num_phases(cfg) - 1] | 1


def _step_array(s):
    """(numpy or jax.numpy, the step as an integer scalar, the float dtype to compute in) for a Python int (float64,
    host-side) or a traced step (float32)."""
    if _is_static(s):
        return np, np.int64(s), np.float64
    return jnp, jnp.asarray(s, jnp.int32), jnp.float32


def _exact_ratio(numerator, denominator: int, ftype):
    """numerator / denominator for an integer numerator: formed in integers first, so float32 loses no digits to
    cancellation (1 - 3x near the end of a phase)."""
    return numerator.astype(ftype) / denominator


def _count_reached(xp, step, thresholds: tuple[int, ...]):
    return sum((step >= t).astype(xp.int32) for t in thresholds) if thresholds else xp.int32(0)


def lr_factor(s, cfg: ScheduleConfig):
    """Multiplier of both base learning rates at step s (recipe §4): flat lr_max per phase, linear cooldown to lr_floor
    from x = 1 - cooldown_frac, lr_floor after the scheduled steps. lr_max changes inside the cooldown, so the factor
    jumps up at the last phase's start ([NOTE] recipe §4, 1.0478 -> 1.1860 at s = 1157)."""
    xp, step, ftype = _step_array(s)
    lr_max = xp.asarray(cfg.lr_max, dtype=ftype)[_count_reached(xp, step, _lr_max_starts(cfg))]
    w = _exact_ratio(cfg.scheduled_steps - step, cfg.scheduled_steps, ftype) / cfg.cooldown_frac  # (1 - x) / cooldown_frac
    cooled = lr_max * w + (1 - w) * cfg.lr_floor
    out = xp.where(step >= _cooldown_start(cfg), cooled, lr_max)
    out = xp.where(step > cfg.scheduled_steps, xp.asarray(cfg.lr_floor, dtype=ftype), out)
    return float(out) if xp is np else out


def muon_momentum(s, cfg: ScheduleConfig, momentum_range: tuple[float, float]):
    """NorMuon momentum mu(s) (recipe §4): linear warmup from momentum_range[0] to [1], flat, then a linear drop of
    momentum_cooldown_drop over momentum_cooldown_steps after momentum_cooldown_start. momentum_range is
    OptimConfig.muon_momentum_range."""
    xp, step, ftype = _step_array(s)
    lo, hi = momentum_range
    f = step.astype(ftype)
    warm = lo + (f / cfg.momentum_warmup_steps) * (hi - lo)
    cool = hi - ((f - cfg.momentum_cooldown_start) / cfg.momentum_cooldown_steps) * cfg.momentum_cooldown_drop
    out = xp.where(step < cfg.momentum_warmup_steps, warm, xp.where(step > cfg.momentum_cooldown_start, cool, hi))
    return float(out) if xp is np else out.astype(ftype)


def mtp_weights(s, cfg: ScheduleConfig):
    """Multi-token-prediction weights at step s, zero-padded to the longest phase's length (recipe §4):
    each phase starts from cfg.mtp_weights[p]; when it has more than one weight, its last one decays linearly to 0
    across the phase ([1, .5, .25(1-3x)] -> [1, .5(2-3x)] -> [1]). The extension keeps the last phase's weights."""
    n = _num_phases(cfg)
    width = max(len(w) for w in cfg.mtp_weights)
    base = np.zeros((n, width))
    decays = np.zeros((n, width), dtype=bool)
    for p, weights in enumerate(cfg.mtp_weights):
        base[p, : len(weights)] = weights
        decays[p, len(weights) - 1] = len(weights) > 1
    xp, step, ftype = _step_array(s)
    p = xp.minimum(_count_reached(xp, step, phase_starts(cfg)[1:n]), n - 1)
    factor = xp.clip(_exact_ratio((p + 1) * cfg.scheduled_steps - n * step, cfg.scheduled_steps, ftype), 0, 1)  # p + 1 - n x
    out = xp.asarray(base, dtype=ftype)[p] * xp.where(xp.asarray(decays)[p], factor, 1)
    return out.astype(np.float32 if xp is np else jnp.float32)


def _linspace_f32(n: int) -> np.ndarray:
    """torch.linspace(0, 1, n, dtype=float32) as torch computes it: step = 1 / (n - 1) in float32, start + i * step for
    the first half and end - (n - 1 - i) * step for the second (symmetric about the middle)."""
    step = np.float32(1.0) / np.float32(n - 1)
    i = np.arange(n)
    low = i.astype(np.float32) * step
    high = np.float32(1.0) - (n - 1 - i).astype(np.float32) * step
    return np.where(i < n // 2, low, high).astype(np.float32)


def yarn_state(s: int, cfg: ScheduleConfig, head_dim: int, min_freq: float) -> tuple[np.ndarray, float]:
    """(rope_freqs f32 (head_dim // 4,), attn_scale) in force at step s (recipe §1.7).

    Base frequencies f_k = min_freq ** (k / (n - 1)) (ModelConfig.rope_min_freq); every long-window change old -> new at
    a step <= s applies one YaRN update, whose rotation counts use the current (already updated) frequencies.

    Computed in float32 op by op as the reference computes them (its linspace, then each update with its Python
    scalars rounded to float32): a float64 computation gave frequencies up to 5 float32 ulps away, and 2.6% of the
    bf16 rotary table entries one bf16 step away. The attention scale is a Python float in the reference too.
    """
    s = _check_step(s, cfg)
    n = head_dim // 4
    if n < 2:
        raise ValueError(f"yarn_state needs head_dim >= 8 (head_dim // 4 rotating frequencies), got head_dim={head_dim}")
    f32 = np.float32
    # the float32 power correctly rounded (through float64): torch's float32 pow gives it on these inputs (all 32
    # values checked against torch 2.13 on CPU), numpy's float32 pow misses 7 of them by one ulp
    freqs = (np.float64(f32(min_freq)) ** _linspace_f32(n).astype(np.float64)).astype(f32)
    scale = float(cfg.attn_scale_init)
    old = cfg.window_blocks[0][1]
    for p, start in enumerate(phase_starts(cfg)[1:], start=1):
        if start > s:
            break
        new = cfg.window_blocks[p][1]
        if new != old:
            rotations = f32(cfg.window_block_size * old) * freqs / f32(2 * math.pi)
            ratio = old / new
            ramp = np.clip((rotations - f32(cfg.yarn_alpha)) / f32(cfg.yarn_beta - cfg.yarn_alpha), f32(0), f32(1))
            freqs = freqs * (f32(ratio) + ramp * f32(1 - ratio))
            scale *= 1 + cfg.yarn_attn_factor * math.log(new / old)
        old = new
    return freqs.astype(f32), scale


@dataclass(frozen=True)
class StepShape:
    """Everything about a training step that is static in the compiled step function."""

    tokens_per_rank: int
    window_short: int  # tokens (blocks * window_block_size)
    window_long: int
    tied: bool  # input embedding = lm_head (recipe §1.11)
    adam: bool  # odd step: Adam steps on the two-step gradient sum (recipe §3.4)


def step_shape(s: int, cfg: ScheduleConfig) -> StepShape:
    if _check_step(s, cfg) == cfg.total_steps:
        raise ValueError(f"step {s} is the final evaluation, not a training step (training steps are 0 .. {cfg.total_steps - 1})")
    short, long = window_blocks(s, cfg)
    return StepShape(
        tokens_per_rank=tokens_per_rank(s, cfg),
        window_short=short * cfg.window_block_size,
        window_long=long * cfg.window_block_size,
        tied=tied_at(s, cfg),
        adam=s % 2 == 1,
    )


def eval_windows(s: int, cfg: ScheduleConfig, final: bool) -> tuple[int, int]:
    """(short, long) windows in tokens for the validation at step s; the final one raises the long window to
    final_eval_long_window without a YaRN update (recipe §2.2), the short window is unchanged."""
    short, long = window_blocks(s, cfg)
    if final:
        long = cfg.final_eval_long_window
    return short * cfg.window_block_size, long * cfg.window_block_size


def all_step_shapes(cfg: ScheduleConfig) -> tuple[StepShape, ...]:
    """Every distinct training-step variant, in order of first use (for ahead-of-time compilation)."""
    return tuple(dict.fromkeys(step_shape(s, cfg) for s in range(cfg.total_steps)))


__all__ = [
    "Stage",
    "StepShape",
    "all_step_shapes",
    "eval_windows",
    "lr_factor",
    "mtp_weights",
    "muon_momentum",
    "phase",
    "phase_starts",
    "stage_label",
    "stages",
    "num_stages",
    "tied_at",
    "step_shape",
    "tokens_per_rank",
    "untie_step",
    "window_blocks",
    "yarn_state",
]
