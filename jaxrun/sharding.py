"""Where every array lives: the device mesh, multi-host start-up, and the partition rules (all of them, here only).

One mesh axis, ``data``, spans every device of every process. The recipe is defined for 8 virtual ranks (SPEC §3.6):
on D devices each device runs 8/D of them as micro-batches, so 1, 2, 4 and 8 devices compute the same update.

- batches: the virtual-rank axis is sharded over ``data``;
- bf16 parameters: replicated (every device runs the full model on its own sequences);
- fp32 masters, optimizer states and the Adam gradient accumulator: sharded (ZeRO-1, like the reference) along the first
  axis whose size the device count divides; tensors below ``SHARD_MIN_ELEMENTS`` stay replicated (the reference
  all-reduces its small Adam tensors too, SPEC §3.5);
- gradients leave the per-device computation reduce-scattered into that same layout, so each device holds only the
  slice of the summed gradient that its optimizer shard needs.
"""

from __future__ import annotations

import os

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

AXIS = "data"
SHARD_MIN_ELEMENTS = 1024  # SPEC §3.5: tensors of >= 1024 elements are sharded, smaller ones all-reduced


def init_distributed() -> None:
    """Start multi-host JAX when the launcher asked for it (no-op for a single process).

    jax.distributed.initialize() reads the coordinator address, process count and id from the standard variables
    (JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID) or from a cluster environment it recognises (SLURM,
    Open MPI, ...). We call it only when one of those is present, so that a plain single-process run needs nothing.
    """
    markers = ("JAX_COORDINATOR_ADDRESS", "SLURM_JOB_ID", "OMPI_COMM_WORLD_SIZE")
    if any(os.environ.get(m) for m in markers) and not jax.distributed.is_initialized():
        jax.distributed.initialize()


def make_mesh(num_ranks: int, devices=None) -> Mesh:
    devices = list(jax.devices() if devices is None else devices)
    if num_ranks % len(devices):
        raise ValueError(
            f"{len(devices)} devices cannot share the recipe's {num_ranks} virtual ranks evenly: use 1, 2, 4 or 8 devices "
            f"(e.g. CUDA_VISIBLE_DEVICES=0,1,2,3), or set data.num_ranks to a multiple of the device count"
        )
    return Mesh(np.array(devices), (AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Arrays whose leading axis is the virtual rank."""
    return NamedSharding(mesh, P(AXIS))


def shard_axis(shape: tuple[int, ...], num_devices: int) -> int | None:
    """The axis a ZeRO-sharded tensor is split along, or None to keep it replicated."""
    if num_devices == 1 or int(np.prod(shape, dtype=np.int64)) < SHARD_MIN_ELEMENTS:
        return None
    for axis, size in enumerate(shape):
        if size % num_devices == 0 and size >= num_devices:
            return axis
    return None


def zero_spec(shape: tuple[int, ...], num_devices: int) -> P:
    axis = shard_axis(shape, num_devices)
    if axis is None:
        return P()
    return P(*([None] * axis + [AXIS]))


def zero_shardings(tree, mesh: Mesh):
    """NamedShardings for optimizer-side state (masters, moments, accumulators): sharded per ``shard_axis``."""
    n = mesh.devices.size
    return jax.tree.map(lambda x: NamedSharding(mesh, zero_spec(tuple(x.shape), n)), tree)


def zero_specs(tree, num_devices: int):
    return jax.tree.map(lambda x: zero_spec(tuple(x.shape), num_devices), tree)


def reduce_scatter_sum(tree, num_devices: int):
    """Inside shard_map: sum each gradient over ``data`` and keep this device's ZeRO slice (replicated ones all-reduced)."""

    def one(g):
        axis = shard_axis(tuple(g.shape), num_devices)
        if axis is None:
            return jax.lax.psum(g, AXIS)
        return jax.lax.psum_scatter(g, AXIS, scatter_dimension=axis, tiled=True)

    return jax.tree.map(one, tree)


def local_ranks(mesh: Mesh, num_ranks: int) -> list[int]:
    """The virtual ranks whose sequences this process must feed (its addressable devices' rows of the batch)."""
    index_map = batch_sharding(mesh).addressable_devices_indices_map((num_ranks,))
    rows = sorted({r for idx in index_map.values() for r in range(*idx[0].indices(num_ranks))})
    return rows


def put_batch(mesh: Mesh, local: dict, num_ranks: int) -> dict:
    """Assemble the global batch from this process's rows (multi-host safe; one process holds them all otherwise)."""
    sharding = batch_sharding(mesh)
    out = {}
    for key, value in local.items():
        global_shape = (num_ranks,) + tuple(value.shape[1:])
        out[key] = jax.make_array_from_process_local_data(sharding, value, global_shape)
    return out
