"""Which virtual ranks a process builds sequences for (recipe §3.6); training and validation batches both check them here."""

from __future__ import annotations

from collections.abc import Iterable

from jaxrun.data.errors import DataError


def check_local_ranks(local_ranks: Iterable[int], num_ranks: int) -> tuple[int, ...]:
    """The virtual ranks this process produces sequences for (recipe §3.6): distinct, in [0, num_ranks); rows follow this order."""
    ranks = tuple(int(r) for r in local_ranks)
    if not ranks:
        raise DataError("local_ranks is empty: every process must own at least one virtual rank")
    if len(set(ranks)) != len(ranks) or any(not 0 <= r < num_ranks for r in ranks):
        raise DataError(f"local_ranks {list(ranks)} must be distinct ranks in [0, {num_ranks}) (data.num_ranks = {num_ranks})")
    return ranks

