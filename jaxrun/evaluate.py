"""Validation loss (recipe §2.2): the mean next-token CE over the first ``val_tokens`` tokens of the validation shard.

Each device evaluates its virtual ranks' 262,144-token chunks one after another (bf16 head, chunked soft-capped CE inside
jaxrun.model.eval_loss); the chunk means are summed over all ranks and val steps and divided by their count, which is the
mean over every prediction because all chunks have the same length.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P

from jaxrun import model, ops
from jaxrun.config import Config
from jaxrun.sharding import AXIS, batch_sharding, replicated, sum_over_devices


def make_eval_fn(cfg: Config, mesh, windows: tuple[int, int], tied: bool, kernels: ops.Kernels | None = None):
    """A jitted fn(params, batch, dyn) -> sum over this val step's ranks of the per-chunk mean CE. ``kernels``: the op
    functions (default: ops.kernels of cfg's backends, built here, once)."""
    kernels = ops.kernels(cfg.model.backends) if kernels is None else kernels

    def local(params, batch, dyn):
        per_chunk = jax.lax.map(
            lambda b: model.eval_loss(params, b, dyn, cfg=cfg.model, windows=windows, tied=tied, kernels=kernels), batch
        )
        return sum_over_devices(jnp.sum(per_chunk), mesh.devices.size)

    sharded = jax.shard_map(local, mesh=mesh, in_specs=(P(), P(AXIS), P()), out_specs=P(), check_vma=False)
    return jax.jit(sharded, in_shardings=(replicated(mesh), batch_sharding(mesh), replicated(mesh)), out_shardings=replicated(mesh))


def validation_loss(eval_fn, params, val_steps, dyn, num_ranks: int) -> float:
    """Mean CE over all val steps (each a global batch of ``num_ranks`` chunks already on the devices)."""
    total = jnp.zeros((), jnp.float32)
    for batch in val_steps:
        total = total + eval_fn(params, batch, dyn)
    return float(total) / (num_ranks * len(val_steps))
