"""Text corpus -> token shards: `python -m jaxrun.data tokenize INPUT... OUT_DIR`.

Every document is encoded with the GPT-2 BPE (encode_ordinary) and prefixed with <|endoftext|>, as FineWeb's shards are.
The first documents, until at least ``val_tokens`` tokens, form ``fineweb_val_000000.bin``; the rest are concatenated
into ``fineweb_train_000001.bin``, ... of exactly ``shard_tokens`` tokens each (the last one shorter; documents may
straddle shards).

Passes (GPU.md, "The proxy corpus is small"): with ``passes = K`` the training documents are written K times. Pass 0
keeps corpus order, so one pass is a plain conversion like FineWeb's; pass k >= 1 is a permutation of the training
documents drawn from ``numpy.random.default_rng([seed, k])``. The passes live in the files, so every reader of the
format — this loader or the PyTorch speedrun's, which never cycles — sees the same bytes.

The encoding runs on a pool of worker processes (order preserved); the same inputs and options always give the same
bytes, whatever the number of workers. Shards are written to a staging directory inside OUT_DIR and moved into place
at the end, so an interrupted run leaves no partial set of shards behind.
"""

from __future__ import annotations

import multiprocessing
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from jaxrun.data.corpus import check_inputs, iter_documents
from jaxrun.data.errors import DataError
from jaxrun.data.shards import TOKEN_DTYPE, train_shard_name, val_shard_name, write_shard
from jaxrun.data.tokenizer import gpt2_encoding

DEFAULT_SHARD_TOKENS = 100_000_000  # FineWeb's shard size (recipe §5.1)
MAX_SHARD_TOKENS = 2**31 - 1  # the header stores the count as an int32
SHARD_GLOB = "fineweb_*.bin"
# Below this many input bytes one process encodes faster than a pool starts (each spawned worker re-imports the
# caller's main module, e.g. jaxrun.train with JAX, when tokenizing on first use).
POOL_MIN_INPUT_BYTES = 4_000_000


@dataclass(frozen=True)
class TokenizeSummary:
    out_dir: Path
    documents: int
    val_documents: int
    val_tokens: int
    train_tokens_per_pass: int
    passes: int
    train_shards: int
    seconds: float

    def __str__(self) -> str:
        train_docs = self.documents - self.val_documents
        return (
            f"{self.documents:,} documents -> {self.out_dir}: val {self.val_tokens:,} tokens ({self.val_documents:,} docs), "
            f"train {self.passes} x {self.train_tokens_per_pass:,} = {self.passes * self.train_tokens_per_pass:,} tokens "
            f"({train_docs:,} docs per pass) in {self.train_shards} shard(s); {self.seconds:.1f}s"
        )


def encode_document(text: str) -> np.ndarray:
    """One document as shard tokens: <|endoftext|> followed by its GPT-2 ids."""
    enc = gpt2_encoding()
    ids = enc.encode_ordinary(text)
    out = np.empty(len(ids) + 1, dtype=TOKEN_DTYPE)
    out[0] = enc.eot_token
    out[1:] = ids
    return out


@contextmanager
def _encoded(documents: Iterable[str], workers: int) -> Iterator[Iterator[np.ndarray]]:
    if workers <= 1:
        yield map(encode_document, documents)
        return
    # spawn, not fork: the caller may already run JAX's threads (tokenize on first use inside training).
    with multiprocessing.get_context("spawn").Pool(workers, initializer=gpt2_encoding) as pool:
        yield pool.imap(encode_document, documents, chunksize=16)


class _ShardSink:
    """Concatenates token arrays into numbered training shards of exactly ``shard_tokens`` tokens (the last shorter)."""

    def __init__(self, directory: Path, shard_tokens: int):
        self.directory = directory
        self.shard_tokens = shard_tokens
        self.pending: list[np.ndarray] = []
        self.pending_tokens = 0
        self.written: list[Path] = []

    def add(self, tokens: np.ndarray) -> None:
        self.pending.append(tokens)
        self.pending_tokens += tokens.size
        if self.pending_tokens >= self.shard_tokens:
            joined = np.concatenate(self.pending)
            full = joined.size // self.shard_tokens * self.shard_tokens
            for start in range(0, full, self.shard_tokens):
                self._write(joined[start : start + self.shard_tokens])
            self.pending = [joined[full:]]
            self.pending_tokens = joined.size - full

    def close(self) -> list[Path]:
        if self.pending_tokens:
            self._write(np.concatenate(self.pending))
        self.pending, self.pending_tokens = [], 0
        return self.written

    def _write(self, tokens: np.ndarray) -> None:
        path = self.directory / train_shard_name(len(self.written) + 1)
        write_shard(path, tokens)
        self.written.append(path)


def _check_options(val_tokens: int, shard_tokens: int, passes: int) -> None:
    if val_tokens < 0:
        raise DataError(f"--val-tokens must be >= 0, got {val_tokens}")
    if not 1 <= shard_tokens <= MAX_SHARD_TOKENS:
        raise DataError(f"--shard-tokens must be in [1, {MAX_SHARD_TOKENS}] (the header's int32 count), got {shard_tokens}")
    if passes < 1:
        raise DataError(f"--passes must be >= 1, got {passes}")


def tokenize_corpus(
    inputs: Iterable[str | Path],
    out_dir: str | Path,
    *,
    val_tokens: int,
    shard_tokens: int = DEFAULT_SHARD_TOKENS,
    passes: int = 1,
    seed: int = 0,
    workers: int | None = None,
    progress: bool | None = None,
    announce: Callable[[str], None] | None = None,
) -> TokenizeSummary:
    """Tokenize .txt / .jsonl / .jsonl.xz inputs into OUT_DIR's val and train shards (see the module docstring).

    workers: encoding processes (default: all cores, or 1 for inputs under POOL_MIN_INPUT_BYTES).
    progress: tqdm bar on stderr (None: only on a terminal).
    announce: called with a one-line summary at the end.
    """
    t0 = time.perf_counter()
    paths = check_inputs(inputs)
    _check_options(val_tokens, shard_tokens, passes)
    out_dir = Path(out_dir)
    existing = sorted(out_dir.glob(SHARD_GLOB)) if out_dir.is_dir() else []
    if existing:
        raise DataError(
            f"{out_dir} already holds {len(existing)} shard(s) ({existing[0].name}, ...); "
            "delete them or choose another output directory, so old and new shards never mix"
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".tokenize-", dir=out_dir))
    try:
        val_docs: list[np.ndarray] = []
        val_count = 0
        train_docs: list[np.ndarray] = []  # kept only when later passes need them
        num_docs = train_count = 0
        sink = _ShardSink(staging, shard_tokens)
        if workers is None:
            small = sum(p.stat().st_size for p in paths) < POOL_MIN_INPUT_BYTES
            workers = 1 if small else len(os.sched_getaffinity(0))
        with _encoded(iter_documents(paths), workers) as encoded, tqdm(
            encoded, desc="tokenize", unit=" docs", disable=None if progress is None else not progress
        ) as docs:
            for doc in docs:
                num_docs += 1
                if val_count < val_tokens:
                    val_docs.append(doc)
                    val_count += doc.size
                    continue
                sink.add(doc)
                train_count += doc.size
                if passes > 1:
                    train_docs.append(doc)
        if val_count < val_tokens:
            raise DataError(f"the corpus has only {val_count:,} tokens, fewer than --val-tokens {val_tokens:,}: nothing left to train on")
        if train_count == 0:
            raise DataError(
                f"no documents left for training: the validation shard took all {num_docs:,} documents ({val_count:,} tokens); "
                "lower --val-tokens or add text"
            )
        write_shard(staging / val_shard_name(), np.concatenate(val_docs) if val_docs else np.zeros(0, TOKEN_DTYPE))
        for k in range(1, passes):
            for i in np.random.default_rng([seed, k]).permutation(len(train_docs)):
                sink.add(train_docs[i])
        written = sink.close()
        for path in [staging / val_shard_name(), *written]:
            os.replace(path, out_dir / path.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    summary = TokenizeSummary(
        out_dir=out_dir,
        documents=num_docs,
        val_documents=len(val_docs),
        val_tokens=val_count,
        train_tokens_per_pass=train_count,
        passes=passes,
        train_shards=len(written),
        seconds=time.perf_counter() - t0,
    )
    if announce:
        announce(str(summary))
    return summary
