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

    Relative paths are relative to the current directory. Raises DataError naming the missing file or the glob that
    matches nothing, and the command or setting that fixes it.
    """
    train = [Path(p) for p in sorted(glob.glob(data_cfg.train_files))]
    val = Path(data_cfg.val_file)
    if (not train or not val.is_file()) and data_cfg.tokenize_from:
        source = Path(data_cfg.tokenize_from)
        if train and not val.is_file():
            raise DataError(
                f"the validation shard {val} is missing, but {len(train)} training shard(s) match {data_cfg.train_files!r}. "
                f"The tokenizer writes both at once and will not add one to the other: restore {val}, or delete the "
                f"training shards to tokenize {source} again"
            )
        if val.is_file() and not train:
            raise DataError(
                f"no file matches data.train_files {data_cfg.train_files!r} (the validation shard {val} is there): set "
                f"data.train_files to the training shards' glob, or delete {val} to tokenize {source} again"
            )
        out_dir = _tokenize_target(data_cfg)
        if not source.is_file():
            raise DataError(f"data.tokenize_from {source} does not exist: the shards {data_cfg.val_file} and "
                            f"{data_cfg.train_files} are made from it on first use")
        announce(
            f"{data_cfg.val_file} and {data_cfg.train_files} missing: tokenizing {source} into {out_dir} "
            f"(first use; {data_cfg.tokenize_passes} pass(es) over the training documents)"
        )
        tokenize_corpus([source], out_dir, val_tokens=data_cfg.tokenize_val_tokens, passes=data_cfg.tokenize_passes, progress=False)
        train = [Path(p) for p in sorted(glob.glob(data_cfg.train_files))]
    if not val.is_file():
        raise DataError(f"the validation shard {val} (data.val_file) does not exist: {make_shards_hint(val.parent)}")
    if not train:
        raise DataError(f"no file matches data.train_files {data_cfg.train_files!r}: "
                        f"{make_shards_hint(Path(data_cfg.train_files).parent)}")
    for path in [*train, val]:
        check_shard(path)
    return ShardFiles(train, val)
