"""Validation batches (recipe §2.2, §5.3) against chunks written out by hand."""

import numpy as np
import pytest

from jaxrun.config import DataConfig
from jaxrun.data import DataError, val_batches, write_shard

B = 50256
# 17 tokens = val_tokens 16 + 1; chunks of 4 start mid-document, at a BOS, and one token before a BOS.
VAL = [5, 6, B, 7, 8, 9, B, 10, B, 11, 12, 13, 14, B, 15, 16, 17, 99]
CHUNKS = [  # chunk c: inputs VAL[4c : 4c+4], targets VAL[4c+1 : 4c+5]; segments split at every BOS of the inputs
    {"inputs": [5, 6, B, 7], "targets": [6, B, 7, 8], "seg_ids": [0, 0, 1, 1]},
    {"inputs": [8, 9, B, 10], "targets": [9, B, 10, B], "seg_ids": [0, 0, 1, 1]},
    {"inputs": [B, 11, 12, 13], "targets": [11, 12, 13, 14], "seg_ids": [1, 1, 1, 1]},
    {"inputs": [14, B, 15, 16], "targets": [B, 15, 16, 17], "seg_ids": [0, 1, 1, 1]},
]


def val_config(tmp_path, tokens=VAL, **changes):
    path = tmp_path / "fineweb_val_000000.bin"
    write_shard(path, np.array(tokens))
    fields = dict(train_files=str(tmp_path / "fineweb_train_*.bin"), val_file=str(path), val_tokens=16, val_seq_len=4,
                  num_ranks=2, max_doc_len=5, bos_token=B)
    fields.update(changes)
    return DataConfig(**fields)


def expected(chunks):
    return {key: np.array([CHUNKS[c][key] for c in chunks]) for key in CHUNKS[0]}


@pytest.mark.parametrize("ranks", [(0, 1), (1,), (0,)])
def test_val_step_j_rank_r_gets_chunk_j_times_ranks_plus_r(tmp_path, ranks):
    batches = val_batches(val_config(tmp_path), ranks)
    assert len(batches) == 2
    for step, got in enumerate(batches):
        want = expected([step * 2 + r for r in ranks])
        assert set(got) == set(want)
        for key in want:
            assert got[key].dtype == np.int32
            np.testing.assert_array_equal(got[key], want[key], err_msg=f"step {step} {key}")


def test_only_val_tokens_plus_one_are_needed(tmp_path):
    batches = val_batches(val_config(tmp_path, tokens=VAL[:17]), range(2))
    np.testing.assert_array_equal(batches[1]["targets"][1], CHUNKS[3]["targets"])


def test_shard_shorter_than_val_tokens_plus_one(tmp_path):
    with pytest.raises(DataError, match="has 16 tokens, fewer than data.val_tokens \\+ 1 = 17"):
        val_batches(val_config(tmp_path, tokens=VAL[:16]), range(2))


@pytest.mark.parametrize("val_tokens", [12, 4, 0])
def test_val_tokens_must_be_whole_steps(tmp_path, val_tokens):
    with pytest.raises(DataError, match="must be a positive multiple of data.val_seq_len x data.num_ranks"):
        val_batches(val_config(tmp_path, val_tokens=val_tokens), range(2))


def test_missing_val_shard_names_it_and_the_command(tmp_path):
    cfg = val_config(tmp_path, val_file=str(tmp_path / "nowhere" / "fineweb_val_000000.bin"))
    with pytest.raises(DataError) as err:
        val_batches(cfg, range(2))
    assert "nowhere/fineweb_val_000000.bin not found" in str(err.value) and "python -m jaxrun.data fineweb" in str(err.value)

