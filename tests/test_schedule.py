"""Schedules against recipe §4 / §1.7 / §12: the listed values, and direct transcriptions of the recipe's formulas at every step."""

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


# --- independent transcriptions of recipe §4 (record numbers typed in from the recipe text) -------------------------------


def spec_lr(s, n_sched=1735, lr_max=(1.0, 1.52, 1.73), cooldown=0.5, floor=0.1, phases=3):
    if s > n_sched:
        return floor
    x = s / n_sched
    top = lr_max[sum(x > p / phases for p in range(1, phases))]  # lr_max[p] once x > p / n
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


# --- recipe §12 values ----------------------------------------------------------------------------------------------------

LR_VALUES = {0: 1.0, 578: 1.0, 579: 1.52, 867: 1.52, 868: 1.5192, 1000: 1.3031, 1156: 1.0478, 1157: 1.1860, 1300: 0.9173,
             1500: 0.5416, 1725: 0.1188, 1734: 0.1019, 1735: 0.1, 1774: 0.1}


@pytest.mark.parametrize("s,expected", sorted(LR_VALUES.items()))
def test_lr_factor_spec_values(s, expected):
    assert S.lr_factor(s, REC) == pytest.approx(expected, abs=6e-5)
    assert float(S.lr_factor(jnp.int32(s), REC)) == pytest.approx(expected, abs=6e-5)


def test_lr_factor_jumps_up_at_last_phase():
    assert S.lr_factor(1157, REC) > S.lr_factor(1156, REC) + 0.13  # [NOTE] recipe §4: 1.0478 -> 1.1860


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
    assert min(w for s in range(REC.total_steps) for w in S.mtp_weights(s, REC) if w != 0) > 0  # recipe §14.7: all > 0


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
    assert sum(S.tokens_per_rank(s, REC) * 8 for s in range(REC.total_steps)) == 470_417_408  # recipe §9
    assert sum(S.step_shape(s, REC).adam for s in range(REC.total_steps)) == 887  # recipe §12


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

RECIPE_FINAL_FREQS = [1, 0.79964, 0.63942, 0.50422, 0.35601, 0.25451, 0.17184, 0.11121, 0.073630, 0.050803, 0.036175,
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
    np.testing.assert_allclose(final, RECIPE_FINAL_FREQS, rtol=6e-5)


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


# float32 bit patterns of the reference's YaRN frequencies, from its own code (Yarn.reset and Yarn.apply run with torch
# 2.13 on CPU): at the start and after the three long-window changes.
TORCH_BASE_BITS = [
    0x3F800000, 0x3F4CB517, 0x3F23B11D, 0x3F02E4EF, 0x3ED1560C, 0x3EA764A7, 0x3E85DA9E, 0x3E5611CC, 0x3E2B2D9D, 0x3E08E170,
    0x3DDAE8F2, 0x3DAF0C7B, 0x3D8BF9C6, 0x3D5FDC1D, 0x3D3301C2, 0x3D0F2407, 0x3CE4EBEE, 0x3CB70DEF, 0x3C926096, 0x3C6A190A,
    0x3C3B3190, 0x3C15AFE8, 0x3BEF641C, 0x3BBF6D21, 0x3B991262, 0x3B74CDD8, 0x3B43C132, 0x3B1C886F, 0x3AFA56EA, 0x3AC82E56,
    0x3AA01286, 0x3A800000,
]
TORCH_FINAL_BITS = [
    0x3F800000, 0x3F4CB517, 0x3F23B11D, 0x3F0114E0, 0x3EB64703, 0x3E824EC9, 0x3E2FF6BC, 0x3DE3C095, 0x3D96CB71, 0x3D501718,
    0x3D142C26, 0x3CD835DF, 0x3CA0C39F, 0x3C72A8BB, 0x3C394D22, 0x3C0ED375, 0x3BDDCFB3, 0x3BAD4212, 0x3B87F8BC, 0x3B58171E,
    0x3B2CCB4A, 0x3B0A2C38, 0x3ADCF9F2, 0x3AB0B381, 0x3A8D4C0C, 0x3A61F916, 0x3A34B256, 0x3A107DF1, 0x39E71526, 0x39B8C84F,
    0x3993C254, 0x396C4EC6,
]


def test_yarn_frequencies_are_the_references_float32_values_bit_for_bit():
    """float32 op by op, as the reference: a float64 computation was up to 5 ulps off and moved ~15-20% of the bf16
    rotary cosines by one step against the reference's tables."""
    np.testing.assert_array_equal(yarn(0)[0].view(np.uint32), np.array(TORCH_BASE_BITS, np.uint32))
    np.testing.assert_array_equal(yarn(1775)[0].view(np.uint32), np.array(TORCH_FINAL_BITS, np.uint32))


def test_stages_of_the_record():
    cfg = REC
    """The record's three phases and the extension as records (recipe §4), written out by hand."""
    got = [(st.label, st.first_step, st.end_step, st.tokens_per_rank, st.window_blocks, st.lr_max, st.mtp_weights)
           for st in S.stages(cfg)]
    assert got == [
        ("phase 1", 0, 579, 16_384, (1, 3), 1.0, (1.0, 0.5, 0.25)),
        ("phase 2", 579, 1157, 32_768, (3, 7), 1.52, (1.0, 0.5)),
        ("phase 3", 1157, 1735, 49_152, (5, 11), 1.73, (1.0,)),
        ("extension", 1735, 1775, 49_152, (6, 13), 1.73, (1.0,)),
    ]
    assert S.num_stages(cfg) == 4 and [S.stage_label(p, 3) for p in range(4)] == ["phase 1", "phase 2", "phase 3", "extension"]
    assert S.tied_at(1157, cfg) and not S.tied_at(1158, cfg)  # untied after the optimizer step of 1157
    with pytest.raises(ValueError, match="stage 5 is not in a schedule of 3 phases"):
        S.stage_label(5, 3)


def test_any_number_of_phases():
    """Two phases of 20 scheduled steps (int(2 s / 20) switches at 10), then 4 extension steps: every schedule function
    follows the stages; a config whose per-phase lists disagree is refused at load, naming the lengths."""
    from jaxrun.config import ConfigError

    two = ["schedule.scheduled_steps=20", "schedule.extension_steps=4", "schedule.seqs_per_rank=(1, 2)",
           "schedule.lr_max=(1.0, 1.5)", "schedule.mtp_weights=((1.0, 0.5), (1.0,))",
           "schedule.window_blocks=((1, 2), (2, 3), (3, 4))", "schedule.momentum_cooldown_start=20",
           "schedule.momentum_cooldown_steps=2"]
    c = load_config(None, two).schedule
    assert [(st.first_step, st.end_step, st.seqs_per_rank, st.window_blocks) for st in S.stages(c)] == [
        (0, 10, 1, (1, 2)), (10, 20, 2, (2, 3)), (20, 24, 2, (3, 4))]
    assert S.untie_step(c) == 11  # the first step of the last phase, made odd
    assert S.window_blocks(21, c) == (3, 4) and S.tokens_per_rank(21, c) == 2 * c.seq_len
    # lr_max switches at x > 1/2 (strictly: step 11), the cooldown runs from x >= 1 - cooldown_frac
    assert S.lr_factor(5, c) == pytest.approx(spec_lr(5, 20, (1.0, 1.5), c.cooldown_frac, c.lr_floor, phases=2))
    assert S.lr_factor(11, c) == pytest.approx(spec_lr(11, 20, (1.0, 1.5), c.cooldown_frac, c.lr_floor, phases=2))
    assert S.lr_factor(10, c) == pytest.approx(spec_lr(10, 20, (1.0, 1.5), c.cooldown_frac, c.lr_floor, phases=2))
    assert list(S.mtp_weights(0, c)) == [1.0, 0.5] and list(S.mtp_weights(15, c)) == [1.0, 0.0]
    with pytest.raises(ConfigError, match=r"found seqs_per_rank 2, lr_max 3, mtp_weights 2, window_blocks 3"):
        load_config(None, two + ["schedule.lr_max=(1.0, 1.5, 2.0)"])
