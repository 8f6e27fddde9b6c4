"""Tokenizer and `tokenize` command: shard contents written out by hand, determinism, passes, and every bad input."""

import json
import lzma
import os
import subprocess
import sys

import numpy as np
import pytest

from jaxrun.config import REPO_ROOT
from jaxrun.data import DataError, gpt2_encoding, read_shard, tokenize_corpus

B = 50256
# Documents whose GPT-2 ids are known: "Hello world" -> [15496, 995] (tiktoken's documented example); single printable
# ASCII characters are the first byte tokens, "!" = 0 ... "a" = 64.
DOCS = ["Hello world", "a", "!", "Hello"]
IDS = [[15496, 995], [64], [0], [15496]]


def test_gpt2_encoding():
    enc = gpt2_encoding()
    assert enc.name == "gpt2" and enc.n_vocab == 50257 and enc.eot_token == B
    assert enc.encode_ordinary("Hello world") == [15496, 995]
    assert [enc.encode_ordinary(t) for t in DOCS] == IDS
    assert B not in enc.encode_ordinary("<|endoftext|>")  # ordinary encoding never emits the delimiter


def write_jsonl(path, texts, xz=False):
    data = "".join(json.dumps({"text": t, "source": "test"}) + "\n" for t in texts).encode()
    path.write_bytes(lzma.compress(data) if xz else data)
    return path


def shard_files(directory):
    return sorted(p.name for p in directory.glob("fineweb_*.bin"))


def test_val_and_train_shards_by_hand(tmp_path):
    corpus = write_jsonl(tmp_path / "c.jsonl", DOCS)
    out = tmp_path / "out"
    summary = tokenize_corpus([corpus], out, val_tokens=3, shard_tokens=4, workers=1, progress=False)
    assert shard_files(out) == ["fineweb_train_000001.bin", "fineweb_train_000002.bin", "fineweb_val_000000.bin"]
    assert read_shard(out / "fineweb_val_000000.bin").tolist() == [B, 15496, 995]  # first documents until >= 3 tokens
    assert read_shard(out / "fineweb_train_000001.bin").tolist() == [B, 64, B, 0]  # "!" straddles nothing; exactly 4
    assert read_shard(out / "fineweb_train_000002.bin").tolist() == [B, 15496]
    assert (summary.documents, summary.val_documents, summary.val_tokens, summary.train_tokens_per_pass) == (4, 1, 3, 6)
    assert list(out.iterdir()) != [] and not [p for p in out.iterdir() if p.name.startswith(".tokenize-")]


def test_inputs_of_every_kind_in_the_given_order(tmp_path):
    txt = tmp_path / "one.txt"
    txt.write_text("Hello world", encoding="utf-8")
    xz = write_jsonl(tmp_path / "two.jsonl.xz", ["a", "!"], xz=True)
    plain = tmp_path / "three.jsonl"
    plain.write_text('{"text": "Hello"}\n\n', encoding="utf-8")  # blank lines are skipped
    out = tmp_path / "out"
    tokenize_corpus([txt, xz, plain], out, val_tokens=0, shard_tokens=100, workers=1, progress=False)
    assert read_shard(out / "fineweb_val_000000.bin").size == 0
    assert read_shard(out / "fineweb_train_000001.bin").tolist() == [B, 15496, 995, B, 64, B, 0, B, 15496]


def train_documents(out):
    tokens = np.concatenate([read_shard(p) for p in sorted(out.glob("fineweb_train_*.bin"))]).tolist()
    docs, current = [], None
    for t in tokens:
        if t == B:
            current = []
            docs.append(current)
        current.append(t)
    return [tuple(d) for d in docs]


def test_passes_repeat_the_training_documents_reshuffled(tmp_path):
    texts = [chr(ord("a") + i) for i in range(12)]  # ids 64 .. 75
    corpus = write_jsonl(tmp_path / "c.jsonl", ["Hello world", *texts])
    out = tmp_path / "out"
    summary = tokenize_corpus([corpus], out, val_tokens=1, shard_tokens=10, passes=3, seed=5, workers=1, progress=False)
    docs = train_documents(out)
    one_pass = [(B, 64 + i) for i in range(12)]
    assert docs[:12] == one_pass  # pass 0 keeps corpus order
    later = [docs[12:24], docs[24:36]]
    assert all(sorted(p) == one_pass for p in later) and len(docs) == 36  # each later pass: every document once
    assert later[0] != one_pass and later[1] != one_pass and later[0] != later[1]
    assert summary.train_shards == 8  # 72 tokens in shards of 10, documents straddling shards
    other = tmp_path / "other"
    tokenize_corpus([corpus], other, val_tokens=1, shard_tokens=10, passes=3, seed=6, workers=1, progress=False)
    assert train_documents(other)[:12] == one_pass and train_documents(other)[12:] != docs[12:]


def test_same_bytes_every_time_and_with_several_workers(tmp_path):
    texts = [f"Document {i}: " + "some text with words, numbers 12345 and unicode é中文 " * (i % 7 + 1) for i in range(60)]
    corpus = write_jsonl(tmp_path / "c.jsonl.xz", texts, xz=True)
    outputs = []
    for run, workers in enumerate([1, 1, 2]):
        out = tmp_path / f"out{run}"
        tokenize_corpus([corpus], out, val_tokens=500, shard_tokens=1000, passes=2, workers=workers, progress=False)
        outputs.append({p.name: p.read_bytes() for p in out.glob("fineweb_*.bin")})
    assert len(outputs[0]) > 3 and outputs[0] == outputs[1] == outputs[2]
    enc = gpt2_encoding()
    val = read_shard(tmp_path / "out0" / "fineweb_val_000000.bin").tolist()
    n_val = next(i for i in range(1, 61) if sum(len(enc.encode_ordinary(t)) + 1 for t in texts[:i]) >= 500)
    assert val == [t for text in texts[:n_val] for t in [B, *enc.encode_ordinary(text)]]


def write_bytes(path, data):
    path.write_bytes(data)
    return path


@pytest.mark.parametrize(
    "name, data, message",
    [
        ("bad.jsonl", b'{"text": "a"}\n{"text": "b"}\n{"text": oops}\n', r"bad.jsonl:3: not valid JSON"),
        ("bad.jsonl", b'{"text": "a"}\n{"body": "b"}\n', r'bad.jsonl:2: expected a JSON object with a string "text" field'),
        ("bad.jsonl", b'{"text": "a"}\n[1, 2]\n', r"bad.jsonl:2: expected a JSON object"),
        ("bad.jsonl", b'{"text": 5}\n', r"bad.jsonl:1: expected a JSON object with a string \"text\""),
        ("bad.jsonl", b'{"text": "a"}\n{"text": "caf\xe9"}\n', r"bad.jsonl:2: not valid UTF-8 \(byte 0xe9 at column 14\)"),
        ("bad.jsonl.xz", lzma.compress(b'{"text": "a"}\n\n{"text": \n'), r"bad.jsonl.xz:3: not valid JSON"),
        ("bad.jsonl.xz", b"this is not xz", r"bad.jsonl.xz: not a valid .xz archive"),
        ("bad.txt", b"line one\nline two\nbad \xff byte\n", r"bad.txt:3: not valid UTF-8 \(byte 0xff at column 5\)"),
        ("empty.jsonl", b"\n  \n", r"empty.jsonl is empty"),
        ("empty.jsonl.xz", lzma.compress(b""), r"empty.jsonl.xz is empty"),
        ("empty.txt", b" \n", r"empty.txt is empty"),
        ("notes.md", b"text", r"notes.md: unknown kind"),
    ],
)
def test_bad_input_names_file_and_line(tmp_path, name, data, message):
    good = write_jsonl(tmp_path / "good.jsonl", ["Hello world"] * 3)
    bad = write_bytes(tmp_path / name, data)
    out = tmp_path / "out"
    with pytest.raises(DataError, match=message):
        tokenize_corpus([good, bad], out, val_tokens=1, workers=1, progress=False)
    assert not out.exists() or not list(out.iterdir())  # nothing half-written is left behind


def test_bad_input_through_the_worker_pool(tmp_path):
    bad = write_bytes(tmp_path / "bad.jsonl", b'{"text": "a"}\n' * 100 + b"{broken\n")
    with pytest.raises(DataError, match=r"bad.jsonl:101: not valid JSON"):
        tokenize_corpus([bad], tmp_path / "out", val_tokens=1, workers=2, progress=False)


def test_missing_input_and_directory_input(tmp_path):
    with pytest.raises(DataError, match=r"input .*nowhere.jsonl does not exist"):
        tokenize_corpus([tmp_path / "nowhere.jsonl"], tmp_path / "out", val_tokens=1)
    with pytest.raises(DataError, match="is not a file"):
        tokenize_corpus([tmp_path], tmp_path / "out", val_tokens=1)
    with pytest.raises(DataError, match="no input files given"):
        tokenize_corpus([], tmp_path / "out", val_tokens=1)


def test_corpus_too_small_for_the_options(tmp_path):
    corpus = write_jsonl(tmp_path / "c.jsonl", DOCS)  # 3 + 2 + 2 + 2 tokens
    with pytest.raises(DataError, match="only 9 tokens, fewer than --val-tokens 10"):
        tokenize_corpus([corpus], tmp_path / "a", val_tokens=10, workers=1, progress=False)
    with pytest.raises(DataError, match="no documents left for training"):
        tokenize_corpus([corpus], tmp_path / "b", val_tokens=8, workers=1, progress=False)
    for option in (dict(passes=0), dict(shard_tokens=0), dict(val_tokens=-1)):
        with pytest.raises(DataError, match="must be"):
            tokenize_corpus([corpus], tmp_path / "c", **{"val_tokens": 1, **option})


def test_refuses_to_mix_with_existing_shards(tmp_path):
    corpus = write_jsonl(tmp_path / "c.jsonl", DOCS)
    tokenize_corpus([corpus], tmp_path / "out", val_tokens=1, workers=1, progress=False)
    with pytest.raises(DataError, match="already holds 2 shard"):
        tokenize_corpus([corpus], tmp_path / "out", val_tokens=1, workers=1, progress=False)


def run_cli(*args):
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    return subprocess.run([sys.executable, "-m", "jaxrun.data", *map(str, args)], capture_output=True, text=True, env=env, timeout=120)


def test_command_line(tmp_path):
    corpus = write_jsonl(tmp_path / "c.jsonl", DOCS)
    done = run_cli("tokenize", corpus, tmp_path / "out", "--val-tokens", 3, "--shard-tokens", 4, "--passes", 2, "--workers", 1)
    assert done.returncode == 0, done.stderr
    assert "4 documents" in done.stdout and "train 2 x 6 = 12 tokens" in done.stdout
    assert shard_files(tmp_path / "out") == [f"fineweb_train_00000{i}.bin" for i in (1, 2, 3)] + ["fineweb_val_000000.bin"]
    failed = run_cli("tokenize", tmp_path / "nowhere.jsonl", tmp_path / "out2")
    assert failed.returncode == 2 and "error: input" in failed.stderr and "does not exist" in failed.stderr
    usage = run_cli("tokenize", corpus)
    assert usage.returncode == 2 and "at least one INPUT and an OUT_DIR" in usage.stderr
