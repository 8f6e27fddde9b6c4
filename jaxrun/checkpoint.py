"""Orbax checkpoints of a run: the train state, the step and the data iterator's position, verified on restore.

Everything else a resumed run needs is a pure function of the step (learning rate, momentum, windows, YaRN tables,
attention scale, tie flag: jaxrun.schedule), so the step number is the schedule state; it is saved beside the arrays
with the YaRN values for inspection. Orbax writes each checkpoint to a temporary folder and renames it when complete,
so an interrupted save never damages the previous one.

Orbax does not notice damage after the fact (a changed byte in an array file restores silently), so every save also
records each file's size and SHA-256 in ``checksums.json`` beside the step folders, and a restore checks them first. A
damaged or unreadable step is reported by number, and the newest intact one is restored instead; the last
``keep`` checkpoints stay on disk so that there is one to fall back to.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from pathlib import Path

import jax
import orbax.checkpoint as ocp

CHECKSUMS_NAME = "checksums.json"
_CHUNK = 1 << 24


class CheckpointError(RuntimeError):
    """No checkpoint to restore, or none intact; the message says what was found and what to do."""


def file_digests(step_dir: Path) -> dict[str, list]:
    """{relative path: [size, sha256 hex]} of every file under a step folder."""
    out = {}
    for path in sorted(p for p in step_dir.rglob("*") if p.is_file()):
        h = hashlib.sha256()
        with open(path, "rb") as f:
            while chunk := f.read(_CHUNK):
                h.update(chunk)
        out[str(path.relative_to(step_dir))] = [path.stat().st_size, h.hexdigest()]
    return out


def damage(step_dir: Path, recorded: dict[str, list]) -> str | None:
    """What differs between a step folder and its recorded digests (None: intact)."""
    if not step_dir.is_dir():
        return "its folder is missing"
    actual = file_digests(step_dir)
    missing = sorted(set(recorded) - set(actual))
    if missing:
        return f"{len(missing)} file(s) missing, e.g. {missing[0]}"
    for name, (size, digest) in recorded.items():
        if actual[name][0] != size:
            return f"{name} has {actual[name][0]} bytes, {size} were written"
        if actual[name][1] != digest:
            return f"{name} differs from the checksum recorded when it was written"
    return None


class Checkpointer:
    def __init__(self, directory: str | Path, keep: int = 3, *, write_checksums: bool = True):
        """keep: how many of the newest checkpoints stay on disk. write_checksums: this process records the digests
        (process 0 of a multi-host run; every process verifies)."""
        if keep < 1:
            raise ValueError(f"keep must be >= 1 (checkpoints to keep), got {keep}")
        self.directory = Path(directory).resolve()
        self.write_checksums = write_checksums
        self.manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True),
        )

    # --- bookkeeping -----------------------------------------------------------------------------------------------

    def steps(self) -> list[int]:
        return sorted(self.manager.all_steps())

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def _checksums(self) -> dict[str, dict]:
        path = self.directory / CHECKSUMS_NAME
        if not path.is_file():
            return {}
        try:
            return json.loads(path.read_text())
        except json.JSONDecodeError as err:
            warnings.warn(f"{path} is unreadable ({err}); checkpoints are restored unverified", stacklevel=2)
            return {}

    def _write_checksums(self, table: dict[str, dict]) -> None:
        path = self.directory / CHECKSUMS_NAME
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(table, indent=1, sort_keys=True))
        os.replace(tmp, path)

    # --- save / restore --------------------------------------------------------------------------------------------

    def save(self, step: int, state, data_state: dict, meta: dict) -> bool:
        """Save after ``step`` completed optimizer steps (blocks until written: the caller may exit right after).
        Returns False, saving nothing, when that step is already saved (a finished run resumed, or a checkpoint
        schedule that divides the step count): a step's state is a function of the step, so the saved one stands."""
        if step in self.manager.all_steps():
            return False
        self.manager.save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(state),
                data=ocp.args.JsonSave(data_state),
                meta=ocp.args.JsonSave(meta),
            ),
            force=True,
        )
        self.manager.wait_until_finished()
        if self.write_checksums:
            kept = {str(s) for s in self.manager.all_steps()}
            table = {k: v for k, v in self._checksums().items() if k in kept}
            table[str(step)] = file_digests(self.directory / str(step))
            self._write_checksums(table)
        return True

    def _restore_step(self, step: int, abstract_state):
        restored = self.manager.restore(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract_state),
                data=ocp.args.JsonRestore(),
                meta=ocp.args.JsonRestore(),
            ),
        )
        return restored["state"], restored["data"], restored["meta"]

    def check(self, step: int) -> str | None:
        """Why the checkpoint of ``step`` is damaged, or None if its files match what was written (or no checksum was
        recorded for it, in which case only the restore itself can tell)."""
        recorded = self._checksums().get(str(step))
        return None if recorded is None else damage(self.directory / str(step), recorded)

    def restore(self, abstract_state, step: int | None = None, report=print):
        """Restore (state, data_state, meta) into the shardings of ``abstract_state`` (ShapeDtypeStructs).

        step=None: the newest intact checkpoint. A damaged or unreadable one is reported (``report``) and the next
        older is tried. An explicit step must be intact, else CheckpointError.
        """
        available = self.steps()
        if not available:
            raise CheckpointError(f"no checkpoint in {self.directory}: nothing to resume (the run stopped before its "
                                  f"first save; start it again without --resume)")
        if step is not None and step not in available:
            raise CheckpointError(f"no checkpoint of step {step} in {self.directory}; it holds steps "
                                  f"{', '.join(map(str, available))}")
        candidates = [step] if step is not None else sorted(available, reverse=True)
        problems = []
        for s in candidates:
            why = self.check(s)
            if why is None:
                try:
                    return self._restore_step(s, abstract_state)
                except Exception as err:  # noqa: BLE001 - any orbax/tensorstore failure means this step is unusable
                    why = f"it cannot be read ({type(err).__name__}: {str(err).splitlines()[0][:300]})"
            problems.append(f"step {s}: {why}")
            if step is None and s != candidates[-1]:
                report(f"checkpoint of step {s} in {self.directory} is damaged: {why}; trying the next older one")
        raise CheckpointError(
            f"no intact checkpoint in {self.directory} ({'; '.join(problems)}). "
            + ("Choose another with --resume-step N." if step is not None else
               "Start the run again without --resume (a new --name), or restore the folder from a backup.")
        )

    def close(self) -> None:
        self.manager.close()


def abstract_like(state, shardings):
    """ShapeDtypeStructs with the given shardings: the target layout of a restore."""
    return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), state, shardings)
