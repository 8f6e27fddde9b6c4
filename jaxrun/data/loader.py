"""Training batches (recipe §5.2) for this process's virtual ranks: a grain pipeline, prefetched by grain.

    loader = TrainLoader(cfg.data, local_ranks)     # e.g. range(8) on one process, range(4, 8) on process 1 of 2
    batch = loader.next_batch(tokens_per_rank)     # N changes at phase boundaries
    state = loader.get_state()                     # JSON-serialisable; loader.set_state(state) resumes there

The pipeline is StepPlans (the plan of all data.num_ranks ranks, so the data position is the same in every process;
plan.py) -> map(gather this process's rows) -> ThreadPrefetchIterDataset. Its state is grain's get_state() of that
pipeline: the map and the prefetch pass their parent's state through, and the prefetch records it with each batch, so
it is the plan iterator's small dict as of the last batch handed out. That dict has the same five keys as before the
loader was a grain pipeline, so the data state of older checkpoints loads unchanged.

A grain pipeline has one batch size; when next_batch asks for another N (a phase boundary) the pipeline for the new N
is started at the current state and the batches prefetched with the old N are dropped.
"""

from __future__ import annotations

import functools
import glob
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import grain
import numpy as np

from jaxrun.config import DataConfig
from jaxrun.data.errors import DataError, make_shards_hint
from jaxrun.data.layout import check_local_ranks
from jaxrun.data.plan import RankPieces, StepPlan, StepPlans, TrainShards

# Batches grain's thread builds ahead of the one in use. The thread holds one more, blocked on the full queue: two
# steps of (8 x 49,152) int32 x 3 at most, ~10 MB.
PREFETCH_BATCHES = 1


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


def train_batches(shards: TrainShards, num_ranks: int, local_ranks: tuple[int, ...], tokens_per_rank: int,
                  prefetch: int) -> grain.IterDataset:
    """The grain dataset of training batches of one size, ``prefetch`` batches built ahead on a background thread.

    Why thread prefetch: the stream is one sequential iterator (step k starts where step k - 1 stopped), so grain's
    index-parallel prefetch (MapDataset.to_iter_dataset with read threads) has nothing to index, and mp_prefetch
    would split the stream across worker processes by slicing, which a stream without random access cannot be; the
    work per batch (a few ms of numpy copies) needs no more than one thread anyway. ThreadPrefetchIterDataset runs the
    iterator on one thread and keeps the state of each batch with it; it exists in every grain from 0.2.10 on.
    """
    plans = StepPlans(shards, num_ranks, tokens_per_rank)
    rows = plans.map(functools.partial(step_batch, local_ranks=local_ranks, tokens_per_rank=tokens_per_rank))
    return grain.experimental.ThreadPrefetchIterDataset(rows, prefetch_buffer_size=prefetch)


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
        self._shards = TrainShards(train_shard_paths(data_cfg), data_cfg.bos_token, data_cfg.max_doc_len)
        self._prefetch = PREFETCH_BATCHES if prefetch else 0
        self._n = 1  # the batch size of the pipeline in use; any will do until the first batch (nothing is built before)
        self._it = self._iterator(self._n)

    def _iterator(self, tokens_per_rank: int) -> grain.DatasetIterator:
        ds = train_batches(self._shards, self.data_cfg.num_ranks, self.local_ranks, tokens_per_rank, self._prefetch)
        return iter(ds)

    def next_batch(self, tokens_per_rank: int) -> dict[str, np.ndarray]:
        """The next step's batch: inputs, targets, seg_ids, each (R, N) int32, R = len(local_ranks).

        Out of data: DataError, and the loader stays where it was (get_state() still names the next batch to build).
        """
        self._use(tokens_per_rank)
        try:
            return next(self._it)
        except DataError:
            # Put grain's iterator back at the last batch handed out: its prefetch thread has ended (grain < 0.2.18
            # would wait on that dead thread at the next call) and set_state starts it afresh from this state.
            self._it.set_state(self._it.get_state())
            raise

    def _use(self, tokens_per_rank: int) -> None:
        """The pipeline for batches of tokens_per_rank (checked here), continuing at the same state."""
        if isinstance(tokens_per_rank, bool) or not isinstance(tokens_per_rank, (int, np.integer)) or tokens_per_rank < 1:
            raise DataError(f"tokens_per_rank must be a positive integer, got {tokens_per_rank!r}")
        n = int(tokens_per_rank)
        if n != self._n:  # a phase boundary (or the first batch): continue at the same state with a pipeline for N
            state = self._it.get_state()
            _close(self._it)
            self._it, self._n = self._iterator(n), n
            self._it.set_state(state)

    def prime(self, tokens_per_rank: int) -> None:
        """Build the pipeline for batches of ``tokens_per_rank`` and start its prefetch thread, without handing out a
        batch (the state does not move): the training loop calls it before its clock starts, so that its first timed
        step does not build the pipeline and wait for the first batch."""
        self._use(tokens_per_rank)
        start = getattr(self._it, "start_prefetch", None)  # grain's thread prefetch iterator (grain >= 0.2.12)
        if self._prefetch and start is not None:  # (with a buffer of 0 grain's queue is unbounded: never start it)
            start()

    def get_state(self) -> dict[str, Any]:
        """Where the next batch starts (JSON-serialisable; save it with the checkpoint)."""
        return dict(self._it.get_state())  # a copy: older grain versions hand out their own record of it

    def set_state(self, state: dict[str, Any]) -> None:
        """Continue at a state from get_state() (checked against the configured shards)."""
        before = self._it.get_state()
        try:
            self._it.set_state(state)
        except DataError:
            # grain stopped its prefetch thread, whose iterator had run ahead of `before`: seat it at `before` again
            self._it.set_state(before)
            raise

    def close(self) -> None:
        _close(self._it)
        self._shards.close()


def _close(it: grain.DatasetIterator) -> None:
    """Stop grain's prefetch thread. grain < 0.2.15 has close() only on prefetch iterators (and returns the map
    iterator itself when prefetch is off), which is all that holds anything to release."""
    if hasattr(it, "close"):
        it.close()
