"""FLOP counting of recipe §9 (jaxrun/flops.py)."""

import numpy as np

from jaxrun.config import CONFIG_DIR, load_config
from jaxrun.flops import attention_forward_flops, matmul_params, peak_tflops, train_step_flops, visible_pairs


def test_matmul_params_of_the_record():
    assert matmul_params(load_config(CONFIG_DIR / "record60.py").model) == 114_130_944


def test_visible_pairs_hand_case():
    # segments [0,0,0,0] [1,1] with window 2: rows see 1,2,3,3 then 1,2 keys
    assert visible_pairs(np.array([0, 0, 0, 0, 1, 1]), 2) == 1 + 2 + 3 + 3 + 1 + 2
    assert visible_pairs(np.array([0, 1, 2]), 5) == 3
    assert visible_pairs(np.zeros(5, int), 0) == 5


def test_full_window_upper_bound_matches_spec_table():
    # recipe §9: phase 1 (windows 128/384 tokens), a sequence with no document boundary far from its start:
    # 5.54 M attention forward FLOPs per token (full-window upper bound).
    m = load_config(CONFIG_DIR / "record60.py").model
    t = 16384
    per_token = attention_forward_flops(m, np.zeros(t, np.int32), (128, 384)) / t
    assert abs(per_token - 3072 * (8 * 129 + 2 * 385)) / per_token < 0.02
    assert abs(per_token / 1e6 - 5.54) < 0.05


def test_train_step_flops_phase1_weights_term():
    m = load_config(CONFIG_DIR / "record60.py").model
    seg = np.repeat(np.arange(8), 2048)[None].repeat(8, axis=0)  # 8 ranks of 8 full 2048-token documents
    flops = train_step_flops(m, seg, (128, 384))
    assert flops > 6 * 114_130_944 * 131_072
    assert abs(flops / 9.16e13 - 1) < 0.02  # recipe §9: 9.16e13 per phase-1 step


def test_peak_by_device_kind():
    assert peak_tflops("NVIDIA H100 80GB HBM3") == 989.0
    assert peak_tflops("cpu") is None
