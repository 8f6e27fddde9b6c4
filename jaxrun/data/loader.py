"""Training batches (recipe §5.2) for this process's virtual ranks, prepared one step ahead on a background thread.

    loader = TrainLoader(cfg.data, local_ranks)     # e.g. range(8) on one process, range(4, 8) on process 1 of 2
    batch = loader.next_batch(tokens_per_rank)     # N changes at phase boundaries
    state = loader.get_state()                     # JSON-serialisable; loader.set_state(state) resumes there

Every process plans all data.num_ranks ranks (so the data position is the same everywhere) but gathers tokens only for
its own. While the device runs step s, the thread builds step s + 1 with the same N; if the next call asks for a
different N (a phase boundary) or the state was reset, that guess is dropped and the batch is built on the spot.
"""

from __future__ import annotations

import glob
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from jaxrun.config import DataConfig
from jaxrun.data.errors import DataError, make_shards_hint
from jaxrun.data.layout import check_local_ranks
from jaxrun.data.plan import BosPlanIterator, RankPieces, StepPlan, TrainShards


def fill_rank_row(batch: dict[str, np.ndarray], row: int, tokens: np.ndarray, pieces: RankPieces) -> None:
    """Write one rank's row: inputs = buf[0:N], targets = buf[1:N+1] and the segment ids of its pieces."""
    buf = np.concatenate([tokens[s : s + k] for s, k in zip(pieces.starts.tolist(), pieces.lengths.tolist())])
    seg_lengths = pieces.lengths.copy()
    seg_lengths[-1] -= 1  # the last piece's final token is only a target (recipe §5.2)
    batch["inputs"][row] = buf[:-1]
    batch["targets"][row] = buf[1:]
    batch["seg_ids"][row] = np.repeat(np.arange(seg_lengths.size, dtype=np.int32), seg_lengths)


def step_batch(plan: StepPlan, local_ranks: tuple[int, ...], tokens_per_rank: int) -> dict[str, np.ndarray]:
    """The rows of ``local_ranks``: inputs, targets and seg_ids, each (R, N) int32."""
    batch = {key: np.empty((len(local_ranks), tokens_per_rank), dtype=np.int32) for key in ("inputs", "targets", "seg_ids")}
    for row, rank in enumerate(local_ranks):
        fill_rank_row(batch, row, plan.tokens, plan.ranks[rank])
    return batch


def train_shard_paths(data_cfg: DataConfig) -> list[Path]:
    paths = [Path(p) for p in sorted(glob.glob(data_cfg.train_files))]
    if not paths:
        raise DataError(f"no training shards match {data_cfg.train_files!r}: {make_shards_hint(Path(data_cfg.train_files).parent)}")
    return paths


class TrainLoader:
    """BOS-aligned training batches of data_cfg's shards for ``local_ranks``; see the module docstring."""

    def __init__(self, data_cfg: DataConfig, local_ranks: Iterable[int], *, prefetch: bool = True):
        self.data_cfg = data_cfg
        self.local_ranks = check_local_ranks(local_ranks, data_cfg.num_ranks)
        shards = TrainShards(train_shard_paths(data_cfg), data_cfg.bos_token, data_cfg.max_doc_len)
        self._plans = BosPlanIterator(shards, data_cfg.num_ranks)  # used on the worker thread only
        self._state = self._plans.get_state()
        self._prefetch = prefetch
        self._worker = ThreadPoolExecutor(1, thread_name_prefix="jaxrun-train-batches")
        self._ahead: tuple[int, dict[str, Any], Future] | None = None

    def _build(self, state: dict[str, Any], tokens_per_rank: int) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        self._plans.set_state(state)
        self._plans.tokens_per_rank = tokens_per_rank
        plan = next(self._plans)
        return step_batch(plan, self.local_ranks, tokens_per_rank), self._plans.get_state()

    def next_batch(self, tokens_per_rank: int) -> dict[str, np.ndarray]:
        """The next step's batch: inputs, targets, seg_ids, each (R, N) int32, R = len(local_ranks)."""
        if isinstance(tokens_per_rank, bool) or not isinstance(tokens_per_rank, (int, np.integer)) or tokens_per_rank < 1:
            raise DataError(f"tokens_per_rank must be a positive integer, got {tokens_per_rank!r}")
        n = int(tokens_per_rank)
        ahead = self._ahead
        if ahead is not None and ahead[0] == n and ahead[1] == self._state:
            future = ahead[2]
        else:
            future = self._worker.submit(self._build, self._state, n)
        batch, self._state = future.result()
        self._ahead = (n, self._state, self._worker.submit(self._build, self._state, n)) if self._prefetch else None
        return batch

    def get_state(self) -> dict[str, Any]:
        """Where the next batch starts (JSON-serialisable; save it with the checkpoint)."""
        return dict(self._state)

    def set_state(self, state: dict[str, Any]) -> None:
        """Continue at a state from get_state() (checked against the configured shards)."""
        self._state = self._worker.submit(self._restore, state).result()  # on the worker, like every use of the iterator
        self._ahead = None

    def _restore(self, state: dict[str, Any]) -> dict[str, Any]:
        self._plans.set_state(state)  # checks the state against the shards
        return self._plans.get_state()

    def close(self) -> None:
        self._worker.shutdown(wait=True, cancel_futures=True)
        self._plans.shards.close()
