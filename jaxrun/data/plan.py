"""BOS-aligned step plans (recipe §5.2): which document pieces fill each virtual rank's buffer of N + 1 tokens.

For rank r = 0 .. num_ranks-1 in turn, documents are taken in shard order from their BOS; each piece runs to the next
BOS, to max_doc_len tokens, or to the point where the buffer holds exactly N + 1 tokens, whichever comes first; the rest
of a truncated or cut document is dropped. A shard's last document runs to the end of the shard. If the shard runs out
of documents while a step's plan is built, the partial plan is thrown away, the rest of the shard is skipped and the
plan is rebuilt from the first BOS of the next shard (tokens before a shard's first BOS are never used).

The plan always covers all ``num_ranks`` virtual ranks, whatever the device count, so 1 and 8 devices see the same
documents. With each document's usable length precomputed per shard, one rank's plan is one ``searchsorted``.
"""

from __future__ import annotations

import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grain
import numpy as np

from jaxrun.data.errors import DataError
from jaxrun.data.shards import read_shard


@dataclass(frozen=True)
class ShardIndex:
    """A training shard with its documents: start (BOS position) and usable length (capped at max_doc_len) of each."""

    tokens: np.ndarray  # uint16, a plain ndarray view of the memory-mapped shard (np.memmap slices are slow)
    starts: np.ndarray  # int64 (n,), BOS positions
    cum: np.ndarray  # int64 (n + 1,), cum[j] = usable tokens of documents 0 .. j-1

    @classmethod
    def build(cls, tokens: np.ndarray, bos_token: int, max_doc_len: int) -> ShardIndex:
        starts = np.flatnonzero(tokens == bos_token).astype(np.int64)
        lengths = np.diff(starts, append=tokens.size)  # the last document runs to the end of the shard
        np.minimum(lengths, max_doc_len, out=lengths)
        cum = np.zeros(starts.size + 1, dtype=np.int64)
        np.cumsum(lengths, out=cum[1:])
        return cls(np.asarray(tokens), starts, cum)

    @property
    def num_docs(self) -> int:
        return self.starts.size


@dataclass(frozen=True)
class RankPieces:
    """One rank's buffer: pieces tokens[starts[i] : starts[i] + lengths[i]] concatenated, N + 1 tokens in all."""

    starts: np.ndarray
    lengths: np.ndarray


def plan_ranks(index: ShardIndex, first_doc: int, tokens_per_rank: int, num_ranks: int) -> tuple[list[RankPieces], int] | None:
    """Pieces of every rank from document ``first_doc`` on, and the next unused document; None if the shard runs out."""
    cum, need = index.cum, tokens_per_rank + 1
    ranks, doc = [], first_doc
    for _ in range(num_ranks):
        target = cum[doc] + need
        end = int(np.searchsorted(cum, target, side="left"))  # first end with cum[end] >= target: docs doc .. end-1
        if end > index.num_docs:
            return None
        lengths = np.diff(cum[doc : end + 1])
        lengths[-1] = target - cum[end - 1]  # the last piece is cut so that the buffer holds exactly N + 1 tokens
        ranks.append(RankPieces(index.starts[doc:end], lengths))
        doc = end
    return ranks, doc


class TrainShards:
    """The training shards in sorted order, indexed on first use; the next shard is indexed in the background.

    That is a thread of its own, not grain's prefetch: reading and indexing a 100M-token shard (0.1 s from the page
    cache, more from disk) takes longer than the one or two record steps that grain's thread runs ahead.
    """

    def __init__(self, paths: list[Path], bos_token: int, max_doc_len: int):
        self.paths = paths
        self.bos_token = bos_token
        self.max_doc_len = max_doc_len
        self._indexed: dict[int, Future[ShardIndex]] = {}
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="jaxrun-shard-index")

    def __len__(self) -> int:
        return len(self.paths)

    def _build(self, k: int) -> ShardIndex:
        return ShardIndex.build(read_shard(self.paths[k]), self.bos_token, self.max_doc_len)

    def index(self, k: int) -> ShardIndex:
        with self._lock:
            wanted = [j for j in (k, k + 1) if j < len(self.paths)]
            for j in wanted:
                if j not in self._indexed:
                    self._indexed[j] = self._pool.submit(self._build, j)
            self._indexed = {j: self._indexed[j] for j in wanted}
            future = self._indexed[k]
        return future.result()

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


@dataclass(frozen=True)
class StepPlan:
    tokens: np.ndarray  # the shard the step reads
    ranks: list[RankPieces]  # all num_ranks virtual ranks, in order


class StepPlans(grain.IterDataset):
    """The grain dataset of step plans for one batch size: the source of the training pipeline (loader.py).

    The stream is sequential: step k starts where step k - 1 stopped, and where that is depends on every earlier
    step's N, so there is no random access (no MapDataset) and the batch size is a property of the dataset. When N
    changes at a phase boundary, the loader makes a StepPlans for the new N and starts its iterator at the old one's
    state. Every iterator reads the one ``shards`` object, so no shard is indexed twice.
    """

    def __init__(self, shards: TrainShards, num_ranks: int, tokens_per_rank: int):
        super().__init__()
        self.shards = shards
        self.num_ranks = num_ranks
        self.tokens_per_rank = tokens_per_rank

    def __iter__(self) -> BosPlanIterator:
        return BosPlanIterator(self.shards, self.num_ranks, self.tokens_per_rank)

    def __str__(self) -> str:
        return f"StepPlans(num_ranks={self.num_ranks}, tokens_per_rank={self.tokens_per_rank})"


class BosPlanIterator(grain.DatasetIterator):
    """grain iterator over the step plans of StepPlans; its state (get_state / set_state) is a small JSON dict.

    State: shard position, next document, and for error messages and safe restoring the shard's file name, the steps
    taken and the tokens delivered. It does not hold N, so a state moves between iterators of different batch sizes.
    Running out of data raises DataError and leaves the state where it was (the failed step took nothing).
    """

    def __init__(self, shards: TrainShards, num_ranks: int, tokens_per_rank: int):
        super().__init__()
        self.shards = shards
        self.num_ranks = num_ranks
        self.tokens_per_rank = tokens_per_rank
        self._shard = self._doc = self._steps = self._tokens = 0

    def __next__(self) -> StepPlan:
        n = self.tokens_per_rank
        shard, doc = self._shard, self._doc
        while shard < len(self.shards):
            index = self.shards.index(shard)
            found = plan_ranks(index, doc, n, self.num_ranks)
            if found is not None:
                break
            shard, doc = shard + 1, 0  # recipe §5.2 roll-over: partial plan dropped, rest of the shard skipped
        else:
            raise DataError(
                f"out of training data: the {len(self.shards)} shard(s) from {self.shards.paths[0].parent} are used up after "
                f"{self._steps} steps ({self._tokens:,} tokens delivered over {self.num_ranks} ranks); the next step needs "
                f"{self.num_ranks} x {n + 1:,} tokens. Add shards (`python -m jaxrun.data fineweb --train-shards N`) "
                "or tokenize the corpus again with more --passes"
            )
        ranks, self._doc = found
        self._shard = shard
        self._steps += 1
        self._tokens += n * self.num_ranks
        return StepPlan(index.tokens, ranks)

    def get_state(self) -> dict[str, Any]:
        return {
            "shard": self._shard,
            "shard_file": self.shards.paths[self._shard].name if self._shard < len(self.shards) else "",
            "doc": self._doc,
            "steps": self._steps,
            "tokens": self._tokens,
        }

    def set_state(self, state: dict[str, Any]) -> None:
        try:
            shard, name, doc, steps, tokens = (state[k] for k in ("shard", "shard_file", "doc", "steps", "tokens"))
        except (KeyError, TypeError):
            raise DataError(f"not a training-data state: {state!r} (expected the dict of TrainLoader.get_state())") from None
        if not 0 <= shard < len(self.shards) or self.shards.paths[shard].name != name:
            have = self.shards.paths[shard].name if 0 <= shard < len(self.shards) else f"only {len(self.shards)} shard(s)"
            raise DataError(
                f"the saved data position is in shard {name!r} (number {shard} in sorted order) but the configured "
                f"shards have {have!r} there: resume with the same training shards"
            )
        self._shard, self._doc, self._steps, self._tokens = int(shard), int(doc), int(steps), int(tokens)
