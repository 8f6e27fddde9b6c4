"""Training batches (recipe §5.2) against batches written out by hand, and against a literal transcription of the spec."""

import json
import threading

import grain
import numpy as np
import pytest

from jaxrun.config import DataConfig
from jaxrun.data import DataError, TrainLoader, write_shard
from jaxrun.data.loader import train_batches, train_shard_paths
from jaxrun.data.plan import TrainShards

B = 50256  # BOS

# Three hand-built shards. Document lengths (cap max_doc_len = 5) are noted per document.
SHARD_1 = [7,                        # before the first BOS: never used
           B, 1, 2, 3,               # A: 4
           B, 4, 5, 6, 7, 8, 9, 10,  # B: 8 -> 5
           B, 11, 12,                # C: 3
           B, 13, 14, 15, 16, 17, 18,  # D: 7 -> 5 (truncated by the cap)
           B, 19]                    # E: 2, runs to the end of the shard
SHARD_2 = [20, 21,
           B, 30, 31, 32, 33, 34, 35, 36,  # F: 8 -> 5
           B, 40,                          # G: 2
           B, 41, 42,                      # H: 3
           B, 50, 51, 52, 53,              # I: 5
           B, 60, 61,                      # J: 3
           B, 70, 71, 72,                  # K: 4
           B, 80, 81, 82, 83, 84]          # L: 6 -> 5
SHARD_3 = [B, 90, 91,                      # M: 3
           B, 92, 93, 94, 95, 96, 97,      # N: 7 -> 5
           B, 100, 101, 102,               # O: 4
           B, 110]                         # P: 2

# Step 1 (N = 8, 9 tokens per rank). Rank 0: A, then B cut to 5. Rank 1: C, D capped at 5, then E cut to its BOS.
STEP_1 = {
    "inputs": [[B, 1, 2, 3, B, 4, 5, 6], [B, 11, 12, B, 13, 14, 15, 16]],
    "targets": [[1, 2, 3, B, 4, 5, 6, 7], [11, 12, B, 13, 14, 15, 16, B]],
    "seg_ids": [[0, 0, 0, 0, 1, 1, 1, 1], [0, 0, 0, 1, 1, 1, 1, 1]],
}
# Step 2 (N = 8): shard 1 has no document left, so the plan starts at shard 2's first BOS.
# Rank 0: F capped, G, H cut to 2. Rank 1: I, J, K cut to its BOS (a zero-length last segment).
STEP_2 = {
    "inputs": [[B, 30, 31, 32, 33, B, 40, B], [B, 50, 51, 52, 53, B, 60, 61]],
    "targets": [[30, 31, 32, 33, B, 40, B, 41], [50, 51, 52, 53, B, 60, 61, B]],
    "seg_ids": [[0, 0, 0, 0, 0, 1, 1, 2], [0, 0, 0, 0, 0, 1, 1, 1]],
}
# Step 3 (N = 4, the batch size changed): rank 0 would take L, but rank 1 finds no document in shard 2, so that partial
# plan is thrown away and the step is rebuilt from shard 3. Rank 0: M, N cut to 2. Rank 1: O, P cut to its BOS.
STEP_3 = {
    "inputs": [[B, 90, 91, B], [B, 100, 101, 102]],
    "targets": [[90, 91, B, 92], [100, 101, 102, B]],
    "seg_ids": [[0, 0, 0, 1], [0, 0, 0, 0]],
}
SIZES = [8, 8, 4]
EXPECTED = [STEP_1, STEP_2, STEP_3]


def data_config(directory, **changes):
    fields = dict(
        train_files=str(directory / "fineweb_train_*.bin"),
        val_file=str(directory / "fineweb_val_000000.bin"),
        val_tokens=8,
        val_seq_len=4,
        num_ranks=2,
        max_doc_len=5,
        bos_token=B,
    )
    fields.update(changes)
    return DataConfig(**fields)


@pytest.fixture
def hand_shards(tmp_path):
    for i, tokens in enumerate([SHARD_1, SHARD_2, SHARD_3], start=1):
        write_shard(tmp_path / f"fineweb_train_{i:06d}.bin", np.array(tokens))
    return data_config(tmp_path)


def assert_batch(batch, expected, rows=(0, 1)):
    assert set(batch) == set(expected)
    for key, want in expected.items():
        assert batch[key].dtype == np.int32, key
        np.testing.assert_array_equal(batch[key], np.array(want)[list(rows)], err_msg=key)


@pytest.mark.parametrize("prefetch", [True, False])
def test_hand_worked_steps_then_out_of_data(hand_shards, prefetch):
    loader = TrainLoader(hand_shards, range(2), prefetch=prefetch)
    for n, expected in zip(SIZES, EXPECTED):
        assert_batch(loader.next_batch(n), expected)
    with pytest.raises(DataError) as err:
        loader.next_batch(4)
    message = str(err.value)
    assert "out of training data" in message and "3 shard(s)" in message
    assert "after 3 steps (40 tokens delivered" in message  # 2 ranks x (8 + 8 + 4)
    assert "--passes" in message and "python -m jaxrun.data fineweb" in message
    loader.close()


def test_a_process_builds_only_its_own_ranks(hand_shards):
    """Rank 1 alone (process 1 of 2) sees exactly the rows the one-process loader gives rank 1, across roll-overs."""
    loader = TrainLoader(hand_shards, [1])
    for n, expected in zip(SIZES, EXPECTED):
        assert_batch(loader.next_batch(n), expected, rows=(1,))


def test_state_restore_continues_identically_across_a_batch_size_change(hand_shards):
    loader = TrainLoader(hand_shards, range(2))
    loader.next_batch(8)
    state = json.loads(json.dumps(loader.get_state()))  # what a checkpoint stores
    loader.next_batch(8)  # the loader has prefetched a third N = 8 batch that will not be used
    resumed = TrainLoader(hand_shards, range(2))
    resumed.set_state(state)
    assert_batch(resumed.next_batch(8), STEP_2)
    assert_batch(resumed.next_batch(4), STEP_3)
    assert_batch(loader.next_batch(4), STEP_3)
    loader.set_state(state)  # going back discards whatever was prefetched
    assert_batch(loader.next_batch(8), STEP_2)


def test_state_names_the_shard_and_is_checked(hand_shards, tmp_path):
    loader = TrainLoader(hand_shards, range(2))
    loader.next_batch(8)
    loader.next_batch(8)
    state = loader.get_state()
    assert state == {"shard": 1, "shard_file": "fineweb_train_000002.bin", "doc": 6, "steps": 2, "tokens": 32}
    other = tmp_path / "other"
    other.mkdir()
    write_shard(other / "fineweb_train_000007.bin", np.array(SHARD_1))
    write_shard(other / "fineweb_train_000009.bin", np.array(SHARD_2))
    with pytest.raises(DataError, match="resume with the same training shards"):
        TrainLoader(data_config(other), range(2)).set_state(state)
    with pytest.raises(DataError, match="not a training-data state"):
        loader.set_state({"shard": 0})


@pytest.mark.parametrize("ranks", [[2], [], [0, 0], [-1]])
def test_bad_local_ranks(hand_shards, ranks):
    with pytest.raises(DataError, match="local_ranks"):
        TrainLoader(hand_shards, ranks)


@pytest.mark.parametrize("n", [0, -8, 2.5, True])
def test_bad_tokens_per_rank(hand_shards, n):
    with pytest.raises(DataError, match="tokens_per_rank must be a positive integer"):
        TrainLoader(hand_shards, range(2)).next_batch(n)


def test_no_shards_names_the_pattern_and_the_command(tmp_path):
    with pytest.raises(DataError) as err:
        TrainLoader(data_config(tmp_path / "missing"), range(2))
    assert "fineweb_train_*.bin" in str(err.value) and "python -m jaxrun.data" in str(err.value)


# --- a literal transcription of recipe §5.2 (token by token), to compare with on random shards -------------------------


def spec_batches(shards, sizes, max_doc_len, num_ranks):
    """Yield, per step, (inputs, targets, segment lengths) per rank, following the spec's words with plain loops."""
    shard_i, pos = 0, None  # pos: index into this shard's BOS list
    for n in sizes:
        while True:
            tokens = shards[shard_i]
            bos = [i for i, t in enumerate(tokens) if t == B]
            k = 0 if pos is None else pos
            rows, ok = [], True
            for _ in range(num_ranks):
                buf, pieces = [], []
                while len(buf) <= n:
                    if k >= len(bos):
                        ok = False
                        break
                    start = bos[k]
                    piece = []
                    for t in range(start, len(tokens)):
                        if (t > start and tokens[t] == B) or len(piece) == max_doc_len or len(buf) + len(piece) == n + 1:
                            break
                        piece.append(tokens[t])
                    buf += piece
                    pieces.append(len(piece))
                    k += 1
                if not ok:
                    break
                pieces[-1] -= 1
                rows.append((buf[:n], buf[1 : n + 1], pieces))
            if ok:
                pos = k
                yield rows
                break
            shard_i, pos = shard_i + 1, None
            if shard_i == len(shards):
                return


@pytest.fixture
def random_shards(tmp_path):
    """Three random shards (as lists) and their config: 4 ranks, documents capped at 20 tokens."""
    rng = np.random.default_rng(0)
    shards = []
    for i in range(3):
        docs = [np.concatenate([[B], rng.integers(0, 50000, size=rng.geometric(1 / 12) - 1)]) for _ in range(400)]
        lead = rng.integers(0, 50000, size=3)  # a shard starts mid-document
        shards.append(np.concatenate([lead, *docs]).astype(np.int64))
        write_shard(tmp_path / f"fineweb_train_{i + 1:06d}.bin", shards[-1])
    return data_config(tmp_path, num_ranks=4, max_doc_len=20), [s.tolist() for s in shards]


def random_sizes(count=150, seed=1):
    return [int(s) for s in np.random.default_rng(seed).choice([16, 40, 64], size=count)]


# Phases as in the schedule (recipe §4): runs of one batch size, so prefetched batches are dropped at each change.
PHASED_SIZES = [16] * 30 + [40] * 20 + [64] * 10 + [16] * 10 + [64] * 40


def assert_spec_rows(batch, rows, ranks):
    for row, rank in enumerate(ranks):
        inputs, targets, pieces = rows[rank]
        np.testing.assert_array_equal(batch["inputs"][row], inputs)
        np.testing.assert_array_equal(batch["targets"][row], targets)
        np.testing.assert_array_equal(batch["seg_ids"][row], np.repeat(np.arange(len(pieces)), pieces))


@pytest.mark.parametrize("sizes", [random_sizes(), PHASED_SIZES], ids=["random", "phased"])
def test_matches_the_spec_transcription_on_random_shards(random_shards, sizes):
    cfg, shards = random_shards
    expected = list(spec_batches(shards, sizes, max_doc_len=20, num_ranks=4))
    assert len(expected) < len(sizes)  # the random data ran out: the steps covered cross both shard boundaries
    loader = TrainLoader(cfg, [3, 1])
    for n, rows in zip(sizes, expected):
        assert_spec_rows(loader.next_batch(n), rows, [3, 1])
    with pytest.raises(DataError, match="out of training data"):
        loader.next_batch(sizes[len(expected)])


@pytest.mark.parametrize("sizes", [random_sizes(seed=2), PHASED_SIZES], ids=["random", "phased"])
def test_resume_mid_stream_gives_the_same_batches(random_shards, sizes):
    """A state taken after k steps (through JSON, as a checkpoint stores it) continues with the spec's batches k, k+1, ...
    whether the first loader had prefetched past it or not, and runs out of data at the same step."""
    cfg, shards = random_shards
    expected = list(spec_batches(shards, sizes, max_doc_len=20, num_ranks=4))
    for k in (0, 1, 29, 30, 31, len(expected) - 1):  # 30: the first phase change of PHASED_SIZES
        first = TrainLoader(cfg, range(4))
        for n in sizes[:k]:
            first.next_batch(n)
        state = json.loads(json.dumps(first.get_state()))
        first.close()
        resumed = TrainLoader(cfg, [0, 2], prefetch=k % 2 == 0)
        resumed.set_state(state)
        for n, rows in zip(sizes[k:], expected[k:]):
            assert_spec_rows(resumed.next_batch(n), rows, [0, 2])
        with pytest.raises(DataError, match="out of training data"):
            resumed.next_batch(sizes[len(expected)])
        resumed.close()


def test_prefetch_does_not_change_batches_or_states(random_shards):
    cfg, _ = random_shards
    with_thread, inline = TrainLoader(cfg, range(4), prefetch=True), TrainLoader(cfg, range(4), prefetch=False)
    for step, n in enumerate(PHASED_SIZES):
        try:
            a = with_thread.next_batch(n)
        except DataError:
            with pytest.raises(DataError):
                inline.next_batch(n)
            break
        b = inline.next_batch(n)
        for key in b:
            np.testing.assert_array_equal(a[key], b[key], err_msg=f"step {step} {key}")
        assert with_thread.get_state() == inline.get_state(), step
    else:
        pytest.fail("the data should run out")
    assert with_thread.get_state() == inline.get_state()


@pytest.mark.parametrize("prefetch", [True, False])
def test_priming_builds_ahead_without_moving_the_stream(random_shards, prefetch):
    cfg, _ = random_shards
    primed, plain = TrainLoader(cfg, range(4), prefetch=prefetch), TrainLoader(cfg, range(4), prefetch=prefetch)
    state = primed.get_state()
    primed.prime(PHASED_SIZES[0])
    assert primed.get_state() == state  # nothing handed out
    if prefetch and hasattr(primed._it, "start_prefetch"):  # grain's prefetch thread runs before the first batch
        assert getattr(primed._it, "_prefetch_thread", None) is not None
    primed.prime(PHASED_SIZES[0])  # again: the same pipeline
    for step, n in enumerate(PHASED_SIZES[:3]):
        a, b = primed.next_batch(n), plain.next_batch(n)
        for key in b:
            np.testing.assert_array_equal(a[key], b[key], err_msg=f"step {step} {key}")
        assert primed.get_state() == plain.get_state(), step
    with pytest.raises(DataError, match="tokens_per_rank must be a positive integer"):
        primed.prime(0)
    primed.close()
    plain.close()


def within(seconds, fn, *args):
    """fn(*args) on a helper thread, so that a loader waiting forever fails the test instead of hanging it."""
    out = {}

    def run():
        try:
            out["value"] = fn(*args)
        except Exception as err:  # noqa: BLE001 - handed to the test below
            out["error"] = err

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"{fn.__name__}{args} did not return within {seconds}s"
    if "error" in out:
        raise out["error"]
    return out["value"]


@pytest.mark.parametrize("prefetch", [True, False])
def test_out_of_data_leaves_the_loader_where_it_was(hand_shards, prefetch):
    loader = TrainLoader(hand_shards, range(2), prefetch=prefetch)
    assert_batch(loader.next_batch(8), STEP_1)
    assert_batch(loader.next_batch(8), STEP_2)
    state = loader.get_state()
    for _ in range(2):  # N = 9 does not fit shard 2's rest or shard 3; asking again gives the same answer
        with pytest.raises(DataError, match="out of training data"):
            within(10, loader.next_batch, 9)
        assert loader.get_state() == state
    assert_batch(loader.next_batch(4), STEP_3)  # a smaller N still fits, from the same place
    state = loader.get_state()
    for _ in range(2):  # the same N as the pipeline in use, whose prefetch thread has already met the end
        with pytest.raises(DataError, match="out of training data"):
            within(10, loader.next_batch, 4)
        assert loader.get_state() == state
    loader.close()


def test_a_rejected_state_leaves_the_loader_where_it_was(hand_shards):
    loader = TrainLoader(hand_shards, range(2))
    assert_batch(loader.next_batch(8), STEP_1)  # grain's thread has built STEP_2 (and maybe more) by now
    with pytest.raises(DataError, match="not a training-data state"):
        loader.set_state({"shard": 0})
    assert_batch(loader.next_batch(8), STEP_2)


def test_a_data_state_saved_before_the_grain_pipeline_loads(hand_shards):
    """The dict the hand-written loader put in checkpoints (same keys, same meaning) resumes where it says."""
    loader = TrainLoader(hand_shards, range(2))
    loader.set_state({"shard": 1, "shard_file": "fineweb_train_000002.bin", "doc": 6, "steps": 2, "tokens": 32})
    assert_batch(loader.next_batch(4), STEP_3)


def test_the_pipeline_is_a_grain_dataset_with_grain_state(hand_shards):
    """train_batches is a plain grain IterDataset: its iterators checkpoint through grain's get_state / set_state."""
    shards = TrainShards(train_shard_paths(hand_shards), B, hand_shards.max_doc_len)
    ds = train_batches(shards, 2, (0, 1), 8, prefetch=1)
    assert isinstance(ds, grain.IterDataset)
    it = iter(ds)
    assert isinstance(it, grain.DatasetIterator)
    assert_batch(next(it), STEP_1)
    state = it.get_state()
    again = iter(ds)
    again.set_state(state)
    assert_batch(next(again), STEP_2)
    it.close()
    again.close()
    shards.close()
