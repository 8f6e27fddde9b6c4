"""Schedules against SPEC §4 / §1.7 / §12: the listed values, and direct transcriptions of the SPEC formulas at every step."""

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrun import schedule as S
from jaxrun.config import load_config

RECORD = load_config("configs/record60.py")
TINY = load_config("configs/tiny.py")
REC = RECORD.schedule
MU_RANGE = RECORD.optim.muon_momentum_range


# --- independent transcriptions of SPEC §4 (record numbers typed in from the SPEC text) -------------------------------


def spec_lr(s, n_sched=1735, lr_max=(1.0, 1.52, 1.73), cooldown=0.5, floor=0.1):
    if s > n_sched:
        return floor
    x = s / n_sched
    top = lr_max[0] if x <= 1 / 3 else lr_max[1] if x <= 2 / 3 else lr_max[2]
    if x >= 1 - cooldown:
        w = (1 - x) / cooldown
        return top * w + floor * (1 - w)
    return top


def spec_mu(s, warm=300, cd_start=1725, cd_steps=50):
    if s < warm:
        return 0.85 + 0.10 * s / warm
    if s <= cd_start:
        return 0.95
    return 0.95 - 0.10 * (s - cd_start) / cd_steps


def spec_mtp(s, n_sched=1735):
    x = s / n_sched
    if x < 1 / 3:
        return [1.0, 0.5, 0.25 * (1 - 3 * x)]
    if x < 2 / 3:
        return [1.0, 0.5 * (1 - (3 * x - 1)), 0.0]
    return [1.0, 0.0, 0.0]


# --- SPEC §12 values ----------------------------------------------------------------------------------------------------

LR_VALUES = {0: 1.0, 578: 1.0, 579: 1.52, 867: 1.52, 868: 1.5192, 1000: 1.3031, 1156: 1.0478, 1157: 1.1860, 1300: 0.9173,
             1500: 0.5416, 1725: 0.1188, 1734: 0.1019, 1735: 0.1, 1774: 0.1}


@pytest.mark.parametrize("s,expected", sorted(LR_VALUES.items()))
def test_lr_factor_spec_values(s, expected):
    assert S.lr_factor(s, REC) == pytest.approx(expected, abs=6e-5)
    assert float(S.lr_factor(jnp.int32(s), REC)) == pytest.approx(expected, abs=6e-5)


def test_lr_factor_jumps_up_at_last_phase():
    assert S.lr_factor(1157, REC) > S.lr_factor(1156, REC) + 0.13  # [NOTE] SPEC §4: 1.0478 -> 1.1860


@pytest.mark.parametrize("s,expected", [(0, 0.85), (100, 0.8833), (300, 0.95), (1000, 0.95), (1725, 0.95), (1735, 0.93),
                                        (1750, 0.90), (1774, 0.852)])
def test_muon_momentum_spec_values(s, expected):
    assert S.muon_momentum(s, REC, MU_RANGE) == pytest.approx(expected, abs=6e-5)
    assert float(S.muon_momentum(jnp.int32(s), REC, MU_RANGE)) == pytest.approx(expected, abs=6e-5)


def test_mtp_spec_values():
    np.testing.assert_allclose(S.mtp_weights(0, REC), [1, 0.5, 0.25])
    np.testing.assert_allclose(S.mtp_weights(578, REC), [1, 0.5, 0.00014], atol=5e-6)
    np.testing.assert_allclose(S.mtp_weights(579, REC), [1, 0.49942, 0], atol=5e-6)
    np.testing.assert_allclose(S.mtp_weights(1156, REC), [1, 0.00058, 0], atol=5e-6)
    np.testing.assert_array_equal(S.mtp_weights(1157, REC), [1, 0, 0])
    np.testing.assert_array_equal(S.mtp_weights(1774, REC), [1, 0, 0])
    assert S.mtp_weights(0, REC).dtype == np.float32 and S.mtp_weights(jnp.int32(0), REC).dtype == jnp.float32
    assert min(w for s in range(REC.total_steps) for w in S.mtp_weights(s, REC) if w != 0) > 0  # SPEC §14.7: all > 0


# --- every step against the transcriptions, Python and traced -----------------------------------------------------------


@pytest.mark.parametrize("cfg", [REC, TINY.schedule], ids=["record60", "tiny"])
def test_scalar_schedules_every_step(cfg):
    steps = range(cfg.total_steps)
    lr_ref = [spec_lr(s, cfg.scheduled_steps) for s in steps]
    mu_ref = [spec_mu(s, cfg.momentum_warmup_steps, cfg.momentum_cooldown_start, cfg.momentum_cooldown_steps) for s in steps]
    mtp_ref = [spec_mtp(s, cfg.scheduled_steps) for s in steps]
    steps = range(cfg.total_steps)
    np.testing.assert_allclose([S.lr_factor(s, cfg) for s in steps], lr_ref, rtol=1e-12)
    np.testing.assert_allclose([S.muon_momentum(s, cfg, MU_RANGE) for s in steps], mu_ref, rtol=1e-12)
    np.testing.assert_allclose(np.stack([S.mtp_weights(s, cfg) for s in steps]), mtp_ref, rtol=1e-6, atol=1e-9)

    traced = jax.jit(jax.vmap(lambda s: (S.lr_factor(s, cfg), S.muon_momentum(s, cfg, MU_RANGE), S.mtp_weights(s, cfg))))
    lr, mu, mtp = traced(jnp.arange(cfg.total_steps, dtype=jnp.int32))
    assert lr.dtype == mu.dtype == mtp.dtype == jnp.float32 and mtp.shape == (cfg.total_steps, 3)
    np.testing.assert_allclose(lr, lr_ref, rtol=2e-6)
    np.testing.assert_allclose(mu, mu_ref, rtol=2e-6)
    np.testing.assert_allclose(mtp, mtp_ref, rtol=2e-5, atol=1e-8)


def test_lr_max_switches_one_step_after_an_exact_third():
    # 150 scheduled steps: s = 50 is exactly x = 1/3, phase 1 by int(3x) but still lr_max 1.0 by x > 1/3 (reference get_lr).
    t = dataclasses.replace(TINY.schedule, scheduled_steps=150, extension_steps=10)
    assert S.phase(50, t) == 1 and S.phase(49, t) == 0
    assert S.lr_factor(50, t) == 1.0 and S.lr_factor(51, t) == 1.52
    assert float(S.lr_factor(jnp.int32(50), t)) == 1.0


# --- phases, shapes, windows ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("s,ph,tokens,windows", [(0, 0, 16384, (1, 3)), (578, 0, 16384, (1, 3)), (579, 1, 32768, (3, 7)),
                                                 (1156, 1, 32768, (3, 7)), (1157, 2, 49152, (5, 11)), (1734, 2, 49152, (5, 11)),
                                                 (1735, 3, 49152, (6, 13)), (1774, 3, 49152, (6, 13)), (1775, 3, 49152, (6, 13))])
def test_phase_tokens_windows(s, ph, tokens, windows):
    assert S.phase(s, REC) == ph
    assert S.tokens_per_rank(s, REC) == tokens
    assert S.window_blocks(s, REC) == windows


def test_token_total_matches_spec():
    assert sum(S.tokens_per_rank(s, REC) * 8 for s in range(REC.total_steps)) == 470_417_408  # SPEC §9
    assert sum(S.step_shape(s, REC).adam for s in range(REC.total_steps)) == 887  # SPEC §12


def test_untie_step():
    assert S.untie_step(REC) == 1157
    # tiny: 42 scheduled steps, last phase from s = 28, made odd -> 29; with 150 steps: 100 -> 101
    assert S.untie_step(TINY.schedule) == 29
    assert S.untie_step(dataclasses.replace(TINY.schedule, scheduled_steps=150)) == 101
    assert S.untie_step(REC) % 2 == 1 and S.untie_step(TINY.schedule) % 2 == 1


def test_step_shapes():
    assert S.step_shape(0, REC) == S.StepShape(16384, 128, 384, tied=True, adam=False)
    assert S.step_shape(1157, REC) == S.StepShape(49152, 640, 1408, tied=True, adam=True)
    assert S.step_shape(1158, REC) == S.StepShape(49152, 640, 1408, tied=False, adam=False)
    assert S.step_shape(1774, REC) == S.StepShape(49152, 768, 1664, tied=False, adam=False)
    shapes = S.all_step_shapes(REC)
    assert len(shapes) == len(set(shapes)) == 9
    assert set(shapes) == {S.step_shape(s, REC) for s in range(REC.total_steps)}
    assert shapes[0] == S.step_shape(0, REC)


def test_eval_windows():
    assert S.eval_windows(0, REC, final=False) == (128, 384)
    assert S.eval_windows(750, REC, final=False) == (384, 896)
    assert S.eval_windows(1250, REC, final=False) == (640, 1408)
    assert S.eval_windows(1750, REC, final=False) == (768, 1664)
    assert S.eval_windows(1775, REC, final=True) == (768, 2560)


# --- YaRN -------------------------------------------------------------------------------------------------------------

SPEC_FINAL_FREQS = [1, 0.79964, 0.63942, 0.50422, 0.35601, 0.25451, 0.17184, 0.11121, 0.073630, 0.050803, 0.036175,
                    0.026393, 0.019625, 0.014811, 0.011310, 0.0087174, 0.0067691, 0.0052874, 0.0041495, 0.0032973, 0.0026366,
                    0.0021083, 0.0016859, 0.0013481, 0.0010780, 8.6202e-4, 6.8930e-4, 5.5119e-4, 4.4076e-4, 3.5244e-4,
                    2.8183e-4, 2.2536e-4]


def yarn(s):
    return S.yarn_state(s, REC, RECORD.model.head_dim, RECORD.model.rope_min_freq)


def test_yarn_attn_scale():
    for s, scale in [(0, 0.1), (578, 0.1), (579, 0.116946), (1156, 0.116946), (1157, 0.127518), (1735, 0.131778), (1775, 0.131778)]:
        assert yarn(s)[1] == pytest.approx(scale, abs=6e-7), s


def test_yarn_frequencies():
    base, _ = yarn(0)
    np.testing.assert_allclose(base, (1 / 1024) ** (np.arange(32) / 31), rtol=1e-6)
    after_first = yarn(579)[0] / base
    np.testing.assert_allclose(after_first[:3], 1, rtol=1e-6)
    np.testing.assert_allclose(after_first[[3, 4, 18]], [0.9862, 0.8707, 0.4303], atol=6e-5)
    np.testing.assert_allclose(after_first[19:], 3 / 7, rtol=1e-6)
    second = yarn(1157)[0] / yarn(1156)[0]
    np.testing.assert_allclose(second[:6], 1, rtol=1e-6)
    assert second[6] == pytest.approx(0.9328, abs=6e-5)
    np.testing.assert_allclose(second[19:], 7 / 11, rtol=1e-6)
    third = yarn(1735)[0] / yarn(1734)[0]
    assert third[7] == pytest.approx(0.9688, abs=6e-5)
    np.testing.assert_allclose(third[19:], 11 / 13, rtol=1e-6)
    final, _ = yarn(1775)
    assert final.dtype == np.float32 and final.shape == (32,)
    np.testing.assert_allclose(final, SPEC_FINAL_FREQS, rtol=6e-5)


def test_yarn_tiny_head_dim():
    freqs, scale = S.yarn_state(TINY.schedule.total_steps, TINY.schedule, TINY.model.head_dim, TINY.model.rope_min_freq)
    assert freqs.shape == (TINY.model.head_dim // 4,) and np.all(np.diff(freqs) < 0)
    assert scale == pytest.approx(0.1 * (1 + 0.2 * math.log(7 / 3)) * (1 + 0.2 * math.log(11 / 7)) * (1 + 0.2 * math.log(13 / 11)))


# --- bad input ---------------------------------------------------------------------------------------------------------


def test_bad_steps_raise():
    with pytest.raises(ValueError, match="outside the schedule 0 .. 1775"):
        S.phase(-1, REC)
    with pytest.raises(ValueError, match="outside the schedule"):
        S.window_blocks(1776, REC)
    with pytest.raises(ValueError, match="final evaluation, not a training step"):
        S.step_shape(1775, REC)
    with pytest.raises(TypeError, match="Python int"):
        S.phase(jnp.int32(3), REC)
    with pytest.raises(ValueError, match="head_dim >= 8"):
        S.yarn_state(0, REC, 4, 1 / 1024)
