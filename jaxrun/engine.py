"""The training engine: one setup and one step that the loop (jaxrun.train), the step benchmark (jaxrun.stepbench) and the
tests share, so that what is benchmarked and tested is exactly what trains.

    session = engine.setup(cfg)                      # mesh, shards, loader, validation batches, state layout, backends
    state = engine.initial_state(session)            # or a checkpoint restored into engine.abstract_state(session)
    fns = engine.compile_step_functions(session)     # every variant the steps need, before the clock (recipe §6)
    engine.warm_up(session, fns, state)
    batch = engine.next_batch(session, s)            # the host batch of step s (raises DataError, loader unmoved)
    state, loss = engine.train_step(session, fns, state, s, batch)
    val = engine.evaluate(session, fns, state, s)

Static shapes change only at phase boundaries (batch size, windows, the embedding tie, Adam or not), so there is one
compiled gradient function per (batch size, windows, tied) and one optimizer function per (Adam or not); learning rate,
momentum, MTP weights and the YaRN tables are traced values (``dyn_inputs``): no recompilation.

The step is split in two jitted functions: ``grad`` (shard_map over the ``data`` axis: each device scans over its 8/D
micro-batches, then the summed gradients are reduce-scattered into the ZeRO layout, recipe §3.5–3.6) and ``update``
(NorMuon on every step; on odd steps also Adam with the two-step gradient sum, recipe §3.4); the untie step adds a
third (recipe §1.11).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import time
from concurrent.futures import ThreadPoolExecutor

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import PartitionSpec as P

from jaxrun import data as data_lib
from jaxrun import evaluate as evaluate_lib
from jaxrun import model, ops, optim, schedule, sharding
from jaxrun.lowering_cache import HIT, OFF, STORED, LoweringCache
from jaxrun.checkpoint import abstract_like
from jaxrun.config import Config, ConfigError

BATCH_KEYS = ("inputs", "targets", "seg_ids")


# ----------------------------------------------------------------------------------------------------------------------
# Out of memory: one message, wherever it happens
# ----------------------------------------------------------------------------------------------------------------------


class OutOfMemory(RuntimeError):
    pass


_OOM_MARKERS = ("RESOURCE_EXHAUSTED", "out of memory", "Out of memory", "OOM")


def is_oom(err: BaseException) -> bool:
    return any(m in str(err) for m in _OOM_MARKERS)


_ALLOCATION = re.compile(r"trying to allocate (\d+) bytes")


def one_piece_hint(err_text: str) -> str:
    """What to check when XLA could not get one large allocation (a compiled step's scratch is one piece): "" when the
    error names no size of at least 1 GiB."""
    sizes = [int(n) for n in _ALLOCATION.findall(err_text)]
    if not sizes or max(sizes) < 1 << 30:
        return ""
    return (f" XLA asked for {max(sizes) / 2**30:.1f} GiB in one piece. Even where the total would fit, another "
            f"process on the device, or XLA_PYTHON_CLIENT_PREALLOCATE=false (the allocator then grows in separate "
            f"pieces), can leave no piece that large.")


def oom_message(what: str, cfg: Config, num_devices: int, err_text: str = "") -> str:
    """The out-of-memory error for the user: what the step holds per device, and what to change; ``err_text`` is XLA's
    error, whose allocation size (if any) adds one_piece_hint."""
    per_rank = max(cfg.schedule.seqs_per_rank) * cfg.schedule.seq_len
    local = cfg.data.num_ranks // num_devices
    largest = max(group * tokens for group, tokens in phase_forwards(cfg, num_devices))  # not always the last phase's
    merged = (f" Forwards merge ranks' rows (model.train_forward_tokens={cfg.model.train_forward_tokens}); "
              f"--set model.forward_tokens_by_memory=() --set model.train_forward_tokens=0 runs one rank per forward."
              if largest > per_rank else "")
    return (
        f"out of device memory while {what}. Each of the {num_devices} device(s) processes up to {per_rank * local:,} "
        f"tokens per step, in forwards of up to {largest:,}.{merged} "
        f"Use more devices (the mesh spans all visible GPUs), or fewer tokens per device, e.g. "
        f"--set schedule.seqs_per_rank=(4,8,12), or a smaller evaluation chunk (--set model.eval_token_chunk=8192)."
        f"{one_piece_hint(err_text)}"
    )


@contextlib.contextmanager
def explained_oom(what: str, cfg: Config, num_devices: int):
    """Re-raise an XLA out-of-memory error as OutOfMemory with what to change; anything else passes through."""
    try:
        yield
    except OutOfMemory:
        raise
    except Exception as err:  # noqa: BLE001 - only OOMs are rewritten
        if is_oom(err):
            raise OutOfMemory(oom_message(what, cfg, num_devices, str(err))) from err
        raise


# ----------------------------------------------------------------------------------------------------------------------
# State and the step functions (pure builders of jitted functions)
# ----------------------------------------------------------------------------------------------------------------------


def init_state(cfg: Config, key) -> dict:
    """params (bf16/fp32 as the model stores them), fp32 Muon masters, optimizer states, Adam's 2-step accumulator."""
    params = model.init_params(cfg.model, key)
    muon_params, adam_params = optim.split_params(params)
    master = optim.init_masters(muon_params)
    return {
        "params": params,
        "master": master,
        "muon": optim.normuon(cfg.optim, cfg.schedule).init(master),
        "adam": optim.cautious_adam(cfg.optim, cfg.schedule).init(adam_params),
        "adam_acc": jax.tree.map(lambda p: jnp.zeros(p.shape, jnp.float32), adam_params),
    }


def state_shardings(state_shapes, mesh):
    """params replicated; everything optimizer-side ZeRO-sharded (jaxrun.sharding)."""
    out = {k: sharding.zero_shardings(v, mesh) for k, v in state_shapes.items() if k != "params"}
    out["params"] = jax.tree.map(lambda _: sharding.replicated(mesh), state_shapes["params"])
    return out


def make_grad_fn(cfg: Config, mesh, windows: tuple[int, int], tied: bool, kernels: ops.Kernels | None = None):
    """build(params_shapes) -> fn(params, batch, dyn) -> (sum of the training loss over all ranks, gradients in the
    ZeRO layout). ``kernels``: the op functions the model runs (default: ops.kernels of cfg's backends, built here,
    once, not while tracing).

    Gradients are the rank average of the per-rank gradients of the SUMMED loss (recipe §2.1, §3.6): each device sums its
    micro-batches' gradients (fp32; the reference accumulates in bf16, recipe §14.4), then a reduce-scatter sums over
    devices and the result is divided by the number of virtual ranks. A micro-batch is ranks_per_forward ranks' rows,
    one forward for all of them (model.train_loss of an (R, T) batch).
    """
    num_devices = mesh.devices.size
    num_ranks = cfg.data.num_ranks
    kernels = ops.kernels(cfg.model.backends) if kernels is None else kernels

    table = model.embedding_table(tied)

    def local(params, batch, dyn):
        local_ranks, tokens_per_rank = batch["inputs"].shape
        group = ranks_per_forward(cfg, tokens_per_rank, num_devices)
        if group > 1:  # (groups, ranks per group, tokens); one rank per forward keeps the rank rows as they are
            batch = jax.tree.map(lambda x: x.reshape(local_ranks // group, group, tokens_per_rank), batch)

        def micro(acc, b):
            # Differentiate with respect to the gathered embedding rows, not the tables, and add the rows' gradient
            # into the fp32 sums directly (ops.accumulate_gathered_grad: the tables' dense gradient's numbers, the
            # tied head's summed in bf16 as the reference's autograd sums it): no (V, D) gradient of the embedding
            # and the five value-embedding tables per micro-batch.
            tokens = b["inputs"].reshape(-1)
            dense = {k: v for k, v in params.items() if k not in model.EMBEDDING_TABLES}

            def loss_fn(dense, rows):
                return model.train_loss({**params, **dense}, b, dyn, cfg=cfg.model, windows=windows, tied=tied,
                                        kernels=kernels, rows=rows)

            rows = model.embedding_rows(params, tokens, tied)
            loss, (g, g_rows) = jax.value_and_grad(loss_fn, argnums=(0, 1))(dense, rows)
            out = {k: acc[k] + g[k].astype(jnp.float32) for k in g if not (tied and k == table)}
            out[table] = ops.accumulate_gathered_grad(acc[table], tokens, g_rows["embed"],
                                                      g[table] if tied else None)
            out["ve"] = ops.accumulate_gathered_grad(acc["ve"], tokens, g_rows["ve"])
            if tied:
                out["embed"] = acc["embed"]  # not read while tied: its gradient is zero (recipe §1.11)
            return out, loss

        acc0 = jax.tree.map(lambda p: jnp.zeros(p.shape, jnp.float32), params)
        acc, losses = jax.lax.scan(micro, acc0, batch)
        grads = jax.tree.map(lambda g: g / num_ranks, sharding.reduce_scatter_sum(acc, num_devices))
        return sharding.sum_over_devices(jnp.sum(losses), num_devices), grads

    def build(params_shapes):
        grad_specs = sharding.zero_specs(params_shapes, num_devices)
        fn = jax.shard_map(
            local, mesh=mesh, in_specs=(P(), P(sharding.AXIS), P()), out_specs=(P(), grad_specs), check_vma=False
        )
        return jax.jit(fn)

    return build


def ranks_per_forward(cfg: Config, tokens_per_rank: int, num_devices: int) -> int:
    """How many of a device's virtual ranks one training forward takes: the most that divide the device's ranks with
    at most cfg.model.train_forward_tokens tokens together; 1 when that is 0 or below one rank's tokens."""
    local = cfg.data.num_ranks // num_devices
    budget = cfg.model.train_forward_tokens
    return max(r for r in range(1, local + 1) if local % r == 0 and (r == 1 or r * tokens_per_rank <= budget))


def phase_forwards(cfg: Config, num_devices: int) -> list[tuple[int, int]]:
    """Per phase: (ranks per forward, tokens per rank)."""
    per_rank = [seqs * cfg.schedule.seq_len for seqs in cfg.schedule.seqs_per_rank]
    return [(ranks_per_forward(cfg, tokens, num_devices), tokens) for tokens in per_rank]


def forward_plan(cfg: Config, num_devices: int) -> list[str]:
    """Per phase, how a device runs its ranks, e.g. "phase 1: 8 ranks as 1 forward of 131,072 tokens"."""
    local = cfg.data.num_ranks // num_devices
    return [f"phase {phase + 1}: {local} rank(s) as {local // group} forward(s) of {group * tokens:,} tokens"
            for phase, (group, tokens) in enumerate(phase_forwards(cfg, num_devices))]


DONATE_STATE = (0,)  # the update and untie functions donate the state they replace (their first argument)


def make_update_fn(cfg: Config, mesh, shardings, adam: bool):
    """fn(state, grads, step) -> state: NorMuon every step; Adam on odd steps with the 2-step sum (recipe §3.4)."""
    muon_tx = optim.normuon(cfg.optim, cfg.schedule, orth_layout=sharding.matrix_split(mesh))
    adam_tx = optim.cautious_adam(cfg.optim, cfg.schedule)

    def update(state, grads, step):
        muon_grads, adam_grads = optim.split_params(grads)
        updates, muon_state = muon_tx.update(muon_grads, state["muon"], state["master"], step=step)
        master = optax.apply_updates(state["master"], updates)
        params = dict(state["params"])
        params.update({k: optim.truncate_to_bf16(v) for k, v in master.items()})
        acc = optim.accumulate(state["adam_acc"], adam_grads)
        adam_state = state["adam"]
        if adam:
            adam_params = {k: params[k] for k in acc}
            updates, adam_state = adam_tx.update(acc, adam_state, adam_params, step=step)
            params.update(optax.apply_updates(adam_params, updates))
            acc = jax.tree.map(jnp.zeros_like, acc)
        return {"params": params, "master": master, "muon": muon_state, "adam": adam_state, "adam_acc": acc}

    return jax.jit(update, in_shardings=(shardings, None, None), out_shardings=shardings, donate_argnums=DONATE_STATE)


def make_untie_fn(shardings):
    """After the Adam update of the untie step: embed := lm_head, weights and Adam state (recipe §1.11)."""

    def untie(state):
        params, adam_state = optim.untie_embedding(state["params"], state["adam"])
        return {**state, "params": params, "adam": adam_state}

    return jax.jit(untie, in_shardings=(shardings,), out_shardings=shardings, donate_argnums=DONATE_STATE)


def dyn_inputs(cfg: Config, s: int) -> dict:
    """The traced schedule values of step s (recipe §1.7, §4)."""
    freqs, attn_scale = schedule.yarn_state(s, cfg.schedule, cfg.model.head_dim, cfg.model.rope_min_freq)
    return {
        "rope_freqs": np.asarray(freqs, np.float32),
        "attn_scale": np.asarray(attn_scale, np.float32),
        "mtp_weights": np.asarray(schedule.mtp_weights(s, cfg.schedule), np.float32),
        "step": np.asarray(s, np.int32),
    }


def grad_key(shape: schedule.StepShape) -> tuple:
    """The static shape of a gradient variant: (tokens per rank, short window, long window, tied)."""
    return (shape.tokens_per_rank, shape.window_short, shape.window_long, shape.tied)


def eval_steps(cfg: Config) -> list[int]:
    """The steps validated at: every run.val_every, and the last."""
    total = cfg.schedule.total_steps
    return sorted(set(range(0, total, cfg.run.val_every)) | {total})


def eval_variant(cfg: Config, s: int) -> tuple[tuple[int, int], bool]:
    """((short, long) windows, tied) of the validation at step s."""
    total = cfg.schedule.total_steps
    short, long = schedule.eval_windows(min(s, total - 1), cfg.schedule, final=s == total)
    # "Validation at step s sees the weights after s optimizer steps" (recipe §4)
    return (short, long), schedule.tied_at(s, cfg.schedule)


def forward_tokens_for_memory(cfg: Config, pool_bytes: int | None) -> tuple[int, str]:
    """(tokens per forward, why): the largest entry of cfg.model.forward_tokens_by_memory whose GiB the smallest
    device pool ``pool_bytes`` holds, else cfg.model.train_forward_tokens. ``pool_bytes`` is None where the allocator
    has no preallocated pool (device_memory_pool): a larger forward's scratch is one piece of tens of GiB, which a
    growing allocator was measured not to find after the smaller phases ran (docs/results/2026-12-02-h200-compile)."""
    base, table = cfg.model.train_forward_tokens, cfg.model.forward_tokens_by_memory
    if not table:
        return base, "model.train_forward_tokens"
    if pool_bytes is None:
        return base, ("no preallocated device memory pool (XLA_PYTHON_CLIENT_PREALLOCATE=false, another allocator, "
                      "or a backend without memory figures such as the CPU), so not model.forward_tokens_by_memory")
    gib = pool_bytes / 2**30
    fits = [(tokens, need) for need, tokens in table if gib >= need and tokens > base]
    if not fits:
        return base, f"a {gib:.1f} GiB memory pool, below model.forward_tokens_by_memory's {min(n for n, _ in table)} GiB"
    tokens, need = max(fits)
    return tokens, f"a {gib:.1f} GiB memory pool, at least model.forward_tokens_by_memory's {need} GiB"


# The environment variables that change what XLA compiles, or the memory it may take: run logs and benchmarks record
# them, since two runs of the same code under different XLA_FLAGS are not the same measurement (the sixteenth sitting's
# --xla_gpu_enable_triton_gemm=false took the cold compile from 58 s to 34 s and the step 0.3-0.5% slower).
XLA_ENVIRONMENT = ("XLA_FLAGS", "XLA_PYTHON_CLIENT_PREALLOCATE", "XLA_PYTHON_CLIENT_MEM_FRACTION",
                   "XLA_PYTHON_CLIENT_ALLOCATOR")


def xla_environment() -> dict[str, str]:
    """XLA_ENVIRONMENT's variables as this process sees them, "" for each one unset."""
    return {name: os.environ.get(name, "") for name in XLA_ENVIRONMENT}


def xla_environment_line() -> str:
    """The run log's line of xla_environment(): the variables that are set, or that none is."""
    env = xla_environment()
    set_ = [f"{name}={value}" for name, value in env.items() if value]
    return "xla environment: " + (" | ".join(set_) if set_ else "defaults (none of " + ", ".join(env) + " set)")


def device_memory_pool(devices=None) -> int | None:
    """The smallest preallocated allocator pool over ``devices`` (default: this process's) and every other process, in
    bytes; None where any of them has none: preallocation off (XLA_PYTHON_CLIENT_PREALLOCATE=false), a non-BFC
    allocator (XLA_PYTHON_CLIENT_ALLOCATOR=platform or cuda_async), or no memory figures (CPU)."""
    devices = jax.local_devices() if devices is None else devices
    off = os.environ.get("XLA_PYTHON_CLIENT_PREALLOCATE", "true").lower() in ("false", "0")
    off = off or os.environ.get("XLA_PYTHON_CLIENT_ALLOCATOR", "default").lower() not in ("default", "bfc")
    limits = [(d.memory_stats() or {}).get("bytes_limit") for d in devices]
    pool = 0 if off or not limits or None in limits else min(limits)
    if jax.process_count() > 1:  # every process must compile the same programs
        from jax.experimental import multihost_utils
        pool = int(np.min(multihost_utils.process_allgather(np.asarray([pool], np.int64))))
    return pool or None


def resolved_config_and_note(cfg: Config, memory_pool=device_memory_pool) -> tuple[Config, str]:
    """(cfg with "auto" backends replaced by the ones that will run here and the tokens per forward that this memory
    allows, the log line saying how those tokens were chosen), decided once at the start: config.json and the log
    record what ran, and a resumed run keeps the kernels and forwards it started with. ``memory_pool()``
    (device_memory_pool) is asked only when cfg has a forward_tokens_by_memory table."""
    backends = tuple(ops.resolve_backends(cfg.model.backends).items())
    pool = memory_pool() if cfg.model.forward_tokens_by_memory else None
    tokens, why = forward_tokens_for_memory(cfg, pool)
    limit = f"at most {tokens:,}" if tokens else "one rank's"  # 0: one rank per forward
    model_cfg = dataclasses.replace(cfg.model, backends=backends, train_forward_tokens=tokens, forward_tokens_by_memory=())
    return dataclasses.replace(cfg, model=model_cfg), f"tokens per forward: {limit}, from {why}"


def resolved_config(cfg: Config, memory_pool=device_memory_pool) -> Config:
    """resolved_config_and_note's config."""
    return resolved_config_and_note(cfg, memory_pool)[0]


def enable_compile_cache(cfg: Config) -> str | None:
    """Point JAX's persistent compilation cache at cfg.run.compile_cache_dir (none if it is ""); returns the path."""
    if not cfg.run.compile_cache_dir:
        return None
    path = os.path.expanduser(cfg.run.compile_cache_dir)
    os.makedirs(path, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", path)
    return path


# ----------------------------------------------------------------------------------------------------------------------
# The session: everything a run sets up once
# ----------------------------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Session:
    """What a run sets up once, before compiling: the config with its backends resolved, the device mesh, this process's
    virtual ranks, the training loader, the validation batches on the devices, and the state's layout."""

    cfg: Config  # backends resolved (resolved_config)
    kernels: ops.Kernels  # the op functions of those backends, imported once
    mesh: jax.sharding.Mesh
    ranks: list  # the virtual ranks whose rows this process feeds
    loader: data_lib.TrainLoader
    val_batches: list  # device batches of (num_ranks, val tokens per rank), one per validation step
    shapes: dict  # the state's ShapeDtypeStructs (init_state under eval_shape)
    shardings: dict  # the state's shardings (state_shardings)
    lowering_cache: LoweringCache = LoweringCache(None)  # cfg.run.lowering_cache_dir's, keyed for this run
    forward_tokens_note: str = ""  # how cfg.model.train_forward_tokens was decided (forward_tokens_for_memory)

    @property
    def num_devices(self) -> int:
        return self.mesh.devices.size

    def close(self) -> None:
        self.loader.close()


def setup(cfg: Config, devices: int | None = None, announce=print) -> Session:
    """Resolve the backends and import their op functions, build the mesh over the first ``devices`` devices (default: all), make sure the shards exist
    (tokenizing or downloading them as the config says), open the training loader and put the validation batches on
    the devices. Multi-host JAX must already be started (sharding.init_distributed). Raises ConfigError when the
    device count does not divide the virtual ranks, data.DataError when the shards cannot be had."""
    cfg, forward_tokens_note = resolved_config_and_note(cfg)
    try:
        mesh = sharding.make_mesh(cfg.data.num_ranks, jax.devices()[:devices] if devices else None)
    except ValueError as err:  # a device count that does not divide the virtual ranks: the user's choice to change
        raise ConfigError(str(err)) from err
    data_lib.ensure_shards(cfg.data, announce=announce)
    ranks = sharding.local_ranks(mesh, cfg.data.num_ranks)
    val_batches = [sharding.put_batch(mesh, {k: b[k] for k in BATCH_KEYS}, cfg.data.num_ranks)
                   for b in data_lib.val_batches(cfg.data, ranks)]
    shapes = jax.eval_shape(lambda k: init_state(cfg, k), jax.random.PRNGKey(cfg.run.seed))
    loader = data_lib.TrainLoader(cfg.data, ranks)
    return Session(cfg=cfg, kernels=ops.kernels(cfg.model.backends), mesh=mesh, ranks=ranks, loader=loader,
                   val_batches=val_batches, shapes=shapes, shardings=state_shardings(shapes, mesh),
                   lowering_cache=LoweringCache.for_run(cfg, mesh),
                   forward_tokens_note=forward_tokens_note)


def initial_state(session: Session) -> dict:
    """The run's initial state (seed cfg.run.seed), laid out on the mesh."""
    cfg = session.cfg
    return jax.jit(lambda k: init_state(cfg, k), out_shardings=session.shardings)(jax.random.PRNGKey(cfg.run.seed))


def abstract_state(session: Session) -> dict:
    """ShapeDtypeStructs with shardings: what a checkpoint is restored into."""
    return abstract_like(session.shapes, session.shardings)


@dataclasses.dataclass
class StepFunctions:
    """Every compiled variant of a run: gradients by grad_key, updates by Adam-or-not, evaluation by (windows, tied)."""

    grad: dict
    update: dict
    eval: dict
    untie: object  # None when the steps compiled for do not include the untie step
    seconds: float  # lowering and compiling, all variants
    lower_seconds: float = 0.0  # of that, tracing and lowering (sequential, Python); the persistent cache skips the rest
    lowering: dict = dataclasses.field(default_factory=dict)  # variant -> what the lowering cache did (lowering_cache)
    # variant -> (seconds from the start when its lowering ended, when its compile ended): where the start waits
    timeline: dict = dataclasses.field(default_factory=dict)

    def counts(self) -> dict:
        return {"grad": len(self.grad), "update": len(self.update), "eval": len(self.eval), "untie": int(self.untie is not None)}

    def slowest(self) -> str:
        """The variant whose compile ended last, e.g. "grad (16384, 128, 384, True): lowered by 4.1 s, compiled by
        47.9 s": what a cold start waits for."""
        if not self.timeline:
            return "no variant"
        key, (lowered, compiled) = max(self.timeline.items(), key=lambda item: item[1][1])
        return f"{key[0]} {key[1]}: lowered by {lowered:.1f} s, compiled by {compiled:.1f} s"

    def lowering_summary(self) -> str:
        """E.g. "9 lowerings read from the lowering cache, 2 stored"; then any variant it could not serve, and why."""
        outcomes = list(self.lowering.values())
        if not outcomes or set(outcomes) == {OFF}:
            return "lowering cache off"
        read, stored = outcomes.count(HIT), outcomes.count(STORED)
        others = [f"{key[0]} {key[1]}: {how}" for key, how in self.lowering.items() if how not in (HIT, STORED)]
        return "; ".join([f"{read} of {len(outcomes)} lowerings read from the lowering cache, {stored} stored", *others])


_COMPILE_ORDER = {"grad": 0, "update": 1, "eval": 2, "untie": 3}  # compile_step_functions lowers in this order


def compile_step_functions(session: Session, steps=None, evals=None,
                           cache: LoweringCache | None = None, lowering_threads: int = 1) -> StepFunctions:
    """Lower every step variant that the training steps ``steps`` (default: the whole schedule) and the validations at
    ``evals`` (default: the schedule's) use, then compile them concurrently (XLA compiles release the GIL; a record
    config has ~12 variants, so this divides the untimed start-up by up to the number of cores). A run that stops early
    (--stop-at) compiles only what its steps need; its resume compiles the rest. Lowering goes through ``cache``
    (default: the session's lowering cache), which a second start reads instead of tracing. ``lowering_threads`` > 1
    lowers that many variants at once: tracing holds the GIL, but the triton kernels' compiles inside a lowering
    (MLIR passes, ptxas) release it, so they overlap."""
    cfg, mesh, shapes, shardings = session.cfg, session.mesh, session.shapes, session.shardings
    cache = session.lowering_cache if cache is None else cache
    t0 = time.perf_counter()
    steps = range(cfg.schedule.total_steps) if steps is None else steps
    to_lower = {}  # variant -> (jitted fn, abstract args, donated args); a jitted fn is only traced when lowered
    for shape in dict.fromkeys(schedule.step_shape(s, cfg.schedule) for s in steps):
        if ("grad", grad_key(shape)) not in to_lower:
            to_lower[("grad", grad_key(shape))] = grad_fn_and_args(cfg, mesh, shapes, shape, session.kernels)
        if ("update", shape.adam) not in to_lower:
            to_lower[("update", shape.adam)] = update_fn_and_args(cfg, mesh, shapes, shardings, shape.adam)
    for s in eval_steps(cfg) if evals is None else evals:
        if ("eval", eval_variant(cfg, s)) not in to_lower:
            to_lower[("eval", eval_variant(cfg, s))] = eval_fn_and_args(session, *eval_variant(cfg, s))
    if schedule.untie_step(cfg.schedule) in steps:
        to_lower[("untie", None)] = (make_untie_fn(shardings), (abstract_like(shapes, shardings),), DONATE_STATE)
    # Each variant's XLA compile starts as soon as it is lowered, so the compiles (threads, no GIL) run under the
    # lowering of the next ones (Python, sequential) instead of after all of it. The gradient variants go first: they
    # are the largest programs, so theirs are the compiles that the start waits for.
    order = sorted(to_lower, key=lambda key: _COMPILE_ORDER[key[0]])
    futures, outcomes, lowered_at = {}, {}, {}

    def compile_and_time(low):
        return low.compile(), time.perf_counter() - t0

    def lower_then_compile(key, pool):
        fn, args, donated = to_lower[key]
        low, outcomes[key] = cache.lower(repr(key), fn, args, donated)
        lowered_at[key] = time.perf_counter() - t0
        futures[key] = pool.submit(compile_and_time, low)

    with explained_oom("compiling", cfg, mesh.devices.size), ThreadPoolExecutor(max_workers=max(1, os.cpu_count() or 1)) as pool:
        if lowering_threads <= 1:
            for key in order:
                lower_then_compile(key, pool)
        else:
            with ThreadPoolExecutor(max_workers=lowering_threads) as lowerers:
                for f in [lowerers.submit(lower_then_compile, key, pool) for key in order]:
                    f.result()  # a lowering's error is raised here
        lower_seconds = time.perf_counter() - t0
        done = {key: futures[key].result() for key in to_lower}
    compiled = {key: fn for key, (fn, _) in done.items()}
    pick = lambda kind: {k[1]: v for k, v in compiled.items() if k[0] == kind}  # noqa: E731
    return StepFunctions(grad=pick("grad"), update=pick("update"), eval=pick("eval"),
                         untie=compiled.get(("untie", None)), seconds=time.perf_counter() - t0,
                         lower_seconds=lower_seconds, lowering=outcomes,
                         timeline={key: (lowered_at[key], done[key][1]) for key in order})


def _replicated_abstract(tree, mesh):
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding.replicated(mesh)), tree)


def batch_abstract(cfg: Config, mesh, tokens_per_rank: int) -> dict:
    """The global batch of a step as the gradient function takes it: (num_ranks, tokens per rank) int32 per key."""
    return {k: jax.ShapeDtypeStruct((cfg.data.num_ranks, tokens_per_rank), jnp.int32, sharding=sharding.batch_sharding(mesh))
            for k in BATCH_KEYS}


def grad_fn_and_args(cfg: Config, mesh, shapes, shape: schedule.StepShape, kernels: ops.Kernels | None = None):
    """(jitted gradient function of one step variant, its abstract arguments for the state layout ``shapes``
    (init_state's) on ``mesh``, the arguments it donates)."""
    fn = make_grad_fn(cfg, mesh, (shape.window_short, shape.window_long), shape.tied, kernels)(shapes["params"])
    args = (_replicated_abstract(shapes["params"], mesh), batch_abstract(cfg, mesh, shape.tokens_per_rank),
            jax.tree.map(jnp.asarray, dyn_inputs(cfg, 0)))
    return fn, args, ()


def lower_grad_fn(cfg: Config, mesh, shapes, shape: schedule.StepShape, kernels: ops.Kernels | None = None):
    """The gradient function of one step variant, lowered for the state layout ``shapes`` (init_state's) on ``mesh``."""
    fn, args, _ = grad_fn_and_args(cfg, mesh, shapes, shape, kernels)
    return fn.lower(*args)


def update_fn_and_args(cfg: Config, mesh, shapes, shardings, adam: bool):
    """(jitted optimizer function (Adam or not), its abstract arguments: the state and fp32 gradients in the ZeRO
    layout, the arguments it donates)."""
    grads = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, jnp.float32, sharding=s), shapes["params"],
                         sharding.zero_shardings(shapes["params"], mesh))
    return make_update_fn(cfg, mesh, shardings, adam), (abstract_like(shapes, shardings), grads, jnp.int32(0)), DONATE_STATE


def lower_update_fn(cfg: Config, mesh, shapes, shardings, adam: bool):
    """The optimizer function (Adam or not), lowered for fp32 gradients in the ZeRO layout."""
    fn, args, _ = update_fn_and_args(cfg, mesh, shapes, shardings, adam)
    return fn.lower(*args)


def eval_fn_and_args(session: Session, windows: tuple[int, int], tied: bool):
    """(jitted evaluation function of (windows, tied), its arguments: replicated params, a validation batch, the
    step-0 schedule values; nothing donated)."""
    cfg, mesh = session.cfg, session.mesh
    fn = evaluate_lib.make_eval_fn(cfg, mesh, windows, tied, session.kernels)
    dyn0 = jax.tree.map(jnp.asarray, dyn_inputs(cfg, 0))
    return fn, (_replicated_abstract(session.shapes["params"], mesh), session.val_batches[0], dyn0), ()


# ----------------------------------------------------------------------------------------------------------------------
# Running them
# ----------------------------------------------------------------------------------------------------------------------


def warm_up(session: Session, fns: StepFunctions, state) -> float:
    """Run every training-step variant once on a zero batch and a copy of the state, and discard the results; returns
    the seconds taken. recipe §6: the reference runs real steps before it starts the clock. A compiled program's first
    run also loads its kernels and grows the device allocator: on an H100 the first timed step took 2.5 s with the
    xla ops and 7.5 s with the triton ones, against 0.25 s for the next."""
    cfg, mesh = session.cfg, session.mesh
    t0 = time.perf_counter()
    dyn = jax.tree.map(jnp.asarray, dyn_inputs(cfg, 0))
    grads = None
    with explained_oom("training", cfg, session.num_devices):  # a run-time OOM shows first in each variant's first run
        for key in fns.grad:
            zeros = np.zeros((len(session.ranks), key[0]), np.int32)
            batch = sharding.put_batch(mesh, dict.fromkeys(BATCH_KEYS, zeros), cfg.data.num_ranks)
            grads = None  # one set of gradients alive at a time
            grads = fns.grad[key](state["params"], batch, dyn)[1]
        scratch = jax.tree.map(lambda x: x.copy(), state)  # the update and untie functions donate the state they get
        for update in fns.update.values():
            scratch = update(scratch, grads, jnp.int32(0))
        if fns.untie is not None:
            scratch = fns.untie(scratch)
        jax.block_until_ready(scratch)
    return time.perf_counter() - t0


def next_batch(session: Session, s: int) -> dict:
    """Step s's batch of this process's ranks, on the host: {inputs, targets, seg_ids, ...} of (ranks, tokens per rank).
    Raises data.DataError when the shards run out, with the loader where it was."""
    return session.loader.next_batch(schedule.step_shape(s, session.cfg.schedule).tokens_per_rank)


def prime_loader(session: Session, s: int) -> None:
    """Build the loader's pipeline for step s's batch size and start its prefetch (nothing is handed out)."""
    if s < session.cfg.schedule.total_steps:
        session.loader.prime(schedule.step_shape(s, session.cfg.schedule).tokens_per_rank)


def train_step(session: Session, fns: StepFunctions, state, s: int, batch: dict):
    """One optimizer step s (recipe §4.1): the batch onto the devices, gradients, NorMuon (+ Adam on odd steps), and at
    the untie step the embedding copy. Returns (new state, the step's summed training loss as a device scalar); the
    state passed in is donated. Dispatch only: nothing waits for the device."""
    cfg = session.cfg
    shape = schedule.step_shape(s, cfg.schedule)
    dyn = dyn_inputs(cfg, s)
    device_batch = sharding.put_batch(session.mesh, {k: batch[k] for k in BATCH_KEYS}, cfg.data.num_ranks)
    loss, grads = fns.grad[grad_key(shape)](state["params"], device_batch, dyn)
    state = fns.update[shape.adam](state, grads, jnp.int32(s))
    if s == schedule.untie_step(cfg.schedule):
        state = fns.untie(state)
    return state, loss


def evaluate(session: Session, fns: StepFunctions, state, s: int) -> float:
    """The validation loss after s steps (recipe §2.2); the final validation keeps the last step's YaRN state."""
    cfg = session.cfg
    dyn = dyn_inputs(cfg, min(s, cfg.schedule.total_steps - 1))
    return evaluate_lib.validation_loss(fns.eval[eval_variant(cfg, s)], state["params"], session.val_batches, dyn,
                                        cfg.data.num_ranks)


def peak_memory_bytes(devices) -> int | None:
    """Largest peak_bytes_in_use over the devices, or None where the backend does not report it (CPU)."""
    peaks = [(d.memory_stats() or {}).get("peak_bytes_in_use") for d in devices]
    peaks = [p for p in peaks if p is not None]
    return max(peaks) if peaks else None
