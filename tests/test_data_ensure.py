"""ensure_shards: validates present shards, tokenizes on first use when configured, otherwise names path and command."""

import json
from pathlib import Path

import numpy as np
import pytest

from jaxrun import schedule
from jaxrun.config import DataConfig, load_config
from jaxrun.data import DataError, TrainLoader, ensure_shards, val_batches, write_shard

B = 50256


def relative_config(**changes):
    fields = dict(train_files="shards/fineweb_train_*.bin", val_file="shards/fineweb_val_000000.bin", val_tokens=8,
                  val_seq_len=4, num_ranks=2, max_doc_len=5, bos_token=B)
    fields.update(changes)
    return DataConfig(**fields)


def test_present_shards_are_validated_and_returned(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # relative paths are relative to the current directory
    Path("shards").mkdir()
    for name in ("fineweb_val_000000.bin", "fineweb_train_000002.bin", "fineweb_train_000001.bin"):
        write_shard(Path("shards") / name, np.array([B, 1, 2]))
    lines = []
    files = ensure_shards(relative_config(), announce=lines.append)
    assert [p.name for p in files.train] == ["fineweb_train_000001.bin", "fineweb_train_000002.bin"]
    assert files.val == Path("shards/fineweb_val_000000.bin") and lines == []
    Path("shards/fineweb_train_000002.bin").write_bytes(b"\0" * 1030)
    with pytest.raises(DataError, match="fineweb_train_000002.bin has wrong magic number"):
        ensure_shards(relative_config(), announce=lines.append)


def test_missing_shards_name_the_path_and_the_commands(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataError) as err:
        ensure_shards(relative_config())
    message = str(err.value)
    assert "shards/fineweb_val_000000.bin" in message
    assert "python -m jaxrun.data fineweb --train-shards 9 --dir shards" in message
    assert "python -m jaxrun.data tokenize CORPUS.jsonl.xz shards" in message
    Path("shards").mkdir()
    write_shard(Path("shards/fineweb_val_000000.bin"), np.array([B, 1]))
    with pytest.raises(DataError, match="no file matches data.train_files 'shards/fineweb_train_\\*.bin'"):
        ensure_shards(relative_config())


def test_tokenizes_on_first_use_with_one_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("corpus.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in ["Hello world", "a", "!", "Hello"]))
    cfg = relative_config(tokenize_from="corpus.jsonl", tokenize_val_tokens=3, tokenize_passes=2)
    lines = []
    files = ensure_shards(cfg, announce=lines.append)
    assert len(lines) == 1 and "tokenizing corpus.jsonl into shards" in lines[0] and "first use" in lines[0]
    assert [p.name for p in files.train] == ["fineweb_train_000001.bin"] and files.val.is_file()
    ensure_shards(cfg, announce=lines.append)
    assert len(lines) == 1  # present now: nothing more to do


def test_tokenize_from_needs_the_tokenizer_layout(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = relative_config(train_files="a/train_*.bin", val_file="b/val.bin", tokenize_from="corpus.jsonl")
    with pytest.raises(DataError, match="do not name the tokenizer's output"):
        ensure_shards(cfg)
    with pytest.raises(DataError, match="set data.bos_token=50256"):
        ensure_shards(relative_config(tokenize_from="corpus.jsonl", bos_token=0))


def test_the_tiny_config_tokenizes_the_sample_and_feeds_its_whole_schedule(tmp_path, monkeypatch):
    """From a directory that is not the repository: the sample comes from the package, the shards go to ./data."""
    monkeypatch.chdir(tmp_path)
    cfg = load_config(None)
    lines = []
    ensure_shards(cfg.data, announce=lines.append)
    assert len(lines) == 1 and (tmp_path / "data" / "sample_shards" / "fineweb_val_000000.bin").is_file()
    ranks = range(cfg.data.num_ranks)
    assert len(val_batches(cfg.data, ranks)) == cfg.data.val_tokens // (cfg.data.val_seq_len * cfg.data.num_ranks)
    loader = TrainLoader(cfg.data, ranks, prefetch=False)
    for s in range(cfg.schedule.total_steps):
        batch = loader.next_batch(schedule.step_shape(s, cfg.schedule).tokens_per_rank)
    assert batch["inputs"].shape == (cfg.data.num_ranks, schedule.step_shape(s, cfg.schedule).tokens_per_rank)


def test_messages_name_the_empty_glob_or_the_missing_file_when_tokenizing_on_first_use(tmp_path, monkeypatch):
    """Under a config that tokenizes on first use: a train glob that matches nothing names that glob (not the tokenizer's
    layout); a deleted validation shard names that file and the two ways out (not 'already holds shards')."""
    monkeypatch.chdir(tmp_path)
    Path("corpus.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in ["Hello world", "a", "!", "Hello"]))
    cfg = relative_config(tokenize_from="corpus.jsonl", tokenize_val_tokens=3)
    ensure_shards(cfg, announce=lambda _: None)
    with pytest.raises(DataError, match=r"no file matches data.train_files 'nope/\*.bin' \(the validation shard shards/"
                                        r"fineweb_val_000000.bin is there\)"):
        ensure_shards(relative_config(tokenize_from="corpus.jsonl", train_files="nope/*.bin"))
    Path("shards/fineweb_val_000000.bin").unlink()
    with pytest.raises(DataError) as err:
        ensure_shards(cfg)
    assert "the validation shard shards/fineweb_val_000000.bin is missing, but 1 training shard(s)" in str(err.value)
    assert "restore shards/fineweb_val_000000.bin, or delete the training shards" in str(err.value)
    with pytest.raises(DataError, match="data.tokenize_from missing.jsonl does not exist"):
        ensure_shards(relative_config(tokenize_from="missing.jsonl", train_files="fresh/fineweb_train_*.bin",
                                      val_file="fresh/fineweb_val_000000.bin"))


def test_an_interrupted_shard_write_leaves_no_half_shard(tmp_path, monkeypatch):
    """The shard's own name appears only once its bytes are all written (a temporary file renamed at the end), so a
    tokenizer killed mid-write leaves nothing that passes for a shard."""
    from jaxrun.data import shards

    target = tmp_path / "fineweb_train_000001.bin"

    def interrupted(src, dst):
        raise KeyboardInterrupt

    monkeypatch.setattr(shards.os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_shard(target, np.array([B, 1, 2]))
    assert not target.exists() and (tmp_path / "fineweb_train_000001.bin.tmp").is_file()
