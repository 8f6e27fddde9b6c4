"""How a step's sequences are laid out per rank: which virtual ranks a process owns, and the padded cu_seqlens array."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from jaxrun.config import DataConfig
from jaxrun.data.errors import DataError


def check_local_ranks(local_ranks: Iterable[int], num_ranks: int) -> tuple[int, ...]:
    """The virtual ranks this process produces sequences for (recipe §3.6): distinct, in [0, num_ranks); rows follow this order."""
    ranks = tuple(int(r) for r in local_ranks)
    if not ranks:
        raise DataError("local_ranks is empty: every process must own at least one virtual rank")
    if len(set(ranks)) != len(ranks) or any(not 0 <= r < num_ranks for r in ranks):
        raise DataError(f"local_ranks {list(ranks)} must be distinct ranks in [0, {num_ranks}) (data.num_ranks = {num_ranks})")
    return ranks


def cu_seqlens_length(tokens: int, data_cfg: DataConfig) -> int:
    """Static length of cu_seqlens for sequences of ``tokens`` tokens (recipe §5.2: the record's max_num_docs)."""
    multiple = data_cfg.cu_seqlens_multiple
    wanted = tokens // data_cfg.cu_seqlens_tokens_per_doc
    return max(multiple, -(-wanted // multiple) * multiple)


def padded_cu_seqlens(boundaries: np.ndarray, tokens: int, length: int) -> np.ndarray:
    """[0, *boundaries] padded with ``tokens`` to ``length`` entries (zero-length trailing segments, recipe §5.2)."""
    if boundaries.size + 1 > length:
        raise DataError(
            f"{boundaries.size} segments in a sequence of {tokens} tokens do not fit the {length}-entry cu_seqlens array "
            "(its length assumes documents of about data.cu_seqlens_tokens_per_doc tokens or more); lower data.cu_seqlens_tokens_per_doc"
        )
    out = np.full(length, tokens, dtype=np.int32)
    out[0] = 0
    out[1 : boundaries.size + 1] = boundaries
    return out
