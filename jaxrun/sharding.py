"""Where every array lives: the device mesh, multi-host start-up, and the partition rules (all of them, here only).

One mesh axis, ``data``, spans every device of every process. The recipe is defined for 8 virtual ranks (recipe §3.6):
on D devices each device runs 8/D of them as micro-batches, so 1, 2, 4 and 8 devices compute the same update.

- batches: the virtual-rank axis is sharded over ``data``;
- bf16 parameters: replicated (every device runs the full model on its own sequences);
- fp32 masters, optimizer states and the Adam gradient accumulator: sharded (ZeRO-1, like the reference) along the first
  of their parameter's ``zero_axes`` (the parameter table, jaxrun.params) whose size the device count divides; tensors
  below ``SHARD_MIN_ELEMENTS`` stay replicated (the reference all-reduces its small Adam tensors too, recipe §3.5);
- gradients leave the per-device computation reduce-scattered into that same layout, so each device holds only the
  slice of the summed gradient that its optimizer shard needs.
"""

from __future__ import annotations

import os

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from jaxrun.params import TABLE

AXIS = "data"
SHARD_MIN_ELEMENTS = 1024  # recipe §3.5: tensors of >= 1024 elements are sharded, smaller ones all-reduced


def init_distributed(coordinator: str | None = None, num_processes: int | None = None, process_id: int | None = None) -> None:
    """Start multi-host JAX when the launcher asked for it (a no-op for a single process).

    Flags win over the environment: JAX_COORDINATOR_ADDRESS (host:port of process 0), JAX_NUM_PROCESSES and
    JAX_PROCESS_ID; without them jax.distributed.initialize() also recognises cluster environments (SLURM, Open MPI).
    """
    coordinator = coordinator or os.environ.get("JAX_COORDINATOR_ADDRESS")
    num_processes = num_processes if num_processes is not None else _env_int("JAX_NUM_PROCESSES")
    process_id = process_id if process_id is not None else _env_int("JAX_PROCESS_ID")
    cluster = any(os.environ.get(m) for m in ("SLURM_JOB_ID", "OMPI_COMM_WORLD_SIZE"))
    if (coordinator or cluster) and not jax.distributed.is_initialized():
        jax.distributed.initialize(coordinator_address=coordinator, num_processes=num_processes, process_id=process_id)


def _env_int(name: str) -> int | None:
    value = os.environ.get(name)
    return int(value) if value else None


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


def shard_axis(shape: tuple[int, ...], num_devices: int, axes: tuple[int, ...] | None = None) -> int | None:
    """The axis a ZeRO-sharded tensor is split along: the first of ``axes`` (default: every axis, in order) that the
    device count divides; None to keep it replicated."""
    if num_devices == 1 or int(np.prod(shape, dtype=np.int64)) < SHARD_MIN_ELEMENTS:
        return None
    for axis in range(len(shape)) if axes is None else axes:
        if axis < len(shape) and shape[axis] % num_devices == 0 and shape[axis] >= num_devices:
            return axis
    return None


def zero_spec(shape: tuple[int, ...], num_devices: int, axes: tuple[int, ...] | None = None) -> P:
    axis = shard_axis(shape, num_devices, axes)
    if axis is None:
        return P()
    return P(*([None] * axis + [AXIS]))


def _zero_axes(path) -> tuple[int, ...] | None:
    """The zero_axes of the parameter a state leaf belongs to: the innermost dict key on its path that names one (state
    trees are dicts keyed by parameter name, recipe §3.5); None for a leaf of no parameter."""
    for key in reversed(path):
        name = getattr(key, "key", None)
        if isinstance(name, str) and name in TABLE:
            return TABLE[name].zero_axes
    return None


def zero_specs(tree, num_devices: int):
    """PartitionSpecs for optimizer-side state (masters, moments, accumulators, gradients): each leaf sharded per
    ``shard_axis`` along its parameter's zero_axes."""
    return jax.tree_util.tree_map_with_path(
        lambda path, x: zero_spec(tuple(x.shape), num_devices, _zero_axes(path)), tree)


def zero_shardings(tree, mesh: Mesh):
    """NamedShardings of ``zero_specs``."""
    return jax.tree.map(lambda spec: NamedSharding(mesh, spec), zero_specs(tree, mesh.devices.size),
                        is_leaf=lambda x: isinstance(x, P))


def reduce_scatter_sum(tree, num_devices: int):
    """Inside shard_map: sum each gradient over ``data`` and keep this device's ZeRO slice (replicated ones all-reduced)."""
    if num_devices == 1:
        return tree

    def one(path, g):
        axis = shard_axis(tuple(g.shape), num_devices, _zero_axes(path))
        if axis is None:
            return jax.lax.psum(g, AXIS)
        return jax.lax.psum_scatter(g, AXIS, scatter_dimension=axis, tiled=True)

    return jax.tree_util.tree_map_with_path(one, tree)


def matrix_split(mesh: Mesh):
    """For NorMuon's orth_layout: split a stack of matrices (n, rows, cols) over the devices along n.

    A stack that the device count does not divide (11 MLP matrices on 8 devices) is padded by XLA: some devices get
    one matrix more. On one device this is the identity.
    """
    if mesh.devices.size == 1:
        return None
    split = NamedSharding(mesh, P(AXIS))
    return lambda x: jax.lax.with_sharding_constraint(x, split)


def sum_over_devices(x, num_devices: int):
    """Inside shard_map: psum over ``data`` (no collective at all on one device)."""
    return x if num_devices == 1 else jax.lax.psum(x, AXIS)


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


def collectives(hlo_text: str) -> list[dict]:
    """The collective operations of a compiled program (``compiled.as_text()``): kind, result shapes and bytes."""
    import re

    sizes = {"f32": 4, "bf16": 2, "f16": 2, "s32": 4, "u32": 4, "f8e4m3fn": 1, "f8e5m2": 1, "pred": 1, "s8": 1}
    kinds = ("all-reduce", "reduce-scatter", "all-gather", "all-to-all", "collective-permute")
    out = []
    for line in hlo_text.splitlines():
        m = re.search(r"=\s*(.*?)\s(" + "|".join(kinds) + r")(-start)?\(", line)
        if not m:
            continue
        shapes = re.findall(r"([a-z0-9]+)\[([\d,]*)\]", m.group(1))
        nbytes = sum(int(np.prod([int(d) for d in dims.split(",") if d], dtype=np.int64)) * sizes.get(dtype, 4)
                     for dtype, dims in shapes)
        out.append({"kind": m.group(2), "shapes": [f"{d}[{s}]" for d, s in shapes], "bytes": nbytes})
    return out

