"""The record-#60 GPT (recipe §1) as a Flax linen module with flat parameter banks.

Parameters are one flat dict, laid out by the parameter table (jaxrun.params, which the optimizer, the sharding rules
and the FLOP count read too):
    qkvo (A, 4D, D), fc (L, F, D), proj (L, F, D), lm_head (V, D), embed (V, D), ve (num_value_embeds, V, D),
    attn_gate_bank (A, H, gate_dim), ve_gate_bank (len(value_embed_layers), H, gate_dim), smear_gate (1, gate_dim),
    skip_gate (1, gate_dim): bf16;  x0_lambdas (L,), scalars (num_scalars,): fp32.
A is the number of attention layers; banks are indexed in layer order (ModelConfig.attention_layers,
ModelConfig.value_embed_layers).

One call runs one packed sequence (T tokens, documents marked by seg_ids), or, for training, R such sequences (R, T)
at once: the virtual ranks' rows that one device merges into one forward (ModelConfig.train_forward_tokens). The R
rows run as one (R*T)-token sequence through every per-token op and matmul; what looks across positions (rotary
positions, the smear, the key offset, the document mask, the MTP targets) stops at each row's end, so each row's
numbers are those of its own call, to rounding. The train loop scans over the rest.

``dyn`` carries the traced schedule values: rope_freqs (head_dim // 4,) f32 (the rotating frequencies after YaRN),
attn_scale () f32, mtp_weights (K,) f32. ``windows`` = (short, long) in tokens and ``tied`` are static. The heavy ops
come in as an ``ops.Kernels`` (``kernels=``), resolved once before tracing.

Precision (recipe §1.13, §14.1): bf16 activations and matmuls (fp32 accumulation); norms in fp32; every fuse-able
pointwise chain (rotary, lambdas, smear, gates, value embeddings, skip, backout) computed in fp32 and rounded once.
"""

from __future__ import annotations

import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxrun import ops
from jaxrun.config import ModelConfig, OptimConfig
from jaxrun.params import TABLE, ScalarLayout, group, shapes as param_shapes

BF16 = jnp.bfloat16
F32 = jnp.float32


# ----------------------------------------------------------------------------------------------------------------------
# Configuration checks
# ----------------------------------------------------------------------------------------------------------------------


def check_config(cfg: ModelConfig) -> None:
    """Layer-map consistency the model relies on (jaxrun.config.validate checks the rest)."""
    attn = set(cfg.attention_layers)
    bad = sorted(set(cfg.key_offset_layers) & set(cfg.paired_layers))
    if bad:
        raise ValueError(f"model.key_offset_layers {bad} are paired-head layers; the key offset is defined for "
                         f"standard attention only (recipe §1.5.4, §1.6)")
    ve_layers = [layer for layer, _ in cfg.value_embed_layers]
    if len(set(ve_layers)) != len(ve_layers):
        raise ValueError(f"model.value_embed_layers names a layer twice: {cfg.value_embed_layers}")
    for layer, table in cfg.value_embed_layers:
        if layer not in attn or not 0 <= table < cfg.num_value_embeds:
            raise ValueError(f"model.value_embed_layers entry {(layer, table)}: the layer must have attention and the "
                             f"table must be in [0, {cfg.num_value_embeds})")
    if not 0 <= cfg.skip_from < cfg.skip_to < cfg.num_layers or not 0 <= cfg.backout_from < cfg.num_layers:
        raise ValueError(f"model.skip_from ({cfg.skip_from}) < skip_to ({cfg.skip_to}) and backout_from "
                         f"({cfg.backout_from}) must be layers in [0, {cfg.num_layers})")
    if cfg.gate_dim > cfg.model_dim:
        raise ValueError(f"model.gate_dim ({cfg.gate_dim}) cannot exceed model.model_dim ({cfg.model_dim})")
    missing = [op for op in ops.OPS if op not in dict(cfg.backends)]
    if missing:
        raise ValueError(f"model.backends names no backend for {missing}; give each of {ops.OPS} one (e.g. 'xla')")


# ----------------------------------------------------------------------------------------------------------------------
# Building blocks (pure functions; the module below wires them together)
# ----------------------------------------------------------------------------------------------------------------------


def rms_norm(x, eps: float):
    """x / sqrt(mean(x^2) + eps) over the last axis, in fp32, no gain, cast back (recipe §1.1)."""
    x32 = x.astype(F32)
    return (x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + eps)).astype(x.dtype)


def gate_logits(x, gate_w):
    """x[..., :gate_dim] gate_w^T as a bf16 matmul: (..., T, gate_dim) x (n, gate_dim) -> (..., T, n)."""
    return jnp.dot(x[..., : gate_w.shape[-1]], gate_w.T)


def rotary_omega(freqs, head_dim: int):
    """Per-dimension angular frequency (head_dim,): f_k on dims 2k and 2k+1 for the head_dim/4 rotating pairs, 0 on
    the stationary second half (half-truncated RoPE, recipe §1.7)."""
    return jnp.concatenate([jnp.repeat(freqs.astype(F32), 2), jnp.zeros(head_dim // 2, F32)])


def rotary_tables(freqs, positions, head_dim: int):
    """cos, sin of theta = position * omega, computed in fp32 and stored in bf16: (*positions.shape, head_dim)."""
    theta = positions.astype(F32)[..., None] * rotary_omega(freqs, head_dim)
    return jnp.cos(theta).astype(BF16), jnp.sin(theta).astype(BF16)


def apply_rotary(x, cos, sin):
    """out[2k] = cos x[2k] + sin x[2k+1], out[2k+1] = cos x[2k+1] - sin x[2k] (recipe §1.7, §14.6): factor1 * x +
    factor2 * x_flip with factor2's odd columns negated, one fused fp32 chain rounded to bf16 (§14.1)."""
    x32 = x.astype(F32)
    flipped = x32.reshape(x.shape[:-1] + (x.shape[-1] // 2, 2))[..., ::-1].reshape(x.shape)
    sign = jnp.tile(jnp.array([1.0, -1.0], F32), x.shape[-1] // 2)
    return (cos.astype(F32) * x32 + (sin.astype(F32) * sign) * flipped).astype(x.dtype)


def rotate_standard(x, freqs):
    """x (..., T, H, d) rotated at the absolute position t in its packed sequence (recipe §1.5.3)."""
    cos, sin = rotary_tables(freqs, jnp.arange(x.shape[-3]), x.shape[-1])
    return apply_rotary(x, cos[:, None, :], sin[:, None, :])


def rotate_paired(x, freqs):
    """x (..., T, H, d) -> (..., 2T, H/2, d), recipe §1.6.1-3: the (T, H/2, 2d) view rotated with the paired table
    (first half of each 2d vector at position 2t, second half at 2t+1), then re-viewed row-major. Head h of token t
    lands in row 2t + h // (H/2), channel h mod (H/2), rotated at position 2t + h mod 2 ([NOTE] channel 1's heads are
    rotated at the other row's position: reproduced by doing the same reshape)."""
    *lead, seq_len, heads, head_dim = x.shape
    positions = 2 * jnp.arange(seq_len)[:, None] + jnp.arange(2)[None, :]  # (T, 2): [2t, 2t+1]
    cos, sin = rotary_tables(freqs, positions, head_dim)  # (T, 2, d)
    pairs = x.reshape(*lead, seq_len, heads // 2, 2, head_dim)  # == the (T, H/2, 2d) view
    rotated = apply_rotary(pairs, cos[:, None], sin[:, None])
    return rotated.reshape(*lead, 2 * seq_len, heads // 2, head_dim)


def to_paired_rows(x):
    """(T, H, ...) -> (2T, H/2, ...) by the row-major re-view of recipe §1.6.3-4."""
    return x.reshape((2 * x.shape[0], x.shape[1] // 2) + x.shape[2:])


def from_paired_rows(x):
    """(2T, H/2, d) -> (T, H, d), the inverse re-view (recipe §1.6.6)."""
    return x.reshape((x.shape[0] // 2, 2 * x.shape[1]) + x.shape[2:])


def key_offset(k):
    """k[t, dims d/4:d/2 and 3d/4:d] <- k[t-1, same dims] for t >= 1, from the pre-shift values (recipe §1.5.4, §14.5);
    k (..., T, H, d). [NOTE] these are the lowest-frequency rotating dims and half the stationary ones (the #58-#61
    behaviour). Crosses document boundaries on purpose (not a sequence's start)."""
    head_dim = k.shape[-1]
    dims = jnp.arange(head_dim)
    moved = ((dims >= head_dim // 4) & (dims < head_dim // 2)) | (dims >= 3 * head_dim // 4)
    previous = jnp.concatenate([k[..., :1, :, :], k[..., :-1, :, :]], axis=-3)
    return jnp.where(moved, previous, k)


def smear(e, smear_gate, smear_lambda):
    """e'_t = e_t + smear_lambda * sigmoid(e_t[:gate_dim] smear_gate^T) e_{t-1} for t >= 1 (recipe §1.4.2); e (..., T,
    D). The gate reads the raw embedding. [NOTE] crosses document boundaries: a BOS is smeared with the previous
    document (not a sequence's start)."""
    gate = gate_logits(e[..., 1:, :], smear_gate).astype(F32)
    mixed = e[..., 1:, :].astype(F32) + smear_lambda * jax.nn.sigmoid(gate) * e[..., :-1, :].astype(F32)
    return jnp.concatenate([e[..., :1, :], mixed.astype(e.dtype)], axis=-2)


def per_sequence(x, num_seqs: int):
    """(N, ...) tokens of num_seqs equal sequences laid end to end -> (num_seqs, N / num_seqs, ...); one sequence is
    passed through as it is, so that a one-rank forward is the same program, bit for bit, as before ranks merged (a
    leading axis of 1 changes how XLA orders the smear's backward sums)."""
    if num_seqs == 1:
        return x
    return x.reshape((num_seqs, x.shape[0] // num_seqs) + x.shape[1:])


def packed_segment_ids(seg_ids):
    """seg_ids (R, T) of R sequences -> (R*T,) ids of one packed sequence whose segments are the rows' segments, none
    spanning two rows: a new id at each row's start and wherever a row's id changes (the attention backends mask by
    runs of equal ids, and the loader's rows all count from 0). One sequence, (T,) or (1, T), is passed through."""
    if seg_ids.ndim == 1 or seg_ids.shape[0] == 1:
        return seg_ids.reshape(-1)
    starts = jnp.concatenate([jnp.ones(seg_ids.shape[:1] + (1,), bool), seg_ids[:, 1:] != seg_ids[:, :-1]], axis=1)
    return jnp.cumsum(starts.reshape(-1), dtype=jnp.int32) - 1


def add_value_embed(v, u, ve_gate, ve_rows):
    """v + 2 sigmoid(u[:, :gate_dim] ve_gate^T) * ve_rows per token and head (recipe §1.5.5): v, ve_rows (T, H, d)."""
    gate = 2.0 * jax.nn.sigmoid(gate_logits(u, ve_gate).astype(F32))
    return (v.astype(F32) + gate[..., None] * ve_rows.astype(F32)).astype(v.dtype)


def output_gate(y, u, attn_gate):
    """y * sigmoid(u[:, :gate_dim] attn_gate^T) per token and head (recipe §1.5.7)."""
    return (y.astype(F32) * jax.nn.sigmoid(gate_logits(u, attn_gate).astype(F32))[..., None]).astype(y.dtype)


def scale_weight(w, lam):
    """A 0-d fp32 lambda multiplied into a bf16 weight, rounded once (recipe §1.5.1, §1.5.8)."""
    return (w.astype(F32) * lam).astype(w.dtype)


# ----------------------------------------------------------------------------------------------------------------------
# The model
# ----------------------------------------------------------------------------------------------------------------------


class GPT(nn.Module):
    cfg: ModelConfig
    # The engine and the benchmarks pass the Kernels they built once; None (direct calls, tests) builds them from
    # cfg.backends on each apply, which resolves "auto" while tracing.
    kernels: ops.Kernels | None = None

    def setup(self):
        self.p = {name: self.param(name, p.init(self.cfg), p.shape(self.cfg), p.dtype)
                  for name, p in TABLE.items()}  # in table order: the order fixes the random values
        self.ops = self.kernels if self.kernels is not None else ops.kernels(self.cfg.backends)

    def param_dict(self):
        return dict(self.p)

    def hidden(self, batch, dyn, windows: tuple[int, int], tied: bool, rows: dict | None = None):
        """The final normalised hidden states h (R*T, D) bf16 of a batch of (T,) or (R, T) arrays (recipe §1.4 steps
        1-6, before the head). rows: the embedding rows of the tokens (flattened), already gathered (embedding_rows);
        None gathers them here."""
        cfg, p = self.cfg, self.p
        lay = ScalarLayout(cfg.num_layers)
        scalars, x0_lambdas = p["scalars"], p["x0_lambdas"]
        num_seqs = 1 if batch["inputs"].ndim == 1 else batch["inputs"].shape[0]
        tokens = batch["inputs"].reshape(-1)
        seg_ids = packed_segment_ids(batch["seg_ids"])
        mlp = self.ops.mlp

        if rows is None:
            # tied: the head is the input embedding (recipe §1.11)
            e = ops.embedding_lookup(p[embedding_table(tied)], tokens)
            value_embeds = ops.embedding_lookup(p["ve"], tokens)  # (num_value_embeds, T, D): one gather for all layers
        else:
            e, value_embeds = ops.gathered_rows(rows["embed"], tokens), rows["ve"]
        e = smear(per_sequence(e, num_seqs), p["smear_gate"], scalars[lay.smear]).reshape(e.shape)
        x0 = rms_norm(e, cfg.rms_eps)
        x = x0
        saved = {}
        for i in range(cfg.num_layers):
            if i == cfg.skip_to:  # U-net skip, recipe §1.4.4a
                gate = 2.0 * jax.nn.sigmoid(gate_logits(x0, p["skip_gate"]).astype(F32))
                x = (x.astype(F32) + jax.nn.sigmoid(scalars[lay.skip]) * gate * saved["skip"].astype(F32)).astype(BF16)
            if i == 0:  # x == x0 here (recipe §1.4.4b)
                x = ((scalars[lay.resid(0)] + x0_lambdas[0]) * x.astype(F32)).astype(BF16)
            else:
                x = (scalars[lay.resid(i)] * x.astype(F32) + x0_lambdas[i] * x0.astype(F32)).astype(BF16)
            if i in cfg.attention_layers:
                x = x + self.attention(i, rms_norm(x, cfg.rms_eps), value_embeds, seg_ids, dyn, windows, num_seqs)
            x = x + mlp(rms_norm(x, cfg.rms_eps), p["fc"][i], p["proj"][i])
            if i == cfg.skip_from:
                saved["skip"] = x
            if i == cfg.backout_from:
                saved["backout"] = x
        x = (x.astype(F32) - scalars[lay.backout] * saved["backout"].astype(F32)).astype(BF16)  # recipe §1.4.5
        return rms_norm(x, cfg.rms_eps)

    def attention(self, layer: int, u, value_embeds, seg_ids, dyn, windows, num_seqs: int = 1):
        """Standard (recipe §1.5) or paired-head (recipe §1.6) attention of one layer on u = rms(x) (N, D), N tokens of
        num_seqs sequences end to end; seg_ids (N,) as packed_segment_ids gives them."""
        cfg, p = self.cfg, self.p
        lay = ScalarLayout(cfg.num_layers)
        tokens, D, H, d = u.shape[0], cfg.model_dim, cfg.num_heads, cfg.head_dim
        bank = cfg.attention_layers.index(layer)
        w = p["qkvo"][bank]
        w_qkv = scale_weight(w[: 3 * D], p["scalars"][lay.sa_in(layer)])  # lambda_in folded into the weight
        w_o = scale_weight(w[3 * D :], p["scalars"][lay.sa_out(layer)])
        qkv = jnp.dot(u, w_qkv.T).reshape(tokens, 3, H, d)
        q, k, v = rms_norm(qkv[:, 0], cfg.rms_eps), rms_norm(qkv[:, 1], cfg.rms_eps), qkv[:, 2]
        ve_slot = {lyr: j for j, (lyr, _) in enumerate(cfg.value_embed_layers)}.get(layer)
        if ve_slot is not None:
            ve_rows = value_embeds[cfg.value_embed_layers[ve_slot][1]].reshape(tokens, H, d)
            v = add_value_embed(v, u, p["ve_gate_bank"][ve_slot], ve_rows)
        attention = self.ops.attention
        freqs, scale = dyn["rope_freqs"], dyn["attn_scale"]
        q, k = per_sequence(q, num_seqs), per_sequence(k, num_seqs)  # positions count from each sequence's start
        if layer in cfg.paired_layers:
            # 2T interleaved rows, each token's two rows in its segment; window in rows, not doubled (recipe §1.6.5).
            paired = lambda x: rotate_paired(x, freqs).reshape(2 * tokens, H // 2, d)  # noqa: E731
            y = attention(paired(q), paired(k), to_paired_rows(v), jnp.repeat(seg_ids, 2), scale, window=windows[0])
            y = from_paired_rows(y)
        else:
            q, k = rotate_standard(q, freqs), rotate_standard(k, freqs)
            if layer in cfg.key_offset_layers:
                k = key_offset(k)
            window = windows[1] if layer in cfg.long_window_layers else windows[0]
            y = attention(q.reshape(v.shape), k.reshape(v.shape), v, seg_ids, scale, window=window)
        y = output_gate(y, u, p["attn_gate_bank"][bank])
        return jnp.dot(y.reshape(tokens, D), w_o.T)

    def train_loss(self, batch, dyn, windows, tied, rows=None):
        """SUM over the tokens of every sequence of the soft-capped MTP cross entropy (recipe §2.1), FP8 head if
        cfg.fp8_head; each sequence's MTP targets stop at its own end."""
        cfg = self.cfg
        h = self.hidden(batch, dyn, windows, tied, rows)
        return self.ops.head_loss(h, self.p["lm_head"], batch["targets"].reshape(-1), dyn["mtp_weights"],
                                  fp8=cfg.fp8_head, scales=cfg.fp8_scales, softcap=cfg.softcap,
                                  lm_head=self.ops.lm_head, cross_entropy=self.ops.cross_entropy,
                                  seq_len=batch["targets"].shape[-1])

    def eval_loss(self, batch, dyn, windows, tied):
        """Mean next-token soft-capped CE with the bf16 head, chunked over tokens (recipe §2.2)."""
        cfg = self.cfg
        h = self.hidden(batch, dyn, windows, tied)
        next_token_only = jnp.zeros(dyn["mtp_weights"].shape, F32).at[0].set(1.0)  # MTP weights ignored
        head = functools.partial(self.ops.lm_head, fp8=False, scales=cfg.fp8_scales)
        cross_entropy = self.ops.cross_entropy
        return ops.eval_loss(
            h, self.p["lm_head"], batch["targets"], chunk=cfg.eval_token_chunk, head=head,
            cross_entropy=lambda logits, targets: cross_entropy(logits, targets, next_token_only, softcap=cfg.softcap),
        )


# ----------------------------------------------------------------------------------------------------------------------
# Public API
# ----------------------------------------------------------------------------------------------------------------------


def init_params(cfg: ModelConfig, key) -> dict[str, jax.Array]:
    """The flat parameter dict with the initialisation of recipe §1.3."""
    check_config(cfg)
    return dict(GPT(cfg).init({"params": key}, method=GPT.param_dict)["params"])


def train_loss(params, batch, dyn, *, cfg: ModelConfig, windows: tuple[int, int], tied: bool,
               kernels: ops.Kernels | None = None, rows: dict | None = None):
    """f32 scalar: the SUM of the row losses of one packed sequence (T,), or of R of them (R, T) at once (their rows
    merged into one forward; each sequence's numbers its own call's, to rounding) (recipe §2.1; the caller divides if
    it must).
    kernels: the op functions (ops.kernels(cfg.backends), built once by the caller); None builds them from
    cfg.backends at every trace. rows: embedding_rows(params, batch["inputs"].reshape(-1), tied), for a caller that takes the
    gradient with respect to the gathered rows instead of the tables (engine.make_grad_fn); the tables in params are
    then not read."""
    _check_call(params, batch, dyn, cfg, windows, dims_allowed=(1, 2))
    return GPT(cfg, kernels).apply({"params": params}, batch, dyn, tuple(windows), tied, rows, method=GPT.train_loss)


def embedding_table(tied: bool) -> str:
    """The parameter the input embedding reads: the head's weight while tied (recipe §1.11), else its own table."""
    return "lm_head" if tied else "embed"


EMBEDDING_TABLES = ("embed", "ve")  # the gathered tables; lm_head is one too while tied, but also the head's weight


def embedding_rows(params, tokens, tied: bool) -> dict:
    """{"embed": (N, D), "ve": (num_value_embeds, N, D)}: the rows the model gathers for the tokens (N,) (a batch's
    inputs, flattened)."""
    return {"embed": jnp.take(params[embedding_table(tied)], tokens, axis=0),
            "ve": jnp.take(params["ve"], tokens, axis=-2)}


def eval_loss(params, batch, dyn, *, cfg: ModelConfig, windows: tuple[int, int], tied: bool,
              kernels: ops.Kernels | None = None):
    """f32 scalar: the mean next-token CE over the sequence, bf16 head, chunked (recipe §2.2); kernels as train_loss."""
    _check_call(params, batch, dyn, cfg, windows)
    return GPT(cfg, kernels).apply({"params": params}, batch, dyn, tuple(windows), tied, method=GPT.eval_loss)


def _check_call(params, batch, dyn, cfg: ModelConfig, windows, dims_allowed=(1,)) -> None:
    """Shapes and keys at trace time, so a wrong input fails with a message rather than deep inside XLA.
    dims_allowed: the batch arrays' allowed ranks (training takes (R, T) too)."""
    check_config(cfg)
    expected = param_shapes(cfg)
    missing, unexpected = sorted(set(expected) - set(params)), sorted(set(params) - set(expected))
    if missing or unexpected:
        raise ValueError(f"params: missing {missing}, unexpected {unexpected} (build them with model.init_params)")
    for name, spec in expected.items():
        if tuple(params[name].shape) != spec.shape:
            raise ValueError(f"params[{name!r}] has shape {tuple(params[name].shape)}, the config needs {spec.shape}")
    for key in ("inputs", "targets", "seg_ids"):
        if key not in batch:
            raise ValueError(f"batch needs 'inputs', 'targets' and 'seg_ids' (one packed sequence); {key!r} is missing")
        if batch[key].ndim not in dims_allowed or not jnp.issubdtype(batch[key].dtype, jnp.integer):
            wanted = "a 1-D integer array (T,)" + (" or a 2-D one (R, T) of R sequences" if 2 in dims_allowed else "")
            raise ValueError(f"batch[{key!r}] must be {wanted}, got {batch[key].dtype}{batch[key].shape}"
                             f" (the train loop maps over micro-batches and devices itself)")
    if not batch["inputs"].shape == batch["targets"].shape == batch["seg_ids"].shape:
        raise ValueError(f"batch inputs, targets and seg_ids must have the same shape, got {batch['inputs'].shape}, "
                         f"{batch['targets'].shape}, {batch['seg_ids'].shape}")
    dims = {"rope_freqs": (cfg.head_dim // 4,), "attn_scale": ()}
    for key, shape in dims.items():
        if key not in dyn or tuple(jnp.shape(dyn[key])) != shape:
            got = tuple(jnp.shape(dyn[key])) if key in dyn else "missing"
            raise ValueError(f"dyn[{key!r}] must have shape {shape}, got {got} (see schedule.yarn_state)")
    if "mtp_weights" not in dyn or jnp.ndim(dyn["mtp_weights"]) != 1:
        raise ValueError("dyn['mtp_weights'] must be a 1-D array of MTP weights, zero-padded (see schedule.mtp_weights)")
    if len(windows) != 2 or not all(isinstance(w, int) and w >= 0 for w in windows):
        raise ValueError(f"windows must be (short, long) in tokens, static non-negative ints, got {windows!r}")


def param_table(params, cfg: ModelConfig):
    """Rows (name, shape, dtype, optimizer) in table order and totals {'stored', 'matmul', 'bytes'}, for --dry-run.
    ``params`` may be arrays or shapes (jax.ShapeDtypeStruct); they must be the config's."""
    expected = param_shapes(cfg)
    if set(params) != set(expected):
        raise ValueError(f"param_table: parameter names {sorted(params)} are not the config's {sorted(expected)}")
    rows, totals = [], {"stored": 0, "matmul": 0, "bytes": 0}
    for name, spec in expected.items():
        shape, dtype = tuple(params[name].shape), jnp.dtype(params[name].dtype)
        if (shape, dtype) != (spec.shape, spec.dtype):
            raise ValueError(f"param_table: {name} is {dtype.name}{shape}, the config makes {spec.dtype.name}{spec.shape}")
        count = math.prod(shape)
        rows.append((name, shape, dtype.name, TABLE[name].optimizer))
        totals["stored"] += count
        totals["bytes"] += count * dtype.itemsize
        if TABLE[name].matmul:
            totals["matmul"] += count
    return rows, totals


def print_param_table(cfg: ModelConfig, optim: OptimConfig | None = None) -> None:
    """The parameter table of a config, from jax.eval_shape of the model's init (nothing is materialised: instant for
    the record), with each parameter's flags and, given the OptimConfig, its lr/wd multipliers and Adam betas."""
    shapes = jax.eval_shape(functools.partial(init_params, cfg), jax.random.key(0))
    rows, totals = param_table(shapes, cfg)
    head = f"{'parameter':<16}{'shape':<22}{'dtype':<10}{'optimizer':<10}{'count':>14}  {'zero axes':<11}{'flags':<22}"
    print((head + (f"{'lr_mul':>8}{'wd_mul':>8}  betas" if optim else "")).rstrip())
    for name, shape, dtype, optimizer in rows:
        p = TABLE[name]
        flags = ",".join(flag for flag in ("matmul", "square_blocks", "split_product") if getattr(p, flag)) or "-"
        line = (f"{name:<16}{str(shape):<22}{dtype:<10}{optimizer:<10}{math.prod(shape):>14,}  "
                f"{','.join(map(str, p.zero_axes)):<11}{flags:<22}")
        if optim:
            g = group(name, optim)
            line += f"{g.lr_mul:>8g}{g.wd_mul:>8g}  {g.betas or '-'}"
        print(line.rstrip())
    print(f"total stored {totals['stored']:,} parameters ({totals['bytes'] / 2**20:,.1f} MiB); "
          f"in matmuls {totals['matmul']:,}")


__all__ = [
    "GPT",
    "check_config",
    "eval_loss",
    "init_params",
    "param_table",
    "print_param_table",
    "train_loss",
]
