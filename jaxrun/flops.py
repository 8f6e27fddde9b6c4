"""FLOP counts of recipe §9, for MFU and TFLOP/s figures.

Convention: 2 FLOPs per multiply-add; backward = 2 x forward for every matmul; attention counted only on the visible
(query, key) pairs; elementwise work, gates, embedding lookups and the optimizer excluded.
"""

from __future__ import annotations

import math

import numpy as np

from jaxrun.config import ModelConfig
from jaxrun.params import TABLE

# Dense bf16 tensor-core peaks (datasheet, without sparsity), by jax device_kind prefix.
PEAK_BF16_TFLOPS = {
    "NVIDIA H100": 989.0,
    "NVIDIA H200": 989.0,
    "NVIDIA H800": 989.0,
    "NVIDIA GH200": 989.0,
    "NVIDIA A100": 312.0,
}


def peak_tflops(device_kind: str) -> float | None:
    for prefix, value in PEAK_BF16_TFLOPS.items():
        if device_kind.startswith(prefix):
            return value
    return None


def matmul_params(m: ModelConfig) -> int:
    """Parameters that take part in matmuls, the table's matmul ones: QKVO + MLP + head (114,130,944 for the record,
    recipe §1.12)."""
    return sum(math.prod(p.shape(m)) for p in TABLE.values() if p.matmul)


def visible_pairs(seg_ids: np.ndarray, window: int) -> int:
    """Number of (query, key) pairs with the same segment, key <= query and query - key <= window."""
    seg_ids = np.asarray(seg_ids)
    idx = np.arange(seg_ids.shape[-1])
    starts = np.r_[True, seg_ids[1:] != seg_ids[:-1]]
    seg_start = np.maximum.accumulate(np.where(starts, idx, 0))
    return int(np.sum(np.minimum(idx - seg_start, window) + 1))


def attention_forward_flops(m: ModelConfig, seg_ids: np.ndarray, windows: tuple[int, int]) -> int:
    """Forward attention FLOPs of one packed sequence, summed over layers (4 FLOPs per head-dim per pair: QK^T and PV)."""
    short, long = windows
    paired_seg = np.repeat(np.asarray(seg_ids), 2)  # recipe §1.6: each token is two interleaved rows of the same segment
    total = 0
    for layer in m.attention_layers:
        if layer in m.paired_layers:
            total += 4 * (m.num_heads // 2) * m.head_dim * visible_pairs(paired_seg, short)
        else:
            window = long if layer in m.long_window_layers else short
            total += 4 * m.num_heads * m.head_dim * visible_pairs(seg_ids, window)
    return total


def train_step_flops(m: ModelConfig, seg_ids_per_rank: np.ndarray, windows: tuple[int, int]) -> int:
    """Training FLOPs of one optimizer step over all virtual ranks: 6 N T + 3 x attention forward (recipe §9)."""
    seg_ids_per_rank = np.asarray(seg_ids_per_rank)
    tokens = seg_ids_per_rank.size
    attn = sum(attention_forward_flops(m, row, windows) for row in seg_ids_per_rank)
    return 6 * matmul_params(m) * tokens + 3 * attn
