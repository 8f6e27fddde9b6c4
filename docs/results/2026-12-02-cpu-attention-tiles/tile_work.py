"""How much of the triton attention kernels' tile work is visible pairs: for each attention call of a phase-3 step
(record60, one rank's 49,152 tokens of the proxy shards, windows 640 / 1,408, the paired layout), the pairs the
kernels compute (every visited tile, BLOCK_M x BLOCK_N, from the kernels' own block plans) against the visible
pairs (jaxrun.flops.visible_pairs). CPU only: the plans are pure JAX.

    python docs/results/2026-12-02-cpu-attention-tiles/tile_work.py data/proxy16/fineweb_train_000001.bin
"""
import sys

import jax.numpy as jnp
import numpy as np

from jaxrun import flops, schedule
from jaxrun.data import shards
from jaxrun.config import load_config
from jaxrun.kernels import flash_attention as fa

cfg = load_config("configs/record60.py")
m, s = cfg.model, cfg.schedule
tokens = shards.read_shard(sys.argv[1])
BOS = 50256
stage = [st for st in schedule.stages(s) if st.label == "phase 3"][0]
t = stage.tokens_per_rank
short_w, long_w = (b * s.window_block_size for b in stage.window_blocks)
starts = np.flatnonzero(tokens == BOS)
seq = np.asarray(tokens[starts[0]:starts[0] + t])
seg = np.cumsum(seq == BOS)
print(f"phase 3: T={t}, windows {short_w}/{long_w}, documents in the rank's sequence: {seg[-1] - seg[0] + 1}, "
      f"mean length {t / (seg[-1] - seg[0] + 1):.0f}")


def tiles(seg_ids, window, cfg_kernel, by_keys):
    start, end = fa.padded_segment_bounds(jnp.asarray(seg_ids), 128)
    if by_keys:
        r = np.asarray(fa.key_block_ranges(end, window, cfg_kernel.block_m, cfg_kernel.block_n))
    else:
        r = np.asarray(fa.query_block_ranges(start, window, cfg_kernel.block_m, cfg_kernel.block_n))
    visited = (r[:, 3] - r[:, 0]).clip(min=0).sum()
    masked = ((r[:, 1] - r[:, 0]).clip(min=0) + (r[:, 3] - r[:, 2]).clip(min=0)).sum()
    return int(visited) * cfg_kernel.block_m * cfg_kernel.block_n, int(masked), int(visited)


total = {"useful": 0, "fwd": 0, "dq": 0, "dkdv": 0}
for name, seg_ids, window, heads in (("short", seg, short_w, m.num_heads), ("long", seg, long_w, m.num_heads),
                                     ("paired", np.repeat(seg, 2), short_w, m.num_heads // 2)):
    c = fa.config_for(window, m.head_dim)
    useful = flops.visible_pairs(seg_ids, window)
    row = [f"{name:6s} W={window:5d} rows={len(seg_ids):6d} visible pairs {useful / 1e6:8.1f} M"]
    n_layers = sum(1 for layer in m.attention_layers if
                   (layer in m.paired_layers) == (name == "paired") and
                   (name == "paired" or (layer in m.long_window_layers) == (name == "long")))
    total["useful"] += useful * heads * n_layers
    for kernel, by_keys in (("fwd", False), ("dq", False), ("dkdv", True)):
        computed, masked, visited = tiles(seg_ids, window, getattr(c, kernel), by_keys)
        total[kernel] += computed * heads * n_layers
        row.append(f"{kernel} {computed / useful:4.2f}x ({masked / visited:4.0%} of tiles masked)")
    print(f"{n_layers} layer(s): " + ", ".join(row))
print("whole step, computed / visible pairs: " + ", ".join(f"{k} {total[k] / total['useful']:.2f}x"
                                                            for k in ("fwd", "dq", "dkdv")))
