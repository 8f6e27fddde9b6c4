"""Checkpoints (jaxrun/checkpoint.py): recorded checksums, verification on restore, fall back to the newest intact step.

Each kind of damage seen in testing by hand: random bytes inside an array file (restored silently before), a missing
item folder, a truncated file, a damaged metadata file; and saving a step twice.
"""

import json
import os
import shutil

import jax.numpy as jnp
import numpy as np
import pytest

from jaxrun.checkpoint import CHECKSUMS_NAME, CheckpointError, Checkpointer, damage, file_digests


def _state(step):
    return {"w": jnp.full((64, 64), float(step)), "b": jnp.arange(16, dtype=jnp.float32) + step}


def _abstract():
    import jax

    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), _state(0))


@pytest.fixture
def saved(tmp_path):
    """Checkpoints of steps 2, 4, 6 with keep=2: steps 4 and 6 remain."""
    ckpt = Checkpointer(tmp_path / "checkpoints", keep=2)
    for step in (2, 4, 6):
        assert ckpt.save(step, _state(step), {"position": step}, {"step": step})
    yield ckpt, tmp_path / "checkpoints"
    ckpt.close()


def _largest_file(step_dir):
    return max((p for p in step_dir.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)


def _restored_step(ckpt, messages):
    state, data, meta = ckpt.restore(_abstract(), report=messages.append)
    assert float(state["w"][0, 0]) == meta["step"] == data["position"]
    return meta["step"]


def test_keeps_the_newest_and_records_their_checksums(saved):
    ckpt, directory = saved
    assert ckpt.steps() == [4, 6]
    table = json.loads((directory / CHECKSUMS_NAME).read_text())
    assert sorted(table) == ["4", "6"]
    assert table["6"] == file_digests(directory / "6")
    assert ckpt.check(6) is None


def test_random_bytes_in_an_array_file_fall_back_to_the_previous_step(saved):
    ckpt, directory = saved
    target = _largest_file(directory / "6")
    data = bytearray(target.read_bytes())
    rng = np.random.default_rng(0)
    at = len(data) // 2
    data[at : at + 4096] = rng.integers(0, 256, min(4096, len(data) - at), dtype=np.uint8).tobytes()
    target.write_bytes(bytes(data))
    assert "differs from the checksum" in ckpt.check(6)
    messages = []
    assert _restored_step(ckpt, messages) == 4
    assert len(messages) == 1 and "step 6" in messages[0] and "damaged" in messages[0]
    with pytest.raises(CheckpointError, match=r"step 6: .*differs from the checksum.*--resume-step"):
        ckpt.restore(_abstract(), step=6)


@pytest.mark.parametrize("how", ["missing item", "truncated file", "damaged metadata"])
def test_other_damage_is_named_and_skipped(saved, how):
    ckpt, directory = saved
    step_dir = directory / "6"
    if how == "missing item":
        shutil.rmtree(step_dir / "state")
    elif how == "truncated file":
        target = _largest_file(step_dir)
        os.truncate(target, target.stat().st_size // 2)
    else:
        meta = next(p for p in step_dir.rglob("*") if p.is_file() and "metadata" in p.name.lower())
        meta.write_text("{not json")
    assert ckpt.check(6) is not None
    messages = []
    assert _restored_step(ckpt, messages) == 4 and "step 6" in messages[0]


def test_without_recorded_checksums_a_failed_read_still_falls_back(saved):
    ckpt, directory = saved
    (directory / CHECKSUMS_NAME).unlink()
    shutil.rmtree(directory / "6" / "state")
    messages = []
    assert _restored_step(ckpt, messages) == 4
    assert "cannot be read" in messages[0]


def test_no_intact_step_is_an_error_naming_each(saved):
    ckpt, directory = saved
    for step in ("4", "6"):
        shutil.rmtree(directory / step / "state")
    with pytest.raises(CheckpointError, match=r"no intact checkpoint .*step 6: .*step 4: .*without --resume"):
        ckpt.restore(_abstract())


def test_saving_a_step_again_is_a_no_op(saved):
    ckpt, directory = saved
    before = file_digests(directory / "6")
    assert ckpt.save(6, _state(99), {"position": 99}, {"step": 99}) is False
    assert file_digests(directory / "6") == before


def test_restore_errors_name_what_exists(tmp_path):
    ckpt = Checkpointer(tmp_path / "empty")
    with pytest.raises(CheckpointError, match="nothing to resume"):
        ckpt.restore(_abstract())
    ckpt.save(3, _state(3), {}, {"step": 3})
    with pytest.raises(CheckpointError, match="no checkpoint of step 5 .* holds steps 3"):
        ckpt.restore(_abstract(), step=5)
    ckpt.close()
    with pytest.raises(ValueError, match="keep must be >= 1"):
        Checkpointer(tmp_path / "x", keep=0)


def test_damage_reports_sizes_and_missing_files(tmp_path):
    (tmp_path / "a").write_bytes(b"1234")
    recorded = file_digests(tmp_path)
    (tmp_path / "a").write_bytes(b"12")
    assert damage(tmp_path, recorded) == "a has 2 bytes, 4 were written"
    (tmp_path / "a").unlink()
    assert damage(tmp_path, recorded).startswith("1 file(s) missing")
    assert damage(tmp_path / "gone", recorded) == "its folder is missing"
