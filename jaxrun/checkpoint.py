"""Orbax checkpoints of a run: the train state, the step and the data iterator's position.

Everything else a resumed run needs is a pure function of the step (learning rate, momentum, windows, YaRN tables,
attention scale, tie flag: jaxrun.schedule), so the step number is the schedule state; it is saved beside the arrays
with the YaRN values for inspection. Orbax writes each checkpoint to a temporary folder and renames it when complete,
so an interrupted save never damages the previous one.
"""

from __future__ import annotations

from pathlib import Path

import jax
import orbax.checkpoint as ocp


class CheckpointError(RuntimeError):
    pass


class Checkpointer:
    def __init__(self, directory: str | Path, max_to_keep: int = 2):
        self.directory = Path(directory).resolve()
        self.manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True),
        )

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def save(self, step: int, state, data_state: dict, meta: dict) -> None:
        """Save after ``step`` completed optimizer steps (blocks until written: the caller may exit right after)."""
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

    def restore(self, abstract_state, step: int | None = None):
        """Restore (state, data_state, meta) into the shardings of ``abstract_state`` (ShapeDtypeStructs)."""
        step = self.latest_step() if step is None else step
        if step is None:
            raise CheckpointError(f"no checkpoint in {self.directory}: nothing to resume (was the run saved?)")
        restored = self.manager.restore(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract_state),
                data=ocp.args.JsonRestore(),
                meta=ocp.args.JsonRestore(),
            ),
        )
        return restored["state"], restored["data"], restored["meta"]

    def close(self) -> None:
        self.manager.close()


def abstract_like(state, shardings):
    """ShapeDtypeStructs with the given shardings: the target layout of a restore."""
    return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), state, shardings)
