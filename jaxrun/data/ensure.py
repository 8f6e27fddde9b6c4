"""Make sure a config's shards exist before training: validate them, or tokenize them on first use, or say how to get them."""

from __future__ import annotations

import fnmatch
import glob
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from jaxrun.config import DataConfig
from jaxrun.data.errors import DataError, make_shards_hint
from jaxrun.data.shards import check_shard, train_shard_name, val_shard_name
from jaxrun.data.tokenize import tokenize_corpus
from jaxrun.data.tokenizer import gpt2_encoding


@dataclass(frozen=True)
class ShardFiles:
    train: list[Path]  # sorted, as the loader reads them
    val: Path


def _present(data_cfg: DataConfig) -> ShardFiles | None:
    train = [Path(p) for p in sorted(glob.glob(data_cfg.train_files))]
    val = Path(data_cfg.val_file)
    return ShardFiles(train, val) if train and val.is_file() else None


def _tokenize_target(data_cfg: DataConfig) -> Path:
    """The directory the tokenizer writes, after checking that the configured paths name its files."""
    out_dir = Path(data_cfg.val_file).parent
    train_glob = Path(data_cfg.train_files)
    if (Path(data_cfg.val_file).name != val_shard_name() or train_glob.parent != out_dir
            or not fnmatch.fnmatch(train_shard_name(1), train_glob.name)):
        raise DataError(
            f"data.tokenize_from is set, but data.val_file ({data_cfg.val_file}) and data.train_files ({data_cfg.train_files}) "
            f"do not name the tokenizer's output: use DIR/{val_shard_name()} and DIR/fineweb_train_*.bin for one DIR"
        )
    if data_cfg.bos_token != gpt2_encoding().eot_token:
        raise DataError(
            f"data.bos_token is {data_cfg.bos_token}, but tokenized shards delimit documents with GPT-2's <|endoftext|> "
            f"= {gpt2_encoding().eot_token}: set data.bos_token={gpt2_encoding().eot_token}"
        )
    return out_dir


def ensure_shards(data_cfg: DataConfig, announce: Callable[[str], None] = print) -> ShardFiles:
    """Validate the configured shards (header and size of each); tokenize data.tokenize_from on first use if set.

    Relative paths are relative to the current directory. Raises DataError naming the missing path and the command
    that makes it.
    """
    files = _present(data_cfg)
    if files is None and data_cfg.tokenize_from:
        out_dir = _tokenize_target(data_cfg)
        source = Path(data_cfg.tokenize_from)
        announce(
            f"{data_cfg.val_file} or {data_cfg.train_files} missing: tokenizing {source} into {out_dir} "
            f"(first use; {data_cfg.tokenize_passes} pass(es) over the training documents)"
        )
        tokenize_corpus([source], out_dir, val_tokens=data_cfg.tokenize_val_tokens, passes=data_cfg.tokenize_passes, progress=False)
        files = _present(data_cfg)
    if files is None:
        missing = data_cfg.val_file if not Path(data_cfg.val_file).is_file() else f"no file matches {data_cfg.train_files}"
        raise DataError(f"training data not found ({missing}): {make_shards_hint(Path(data_cfg.val_file).parent)}")
    for path in [*files.train, files.val]:
        check_shard(path)
    return files
