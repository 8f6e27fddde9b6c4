"""The parameter table (recipe §1.3, §3.1): one record per parameter with every fact about it that the model, the
optimizers, the sharding rules, the FLOP count and the dry-run need, in the spirit of modded-nanogpt's ``param_table``.

A record's shape and initialiser are functions of the ModelConfig. The learning-rate and weight-decay multipliers and
the Adam betas stay in the OptimConfig (``optim.muon_lr_muls``, ``optim.adam_groups``), where config files and
``--set`` overrides give them; ``group`` reads them for a parameter.

The table's order is the order in which the model creates its parameters, which fixes their initial random values.
This module imports only jaxrun.config (and jax, numpy): everything else imports it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxrun.config import AdamGroup, ModelConfig, OptimConfig

NORMUON, ADAM = "NorMuon", "Adam"

Initializer = Callable[[jax.Array, tuple[int, ...], jnp.dtype], jax.Array]  # init(key, shape, dtype)


@dataclass(frozen=True)
class Param:
    """One parameter's facts. shape(cfg) and init(cfg) -> init(key, shape, dtype) take the ModelConfig."""

    name: str
    shape: Callable[[ModelConfig], tuple[int, ...]]
    dtype: jnp.dtype
    init: Callable[[ModelConfig], Initializer]
    optimizer: str  # NORMUON or ADAM (recipe §3.1)
    # The axes ZeRO may split the parameter's optimizer state along, in order of preference: jaxrun.sharding takes the
    # first one that the device count divides (recipe §3.5; tensors too small to shard stay replicated whatever this says).
    zero_axes: tuple[int, ...]
    matmul: bool = False  # counted in the FLOP budget (recipe §1.12, §9)
    square_blocks: bool = False  # NorMuon treats its (cols x cols) row blocks as separate matrices (recipe §3.2 item 2)
    split_product: bool = False  # Polar Express rounds BX before adding aX, the reference's split_baddbmm (recipe §3.2)


class Group(NamedTuple):
    """A parameter's optimizer settings, as the config gives them (recipe §1.3)."""

    optimizer: str
    lr_mul: float
    wd_mul: float
    betas: tuple[float, float] | None  # Adam's; None for NorMuon


# --- initialisers (recipe §1.3) ---------------------------------------------------------------------------------------


def _uniform(bound: float) -> Initializer:
    return lambda key, shape, dtype: jax.random.uniform(key, shape, jnp.float32, -bound, bound).astype(dtype)


def _normal(std: float) -> Initializer:
    return lambda key, shape, dtype: (std * jax.random.normal(key, shape, jnp.float32)).astype(dtype)


def _zeros(key, shape, dtype):
    return jnp.zeros(shape, dtype)


def _qkvo_init(bound: float, model_dim: int) -> Initializer:
    """Q, K, V rows U(-bound, bound); O rows zero, so every attention block outputs 0 at init."""

    def init(key, shape, dtype):
        qkv = jax.random.uniform(key, shape[:-2] + (3 * model_dim, shape[-1]), jnp.float32, -bound, bound)
        o = jnp.zeros(shape[:-2] + (model_dim, shape[-1]), jnp.float32)
        return jnp.concatenate([qkv, o], axis=-2).astype(dtype)

    return init


class ScalarLayout:
    """Positions in ``scalars`` (recipe §1.3): resid_lambda[0:L], (lambda_in, lambda_out) pairs [L:3L], then smear,
    backout and skip lambdas; the rest is padding that is never read."""

    def __init__(self, num_layers: int):
        self.num_layers = num_layers
        self.smear = 3 * num_layers
        self.backout = 3 * num_layers + 1
        self.skip = 3 * num_layers + 2

    def resid(self, layer: int) -> int:
        return layer

    def sa_in(self, layer: int) -> int:
        return self.num_layers + 2 * layer

    def sa_out(self, layer: int) -> int:
        return self.num_layers + 2 * layer + 1


def initial_scalars(cfg: ModelConfig) -> np.ndarray:
    lay = ScalarLayout(cfg.num_layers)
    values = np.full(cfg.num_scalars, cfg.init_scalar_pad, np.float32)
    for i in range(cfg.num_layers):
        values[lay.resid(i)] = cfg.init_resid_lambda
        values[lay.sa_in(i)], values[lay.sa_out(i)] = cfg.init_sa_lambda
    values[lay.smear] = cfg.init_smear_lambda
    values[lay.backout] = cfg.init_backout_lambda
    values[lay.skip] = cfg.init_skip_lambda
    return values


def _scalars_init(cfg: ModelConfig) -> Initializer:
    values = initial_scalars(cfg)
    return lambda key, shape, dtype: jnp.asarray(values, dtype)


# --- the table --------------------------------------------------------------------------------------------------------

BF16, F32 = jnp.bfloat16, jnp.float32


def _banks(m: ModelConfig) -> int:
    return len(m.attention_layers)


TABLE: Mapping[str, Param] = MappingProxyType({p.name: p for p in (
    Param("qkvo", lambda m: (_banks(m), 4 * m.model_dim, m.model_dim), BF16,
          lambda m: _qkvo_init(m.init_attn_bound, m.model_dim), NORMUON, (0, 1, 2), matmul=True, square_blocks=True),
    Param("fc", lambda m: (m.num_layers, m.mlp_hidden, m.model_dim), BF16, lambda m: _uniform(m.init_fc_bound),
          NORMUON, (0, 1, 2), matmul=True, split_product=True),
    # proj is stored (F, D) like fc and applied without a transpose (recipe §1.8)
    Param("proj", lambda m: (m.num_layers, m.mlp_hidden, m.model_dim), BF16, lambda m: _zeros,
          NORMUON, (0, 1, 2), matmul=True, split_product=True),
    Param("lm_head", lambda m: (m.vocab_size, m.model_dim), BF16, lambda m: _normal(m.init_lm_head_std),
          ADAM, (0, 1), matmul=True),
    # embed is overwritten by a copy of lm_head at the untie step and unused before (recipe §1.3, §1.11); initialised
    # like lm_head so an untied model from scratch is sensible too. Not in the FLOP count: a lookup, not a matmul.
    Param("embed", lambda m: (m.vocab_size, m.model_dim), BF16, lambda m: _normal(m.init_lm_head_std), ADAM, (0, 1)),
    Param("ve", lambda m: (m.num_value_embeds, m.vocab_size, m.model_dim), BF16, lambda m: _zeros, ADAM, (0, 1, 2)),
    Param("attn_gate_bank", lambda m: (_banks(m), m.num_heads, m.gate_dim), BF16, lambda m: _zeros, ADAM, (0, 1, 2)),
    Param("ve_gate_bank", lambda m: (len(m.value_embed_layers), m.num_heads, m.gate_dim), BF16, lambda m: _zeros,
          ADAM, (0, 1, 2)),
    Param("smear_gate", lambda m: (1, m.gate_dim), BF16, lambda m: _zeros, ADAM, (0, 1)),
    Param("skip_gate", lambda m: (1, m.gate_dim), BF16, lambda m: _zeros, ADAM, (0, 1)),
    Param("x0_lambdas", lambda m: (m.num_layers,), F32, lambda m: _zeros, ADAM, (0,)),
    Param("scalars", lambda m: (m.num_scalars,), F32, _scalars_init, ADAM, (0,)),
)})


def names(optimizer: str | None = None) -> tuple[str, ...]:
    """The parameter names in table order; only those of one optimizer (NORMUON or ADAM) if given."""
    if optimizer not in (None, NORMUON, ADAM):
        raise ValueError(f"params.names: optimizer must be {NORMUON!r} or {ADAM!r}, got {optimizer!r}")
    return tuple(name for name, p in TABLE.items() if optimizer in (None, p.optimizer))


MUON_PARAMS = names(NORMUON)
MATMUL_PARAMS = tuple(name for name, p in TABLE.items() if p.matmul)
SQUARE_BLOCK_BANKS = tuple(name for name, p in TABLE.items() if p.square_blocks)
SPLIT_PRODUCT_BANKS = tuple(name for name, p in TABLE.items() if p.split_product)


def shapes(cfg: ModelConfig) -> dict[str, jax.ShapeDtypeStruct]:
    """name -> the parameter's shape and dtype under this config, in table order."""
    return {name: jax.ShapeDtypeStruct(p.shape(cfg), p.dtype) for name, p in TABLE.items()}


def muon_lr_mul(name: str, optim: OptimConfig) -> float:
    """A NorMuon bank's lr_mul, from optim.muon_lr_muls (recipe §1.3); KeyError for any other name."""
    lr_muls = dict(optim.muon_lr_muls)
    if name not in MUON_PARAMS or name not in lr_muls:
        raise KeyError(f"no lr_mul for bank {name!r}: NorMuon takes the banks {MUON_PARAMS}, and "
                       f"OptimConfig.muon_lr_muls covers {sorted(lr_muls)} (see optim.split_params)")
    return lr_muls[name]


def adam_group(name: str, optim: OptimConfig) -> AdamGroup:
    """An Adam parameter's lr_mul, wd_mul and betas, from optim.adam_groups (recipe §1.3); KeyError for any other."""
    groups = dict(optim.adam_groups)
    if name not in names(ADAM) or name not in groups:
        raise KeyError(f"no Adam group for parameter {name!r}: Adam takes {names(ADAM)}, and OptimConfig.adam_groups "
                       f"covers {sorted(groups)} (NorMuon banks go to normuon, see optim.split_params)")
    return groups[name]


def group(name: str, optim: OptimConfig) -> Group:
    """Any parameter's optimizer settings. NorMuon's weight decay has no per-bank multiplier: wd_mul 1 (recipe §3.2
    item 6)."""
    if name not in TABLE:
        raise KeyError(f"no parameter {name!r} in the parameter table; the parameters are {', '.join(TABLE)}")
    if TABLE[name].optimizer == NORMUON:
        return Group(NORMUON, muon_lr_mul(name, optim), 1.0, None)
    g = adam_group(name, optim)
    return Group(ADAM, g.lr_mul, g.wd_mul, g.betas)


__all__ = [
    "ADAM",
    "MATMUL_PARAMS",
    "MUON_PARAMS",
    "NORMUON",
    "SPLIT_PRODUCT_BANKS",
    "SQUARE_BLOCK_BANKS",
    "TABLE",
    "Group",
    "Param",
    "ScalarLayout",
    "adam_group",
    "group",
    "initial_scalars",
    "muon_lr_mul",
    "names",
    "shapes",
]
