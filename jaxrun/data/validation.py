"""Validation batches (recipe §2.2, §5.3): the first val_tokens (+1) tokens of the val shard in chunks of val_seq_len.

Val step j, rank r gets chunk j * num_ranks + r: inputs tokens[c*L : c*L + L], targets shifted by one. Chunks are not
BOS-aligned and not truncated: the fragment before a chunk's first BOS is a segment of its own, and every BOS inside the
chunk starts a new one. seg_ids[t] is the number of BOS tokens in inputs[0 .. t], the index of t's segment (a chunk
that starts with a BOS has an empty segment 0).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from jaxrun.config import DataConfig
from jaxrun.data.errors import DataError, make_shards_hint
from jaxrun.data.layout import check_local_ranks
from jaxrun.data.shards import read_shard


class ValBatches(Sequence):
    """The validation steps, each a dict of (R, val_seq_len) int32 inputs / targets / seg_ids.

    Batches are cut from the memory-mapped shard when indexed, so holding this costs no memory.
    """

    def __init__(self, tokens: np.ndarray, data_cfg: DataConfig, local_ranks: tuple[int, ...]):
        self.tokens = tokens
        self.data_cfg = data_cfg
        self.local_ranks = local_ranks

    def __len__(self) -> int:
        return self.data_cfg.val_tokens // (self.data_cfg.val_seq_len * self.data_cfg.num_ranks)

    def __getitem__(self, step: int) -> dict[str, np.ndarray]:
        if not -len(self) <= step < len(self):
            raise IndexError(f"validation step {step} out of range (there are {len(self)})")
        step %= len(self)
        seq_len, bos = self.data_cfg.val_seq_len, self.data_cfg.bos_token
        rows = []
        for r in self.local_ranks:
            start = (step * self.data_cfg.num_ranks + r) * seq_len
            buf = np.asarray(self.tokens[start : start + seq_len + 1], dtype=np.int32)
            inputs = buf[:-1]
            rows.append({"inputs": inputs, "targets": buf[1:], "seg_ids": np.cumsum(inputs == bos, dtype=np.int32)})
        return {key: np.stack([row[key] for row in rows]) for key in rows[0]}


def val_batches(data_cfg: DataConfig, local_ranks: Iterable[int]) -> ValBatches:
    """The validation batches of ``local_ranks`` (see the module docstring); checks the shard and the chunk arithmetic."""
    ranks = check_local_ranks(local_ranks, data_cfg.num_ranks)
    per_step = data_cfg.val_seq_len * data_cfg.num_ranks
    if data_cfg.val_seq_len < 1 or data_cfg.val_tokens < per_step or data_cfg.val_tokens % per_step:
        raise DataError(
            f"data.val_tokens ({data_cfg.val_tokens:,}) must be a positive multiple of data.val_seq_len x data.num_ranks "
            f"({data_cfg.val_seq_len:,} x {data_cfg.num_ranks} = {per_step:,})"
        )
    path = Path(data_cfg.val_file)
    if not path.exists():
        raise DataError(f"validation shard {path} not found: {make_shards_hint(path.parent)}")
    tokens = read_shard(path)
    if tokens.size < data_cfg.val_tokens + 1:
        raise DataError(
            f"validation shard {path} has {tokens.size:,} tokens, fewer than data.val_tokens + 1 = {data_cfg.val_tokens + 1:,} "
            "(the last prediction needs one more token): lower data.val_tokens or tokenize with a larger --val-tokens"
        )
    return ValBatches(tokens, data_cfg, ranks)
