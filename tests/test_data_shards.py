"""Shard format (recipe §5.1) byte for byte, and every malformed shard the reader must refuse."""

import struct

import numpy as np
import pytest

from jaxrun.data import DataError, check_shard, read_shard, write_shard


def header_bytes(magic=20240520, version=1, count=0):
    return struct.pack("<256i", magic, version, count, *([0] * 253))


def test_writer_bytes_are_the_reference_format(tmp_path):
    path = tmp_path / "s.bin"
    write_shard(path, np.array([1, 50256, 65535, 0], dtype=np.int64))
    assert path.read_bytes() == header_bytes(count=4) + struct.pack("<4H", 1, 50256, 65535, 0)


def test_reader_round_trip_is_memory_mapped(tmp_path):
    path = tmp_path / "s.bin"
    path.write_bytes(header_bytes(count=3) + struct.pack("<3H", 50256, 15496, 995))
    tokens = read_shard(path)
    assert isinstance(tokens, np.memmap) and tokens.dtype == np.uint16
    assert tokens.tolist() == [50256, 15496, 995]
    assert check_shard(path) == 3


def test_empty_shard_round_trip(tmp_path):
    path = tmp_path / "s.bin"
    write_shard(path, np.zeros(0, dtype=np.uint16))
    assert path.read_bytes() == header_bytes(count=0)
    assert read_shard(path).size == 0


@pytest.mark.parametrize(
    "content, message",
    [
        (header_bytes(magic=20240521, count=1) + b"\x01\x00", "wrong magic number 20240521"),
        (header_bytes(version=2, count=1) + b"\x01\x00", "unsupported version 2"),
        (header_bytes(count=3) + b"\x01\x00\x02\x00", "is truncated: its header claims 3 tokens"),
        (header_bytes(count=1) + b"\x01\x00\x02\x00", "is too long: its header claims 1 tokens"),
        (header_bytes(count=1)[:100], "shorter than the 1024-byte header"),
    ],
    ids=["magic", "version", "truncated", "too-long", "no-header"],
)
def test_bad_shards_are_refused_with_the_file_named(tmp_path, content, message):
    path = tmp_path / "bad_shard.bin"
    path.write_bytes(content)
    for reader in (read_shard, check_shard):
        with pytest.raises(DataError, match=message) as err:
            reader(path)
        assert str(path) in str(err.value)


def test_missing_shard(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        read_shard(tmp_path / "nowhere.bin")


@pytest.mark.parametrize("tokens", [np.array([0, 65536]), np.array([-1]), np.zeros((2, 2), dtype=np.int32), np.array([0.5])])
def test_writer_refuses_what_uint16_cannot_hold(tmp_path, tokens):
    with pytest.raises(DataError, match="write_shard"):
        write_shard(tmp_path / "s.bin", tokens)
