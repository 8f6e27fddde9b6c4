"""The token shard format of the speedrun (recipe §5.1), byte for byte: reader, writer and header check.

A shard is a header of 256 little-endian int32 — [0] magic 20240520, [1] version 1, [2] token count N, the rest 0 —
followed by N little-endian uint16 tokens. These are the files the PyTorch speedrun reads (``fineweb_val_000000.bin``,
``fineweb_train_000001.bin``, ...), so any shard written here can be read there and the other way round.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from jaxrun.data.errors import DataError

MAGIC = 20240520
VERSION = 1
HEADER_INTS = 256
HEADER_BYTES = HEADER_INTS * 4
TOKEN_DTYPE = np.dtype("<u2")
MAX_TOKEN = np.iinfo(TOKEN_DTYPE).max

VAL_NAME = "fineweb_val_{:06d}.bin"
TRAIN_NAME = "fineweb_train_{:06d}.bin"


def val_shard_name(index: int = 0) -> str:
    return VAL_NAME.format(index)


def train_shard_name(index: int) -> str:
    """Training shards are numbered from 1 (shard 0 is the validation shard), as in FineWeb's release."""
    return TRAIN_NAME.format(index)


def check_shard(path: str | Path) -> int:
    """Check the header and size of a shard without reading its tokens; return its token count."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"shard {path} does not exist")
    size = path.stat().st_size
    if size < HEADER_BYTES:
        raise DataError(f"shard {path} is truncated: {size} bytes, shorter than the {HEADER_BYTES}-byte header")
    header = np.fromfile(path, dtype="<i4", count=HEADER_INTS)
    if header[0] != MAGIC:
        raise DataError(f"shard {path} has wrong magic number {int(header[0])} (expected {MAGIC}): not a token shard, or corrupted")
    if header[1] != VERSION:
        raise DataError(f"shard {path} has unsupported version {int(header[1])} (expected {VERSION})")
    num_tokens = int(header[2])
    expected = HEADER_BYTES + TOKEN_DTYPE.itemsize * num_tokens
    if num_tokens < 0 or size != expected:
        what = "truncated" if size < expected else "too long"
        raise DataError(
            f"shard {path} is {what}: its header claims {num_tokens} tokens ({expected} bytes) but the file has {size} bytes;"
            " delete it and download or tokenize it again"
        )
    return num_tokens


def read_shard(path: str | Path) -> np.ndarray:
    """Memory-map a shard's tokens (read-only uint16) after checking magic, version and byte count."""
    num_tokens = check_shard(path)
    if num_tokens == 0:
        return np.zeros(0, dtype=TOKEN_DTYPE)
    return np.memmap(path, dtype=TOKEN_DTYPE, mode="r", offset=HEADER_BYTES, shape=(num_tokens,))


def write_shard(path: str | Path, tokens: np.ndarray) -> None:
    """Write tokens (any integer array with values in [0, 65535]) as one shard."""
    tokens = np.asarray(tokens)
    if tokens.ndim != 1 or not np.issubdtype(tokens.dtype, np.integer):
        raise DataError(f"write_shard({path}): expected a 1-D integer array, got {tokens.dtype} of shape {tokens.shape}")
    if tokens.size and (tokens.min() < 0 or tokens.max() > MAX_TOKEN):
        raise DataError(f"write_shard({path}): token ids must lie in [0, {MAX_TOKEN}] to fit uint16, got [{tokens.min()}, {tokens.max()}]")
    header = np.zeros(HEADER_INTS, dtype="<i4")
    header[:3] = (MAGIC, VERSION, tokens.size)
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")  # renamed when complete: an interrupted write leaves no half shard
    with open(tmp, "wb") as f:
        f.write(header.tobytes())
        tokens.astype(TOKEN_DTYPE, copy=False).tofile(f)
    os.replace(tmp, path)
