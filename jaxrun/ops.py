"""The heavy ops of the model, one function each, and the registry of their backends.

Every op has an ``xla`` implementation here, written in plain JAX from the recipe (docs/recipe.md): it is the reference that the kernel tests
trust and what CPU runs use. GPU backends (jax-triton kernels in ``jaxrun.kernels``, cuDNN attention) implement the
same signatures and are listed in ``BACKENDS`` as "module:function" strings, imported on first use, so importing this
module never imports jax_triton. The config picks a backend per op (``ModelConfig.backends``); ``kernels(backends)``
resolves "auto" and imports the four functions once, before tracing, and the model calls the ``Kernels`` it is given.

Signatures (every backend keeps them exactly):
    attention(q, k, v, seg_ids, scale, *, window) -> out               (T, H, d) bf16, recipe §1.5-1.6, §5.4
    lm_head(h, w, *, fp8, scales) -> logits                             (T, V) bf16, recipe §1.9
    mlp(u, fc, proj) -> out                                             (T, D) bf16, recipe §1.8, §14.3
    cross_entropy(logits, targets, mtp_weights, *, softcap, seq_len=None) -> loss
                                                                        (T,) f32 per row, recipe §2.1
    head_loss(h, w, targets, mtp_weights, *, fp8, scales, softcap, lm_head, cross_entropy, seq_len=None) -> loss
                                                                        f32 scalar: the training loss, Σ of the rows
``seq_len``: the rows are sequences of that many tokens laid end to end (several virtual ranks' rows in one forward),
and each one's MTP targets stop at its own end; None (or T): one sequence.
``head_loss`` is the training loss of the head and the cross entropy together: its xla backend composes the two ops
(the lm_head and cross_entropy functions it is passed, of their own backends); its triton backend is one kernel that
also writes the FP8 head's e5m2 gradient (jaxrun.kernels.softcap_ce.head_loss).
``eval_loss`` (recipe §2.2) is the chunked driver around a head and a cross entropy of any backend.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import json
import os
import warnings
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from types import MappingProxyType

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

OPS = ("attention", "lm_head", "mlp", "cross_entropy", "head_loss")

# (op, backend) -> "module:function". GPU backends are imported lazily by get().
BACKENDS: Mapping[tuple[str, str], str] = MappingProxyType(
    {
        ("attention", "xla"): "jaxrun.ops:attention_xla",
        ("attention", "triton"): "jaxrun.kernels.flash_attention:attention",
        ("attention", "cudnn"): "jaxrun.kernels.cudnn_attention:attention",
        ("lm_head", "xla"): "jaxrun.ops:lm_head_xla",
        ("lm_head", "triton"): "jaxrun.kernels.fp8_head:lm_head",
        ("mlp", "xla"): "jaxrun.ops:mlp_xla",
        ("mlp", "triton"): "jaxrun.kernels.relu2_mlp:mlp",
        ("cross_entropy", "xla"): "jaxrun.ops:cross_entropy_xla",
        ("cross_entropy", "triton"): "jaxrun.kernels.softcap_ce:cross_entropy",
        ("head_loss", "xla"): "jaxrun.ops:head_loss_xla",
        ("head_loss", "triton"): "jaxrun.kernels.softcap_ce:head_loss",
    }
)

# Query/key block of the block-banded xla attention (recipe §13), and how many fp32 scores one pass may hold
# (larger problems run as a sequential map over groups of query blocks, so memory stays bounded for T = 262,144).
ATTENTION_BLOCK = 128
_MAX_SCORES_PER_PASS = 1 << 27
_ONE_PASS_SCORES = 1 << 22  # up to this many scores (16 MB in fp32) all query blocks run as one batch, no loop


class BackendUnavailableError(RuntimeError):
    """A backend that cannot be imported here (e.g. a GPU kernel on a CPU machine)."""


# ----------------------------------------------------------------------------------------------------------------------
# Registry
# ----------------------------------------------------------------------------------------------------------------------


# Where `python -m jaxrun.bench ops` records the fastest backend per op for each device kind it ran on, and the table
# shipped with the project (the same measurement made on the GPUs we had). "auto" reads the first, then the second.
AUTO_TABLE_ENV = "JAXRUN_AUTO_BACKENDS"
SHIPPED_AUTO_TABLE = Path(__file__).parent / "assets" / "auto_backends.json"


def auto_table_path() -> Path:
    """The user's table of measured backends: $JAXRUN_AUTO_BACKENDS, else ~/.cache/jaxrun/auto_backends.json."""
    return Path(os.environ.get(AUTO_TABLE_ENV) or Path.home() / ".cache" / "jaxrun" / "auto_backends.json")


def read_auto_table(path: Path) -> dict[str, dict[str, str]]:
    """{device kind: {op: backend}} from a table file; an unreadable file is reported and treated as empty (auto then
    falls back, it never fails a run)."""
    try:
        table = json.loads(Path(path).read_text())
        return {str(kind): {str(op): str(b) for op, b in picks.items()} for kind, picks in table["devices"].items()}
    except FileNotFoundError:
        return {}
    except Exception as err:  # corrupt or hand-edited badly
        warnings.warn(f"ignoring the auto-backend table {path}: {type(err).__name__}: {err}", stacklevel=2)
        return {}


def measured_backends(device=None) -> dict[str, str]:
    """op -> the backend measured fastest on this kind of device: the user's picks for it over the shipped ones; for a
    device kind the shipped table has not measured, the shipped picks of a device with the same compute capability."""
    device = device or jax.devices()[0]
    kind = device.device_kind
    shipped = json.loads(SHIPPED_AUTO_TABLE.read_text())  # package data, checked by the tests
    if kind not in shipped["devices"]:  # the shipped table names, per compute capability, the device that stands in
        kind_in_table = shipped["compute_capability"].get(str(getattr(device, "compute_capability", "")))
    else:
        kind_in_table = kind
    return {**shipped["devices"].get(kind_in_table, {}), **read_auto_table(auto_table_path()).get(kind, {})}


def write_auto_picks(picks: Mapping[str, str], device_kind: str, path: Path | None = None) -> Path:
    """Record measured picks for a device kind in the user's table (other kinds and other ops are kept)."""
    path = Path(path or auto_table_path())
    table = read_auto_table(path)
    table.setdefault(device_kind, {}).update(picks)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"devices": table}, indent=1, sort_keys=True) + "\n")
    tmp.replace(path)
    return path


def auto_backend(op: str, measured: Mapping[str, str] | None = None) -> str:
    """The backend "auto" stands for: the fastest one measured for this op on this kind of device (``measured``, else
    `measured_backends`), else ``xla``."""
    _check_op(op)
    picks = measured_backends() if measured is None else measured
    return dict(picks).get(op, "xla")


def _known_backends(op: str) -> list[str]:
    return sorted(b for o, b in BACKENDS if o == op)


def _check_ops_named_once(backends) -> None:
    names = [op for op, _ in backends]
    for op in OPS:
        if names.count(op) != 1:
            raise ValueError(f"model.backends must name {op!r} exactly once, got {tuple(backends)!r}")
    for op in names:
        _check_op(op)


def check_backends(backends) -> None:
    """Every op named once with a known backend or "auto"; ValueError naming the bad entry and the choices."""
    _check_ops_named_once(backends)
    for op, backend in backends:
        if backend != "auto" and backend not in _known_backends(op):
            raise ValueError(f"model.backends: unknown backend {backend!r} for {op!r}; known: "
                             f"{', '.join(_known_backends(op))} or 'auto'")


def resolve_backends(backends, *, measured: Mapping[str, str] | None = None) -> dict[str, str]:
    """op -> the backend that runs, for (op, backend) pairs such as ModelConfig.backends ("auto" resolved here, from
    ``measured`` or else the tables of `measured_backends`)."""
    if measured is None:
        measured = measured_backends() if any(b == "auto" for _, b in backends) else {}  # the tables are read once
    return {op: auto_backend(op, measured) if b == "auto" else b for op, b in backends}


def get(op: str, backend: str, *, measured: Mapping[str, str] | None = None) -> Callable:
    """The implementation of ``op`` in ``backend`` ("xla", "triton", "cudnn" or "auto"), imported on first use."""
    _check_op(op)
    if backend == "auto":
        backend = auto_backend(op, measured)
    target = BACKENDS.get((op, backend))
    if target is None:
        raise ValueError(f"unknown backend {backend!r} for op {op!r}; known: {', '.join(_known_backends(op))} or 'auto' "
                         f"(set it with --set model.backends=...)")
    module_name, _, function_name = target.partition(":")
    try:
        module = importlib.import_module(module_name)
        return getattr(module, function_name)
    except Exception as err:  # an ImportError, or a kernel package failing to initialise without a GPU
        raise BackendUnavailableError(
            f"backend {backend!r} of op {op!r} ({target}) is not available here: {type(err).__name__}: {err}. "
            f"GPU backends need a GPU with jax-triton installed; on CPU use 'xla' "
            f"(--set \"model.backends=(('attention','xla'),('lm_head','xla'),('mlp','xla'),('cross_entropy','xla'),"
            f"('head_loss','xla'))\")."
        ) from err


@dataclasses.dataclass(frozen=True)
class Kernels:
    """The five op functions the model calls, with the backends they are (``backends``: (op, name) pairs in OPS order,
    "auto" already resolved). Frozen and hashable; ``dataclasses.replace(k, lm_head=f)`` swaps one op."""

    attention: Callable
    lm_head: Callable
    mlp: Callable
    cross_entropy: Callable
    head_loss: Callable
    backends: tuple[tuple[str, str], ...]

    def backend(self, op: str) -> str:
        return dict(self.backends)[op]


def kernels(backends: Mapping[str, str] | Iterable[tuple[str, str]], *,
            measured: Mapping[str, str] | None = None) -> Kernels:
    """The Kernels of an {op: backend} dict or (op, backend) pairs such as ModelConfig.backends: each op named once,
    "auto" resolved once (``measured`` or the tables of `measured_backends`), each function imported now (ValueError
    naming the known backends for an unknown one, BackendUnavailableError for one that cannot run here)."""
    pairs = tuple(backends.items()) if isinstance(backends, Mapping) else tuple(tuple(pair) for pair in backends)
    _check_ops_named_once(pairs)
    resolved = resolve_backends(pairs, measured=measured)  # once, here: never per op nor per trace
    return Kernels(**{op: get(op, resolved[op]) for op in OPS}, backends=tuple((op, resolved[op]) for op in OPS))


def _check_op(op: str) -> None:
    if op not in OPS:
        raise ValueError(f"unknown op {op!r}; the ops are {', '.join(OPS)}")


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


def _as_rounded_f32(x):
    """x (bf16) in fp32, keeping its bf16 rounding when XLA fuses x's producer into the consumer: with
    xla_allow_excess_precision (on by default on GPU) the fused code would otherwise use the unrounded fp32 value,
    where the reference materialises the bf16 tensor (the MLP's pre-activation and d_post, recipe §14.3; the FP8 head's
    inputs at its custom op's boundary, §14.2)."""
    return lax.reduce_precision(x.astype(jnp.float32), exponent_bits=8, mantissa_bits=7)


# ----------------------------------------------------------------------------------------------------------------------
# Attention: document-masked, causal, sliding window (recipe §1.5.6, §5.4), block-banded (recipe §13)
# ----------------------------------------------------------------------------------------------------------------------


def attention_xla(q, k, v, seg_ids, scale, *, window: int, block: int = ATTENTION_BLOCK):
    """Row i sees key j iff seg_ids[j] == seg_ids[i] and i - window <= j <= i. q, k, v (T, H, d) bf16; seg_ids (T,)
    int32; scale f32 0-d (traced: YaRN changes it). fp32 softmax; probabilities rounded to bf16 for the value product
    (as flash attention does); bf16 out.

    The sequence is cut into blocks of ``block`` rows; query block b attends to key blocks b - ceil(window / block) ... b,
    so memory and work grow with T * window, never T * T. The scores are recomputed in the backward (jax.checkpoint)
    instead of being stored.
    """
    _check(q.ndim == 3 and q.shape == k.shape == v.shape,
           f"attention: q, k, v must have the same shape (T, H, d), got {q.shape}, {k.shape}, {v.shape}")
    _check(seg_ids.shape == q.shape[:1], f"attention: seg_ids must have shape ({q.shape[0]},), got {seg_ids.shape}")
    _check(isinstance(window, int) and window >= 0, f"attention: window must be a static int >= 0 (rows), got {window!r}")
    _check(isinstance(block, int) and block > 0, f"attention: block must be a positive int, got {block!r}")
    seq_len, heads, head_dim = q.shape
    num_blocks = -(-seq_len // block)
    back = min(-(-window // block), num_blocks - 1)  # key blocks before the query's own block (none beyond the start)
    # Beyond a small size the query blocks run as a loop of `passes` >= 2 equal passes (whole padding blocks at the
    # tail, after every real query): a one-trip loop, or a remainder outside the loop, is inlined by XLA, whose
    # scheduler may then move the rematerialised scores of the backward up into the forward (nothing ties them to the
    # cotangent), so that every layer's score-sized buffers stay alive from its forward to its backward.
    scores_per_block = heads * block * (back + 1) * block
    per_pass = max(1, _MAX_SCORES_PER_PASS // scores_per_block)
    passes = max(1 if num_blocks * scores_per_block <= _ONE_PASS_SCORES else 2, -(-num_blocks // per_pass))
    per_pass = -(-num_blocks // passes)
    num_blocks = passes * per_pass
    pad = num_blocks * block - seq_len

    def blocks(x):  # (T, ...) -> (num_blocks, block, ...), tail padded (padded keys lie after every real query)
        x = jnp.pad(x, [(0, pad)] + [(0, 0)] * (x.ndim - 1))
        return x.reshape((num_blocks, block) + x.shape[1:])

    def with_history(x):  # prepend `back` blocks of padding so every query block has the same band shape
        return jnp.pad(blocks(x), [(back, 0)] + [(0, 0)] * (x.ndim))

    q_blocks, q_seg = blocks(q), blocks(seg_ids)
    k_hist, v_hist, k_seg = with_history(k), with_history(v), with_history(seg_ids)
    scale = jnp.asarray(scale, jnp.float32)

    @jax.checkpoint
    def one_block(args):
        b, qb, qs = args
        kb = lax.dynamic_slice_in_dim(k_hist, b, back + 1).reshape(((back + 1) * block, heads, head_dim))
        vb = lax.dynamic_slice_in_dim(v_hist, b, back + 1).reshape(((back + 1) * block, heads, head_dim))
        ks = lax.dynamic_slice_in_dim(k_seg, b, back + 1).reshape(-1)
        q_pos = b * block + jnp.arange(block)
        k_pos = (b - back) * block + jnp.arange((back + 1) * block)
        visible = ((qs[:, None] == ks[None, :]) & (k_pos[None, :] <= q_pos[:, None])
                   & (q_pos[:, None] - k_pos[None, :] <= window) & (k_pos[None, :] >= 0))
        s = jnp.einsum("qhd,khd->hqk", qb, kb, preferred_element_type=jnp.float32) * scale
        s = jnp.where(visible[None], s, -jnp.inf)  # every row sees itself, so the max is finite
        m = jnp.max(s, axis=-1, keepdims=True)
        p = jnp.exp(s - m)
        denom = jnp.sum(p, axis=-1)
        o = jnp.einsum("hqk,khd->qhd", p.astype(v.dtype), vb, preferred_element_type=jnp.float32)
        return (o / denom.T[:, :, None]).astype(q.dtype)

    def passes_of(x):  # (num_blocks, ...) -> (passes, per_pass, ...)
        return x.reshape((passes, per_pass) + x.shape[1:])

    args = (jnp.arange(num_blocks), q_blocks, q_seg)
    if passes == 1:
        out = jax.vmap(one_block)(args)
    else:
        out = lax.map(jax.vmap(one_block), jax.tree.map(passes_of, args))
    return out.reshape((num_blocks * block, heads, head_dim))[:seq_len]


# ----------------------------------------------------------------------------------------------------------------------
# LM head: FP8 in training (recipe §1.9, §14.2), bf16 in evaluation
# ----------------------------------------------------------------------------------------------------------------------


def lm_head_xla(h, w, *, fp8: bool, scales: tuple[float, float, float]):
    """logits = h w^T, (T, D) x (V, D) -> (T, V) bf16. fp8=True: static-scale e4m3 operands, e5m2 gradient (recipe §1.9);
    fp8=False: the plain bf16 head of evaluation (``scales`` unused)."""
    check_head_shapes(h, w)
    if not fp8:
        return jnp.dot(h, w.T)
    return _fp8_head(h, w, checked_fp8_scales(scales))


def check_head_shapes(h, w, op: str = "lm_head") -> None:
    """h (T, D) and w (V, D) with the same D, or ValueError naming ``op``."""
    _check(h.ndim == 2 and w.ndim == 2 and h.shape[1] == w.shape[1],
           f"{op}: h must be (T, D) and w (V, D) with the same D, got {h.shape} and {w.shape}")


def checked_fp8_scales(scales, op: str = "lm_head") -> tuple[float, float, float]:
    """The FP8 head's (x, w, grad) scales as a tuple of floats, or ValueError naming ``op``."""
    _check(len(scales) == 3 and all(s > 0 for s in scales),
           f"{op}: scales must be three positive floats (x, w, grad), got {scales!r}")
    return tuple(float(s) for s in scales)


def quantize_fp8(x, scale: float, dtype):
    """x / scale formed in fp32, clamped to the format's range, rounded once (recipe §14.2). The reference does not clamp
    (in range by construction, recipe §1.9 [NOTE]); clamping only avoids NaN/inf where it would have overflowed.

    A bf16 x is quantised from its bf16 value, as the reference's (a bf16 tensor at the custom op's boundary): when XLA
    fuses x's producer into this op, xla_allow_excess_precision would otherwise let it quantise the unrounded fp32
    value (measured on an H200: 1.7-3.2% of the head's e4m3 inputs one step off), so the rounding is pinned."""
    limit = float(jnp.finfo(dtype).max)
    x32 = _as_rounded_f32(x) if x.dtype == jnp.bfloat16 else x.astype(jnp.float32)
    return jnp.clip(x32 / scale, -limit, limit).astype(dtype)


@functools.lru_cache(maxsize=None)
def bf16_scale_pair(scale: float) -> tuple[float, float]:
    """(p, q), both exact in bf16, whose product is the closest such product to `scale` (to ~1e-5 relative; one bf16
    can only get within 2**-9).

    XLA's GPU GEMM rewriter turns dot(bf16(a_fp8) * p, bf16(b_fp8) * q) into one cuBLASLt FP8 GEMM that applies p * q
    to the fp32 accumulator and rounds once to bf16, as torch._scaled_mm does (recipe §1.9). It only matches a scale of
    the operands' type, so the fp32 scale of the reference is split into two bf16 factors.
    """
    import ml_dtypes

    if not (scale > 0 and np.isfinite(scale)):
        raise ValueError(f"bf16_scale_pair: scale must be positive and finite, got {scale!r}")
    bf16 = ml_dtypes.bfloat16
    root = float(np.sqrt(scale))
    exponent = int(np.floor(np.log2(root)))
    p = (np.arange(128, 256, dtype=np.float64) / 128.0) * 2.0**exponent  # every bf16 in [2^e, 2^(e+1))
    q = (scale / p).astype(bf16).astype(np.float64)
    best = int(np.argmin(np.abs(p * q - scale)))
    return float(p[best]), float(q[best])


def scaled_fp8_dot(a, b, contract: tuple[int, int], scale: float, *, fast_accum: bool):
    """bf16 (a_fp8 . b_fp8) * scale, accumulated in fp32 and rounded once.

    On CUDA it is written so that XLA makes it one cuBLASLt FP8 GEMM with the scale in its epilogue and a bf16 output
    (no fp32 (T, V) round trip; measured as fast as the bare FP8 GEMM on an H100). Elsewhere, where nothing fuses the
    dequantisation, the fp32 product is scaled as written, which is the same number.

    fast_accum: cuBLASLt's FP8 fast accumulation (partial sums never promoted to fp32), which XLA turns on for an FP8
    GEMM of DEFAULT precision. The reference uses it in the forward only (K = 768). The backward products contract
    over V = 50,304 and T = 16,384 rows of a gradient whose few large target entries sit among tens of thousands of
    tiny ones: there the low-precision accumulator drops most of the small terms (measured at step 101 of record60 on
    an H200: dh 17% and dW 4% from the exact product, against 0.2% without fast accumulation), and the model trained
    visibly worse (issue #20). HIGHEST precision tells XLA to leave it off.
    """
    dims = (((contract[0],), (contract[1],)), ((), ()))
    precision = None if fast_accum else lax.Precision.HIGHEST

    def cuda(a, b):
        p, q = bf16_scale_pair(scale)
        # The barrier keeps the operands' fp8 rounding. Where XLA does not make the product an FP8 GEMM (small or
        # ragged shapes) and the operand was quantised in the same program, it may otherwise drop the round trip
        # f32 -> fp8 -> bf16 (xla_allow_excess_precision): the product of the unquantised values, ~1-3% off the
        # recipe's (test_head_loss_small_shapes on an H200). The FP8 GEMM's operands are fp8 values either way.
        a, b = lax.optimization_barrier((a, b))
        a, b = a.astype(jnp.bfloat16) * jnp.bfloat16(p), b.astype(jnp.bfloat16) * jnp.bfloat16(q)
        return lax.dot_general(a, b, dims, precision=precision, preferred_element_type=jnp.bfloat16)

    def exact(a, b):
        return (lax.dot_general(a, b, dims, preferred_element_type=jnp.float32) * scale).astype(jnp.bfloat16)

    return lax.platform_dependent(a, b, cuda=cuda, default=exact)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _fp8_head(h, w, scales):
    return fp8_head_forward(h, w, scales)[0]


def fp8_head_forward(h, w, scales):
    """(logits, (xq, wq)): the FP8 head's forward product of the quantised operands, which its backward reuses."""
    x_scale, w_scale, _ = scales
    xq = quantize_fp8(h, x_scale, jnp.float8_e4m3fn)
    wq = quantize_fp8(w, w_scale, jnp.float8_e4m3fn)
    logits = scaled_fp8_dot(xq, wq, (1, 1), x_scale * w_scale, fast_accum=True)
    return logits, (xq, wq)  # the backward uses the quantised copies (recipe §1.9)


def fp8_head_backward_products(gq, residuals, scales):
    """(dh, dW) from the e5m2 gradient gq of the logits and fp8_head_forward's quantised operands."""
    x_scale, w_scale, g_scale = scales
    xq, wq = residuals
    dh = scaled_fp8_dot(gq, wq, (1, 0), g_scale * w_scale, fast_accum=False)
    dw = scaled_fp8_dot(gq, xq, (0, 0), g_scale * x_scale, fast_accum=False)  # fp32 accumulation, stored as the bf16 grad
    return dh, dw


def _fp8_head_bwd(scales, residuals, g):
    return fp8_head_backward_products(quantize_fp8(g, scales[2], jnp.float8_e5m2), residuals, scales)


_fp8_head.defvjp(fp8_head_forward, _fp8_head_bwd)


# ----------------------------------------------------------------------------------------------------------------------
# ReLU² MLP with the reference's rounding points (recipe §1.8, §14.3)
# ----------------------------------------------------------------------------------------------------------------------


def mlp_xla(u, fc, proj):
    """relu(u fc^T)^2 proj: u (T, D) bf16, fc and proj (F, D) bf16 (proj used untransposed). pre = u fc^T is rounded to
    bf16, post = relu(pre)^2 from the bf16 pre is stored in bf16; the backward rounds d_post = g proj^T to bf16 and
    forms d_pre = 2 relu(pre) d_post in bf16, as the fused kernel of the reference does."""
    _check(u.ndim == 2 and fc.ndim == 2 and fc.shape == proj.shape and u.shape[1] == fc.shape[1],
           f"mlp: u must be (T, D) and fc, proj (F, D), got {u.shape}, {fc.shape}, {proj.shape}")
    return _mlp(u, fc, proj)


def _relu2(pre):
    return jnp.square(jnp.maximum(_as_rounded_f32(pre), 0.0)).astype(pre.dtype)


@jax.custom_vjp
def _mlp(u, fc, proj):
    return jnp.dot(_relu2(jnp.dot(u, fc.T)), proj)


def _mlp_fwd(u, fc, proj):
    pre = jnp.dot(u, fc.T)
    post = _relu2(pre)
    return jnp.dot(post, proj), (u, fc, proj, pre, post)


def _mlp_bwd(residuals, g):
    u, fc, proj, pre, post = residuals
    d_post = jnp.dot(g, proj.T)
    d_pre = (2.0 * jnp.maximum(_as_rounded_f32(pre), 0.0) * _as_rounded_f32(d_post)).astype(pre.dtype)
    return jnp.dot(d_pre, fc), jnp.dot(d_pre.T, u), jnp.dot(post.T, g)


_mlp.defvjp(_mlp_fwd, _mlp_bwd)


# ----------------------------------------------------------------------------------------------------------------------
# Soft-capped cross entropy with multi-token prediction (recipe §1.10, §2.1)
# ----------------------------------------------------------------------------------------------------------------------


def head_loss_xla(h, w, targets, mtp_weights, *, fp8: bool, scales, softcap, lm_head: Callable, cross_entropy: Callable,
                  seq_len: int | None = None):
    """The training loss Σ_i loss_i (recipe §2.1) as the two ops compose it: logits = lm_head(h, w), then the per-row
    cross entropy, summed. lm_head and cross_entropy are those ops' functions (any backend)."""
    logits = lm_head(h, w, fp8=fp8, scales=scales)
    return jnp.sum(cross_entropy(logits, targets, mtp_weights, softcap=softcap, seq_len=seq_len))


def softcap_logits(logits, softcap: tuple[float, float, float]):
    """z = a * sigmoid((logits + b) / c), in fp32 from the bf16 logits (recipe §1.10)."""
    a, b, c = softcap
    return a * jax.nn.sigmoid((logits.astype(jnp.float32) + b) / c)


def cross_entropy_xla(logits, targets, mtp_weights, *, softcap: tuple[float, float, float], seq_len: int | None = None):
    """Per-row loss_i = sum_k [i+k < T] w_k (lse_i - z_{i, targets[i+k]}) (T,) f32, z soft-capped in fp32, lse over all
    V columns. Targets past the end of the sequence are dropped; document boundaries are not masked (recipe §2.1).
    seq_len: the rows are sequences of seq_len tokens end to end, and i, T above count within each one."""
    _check(logits.ndim == 2, f"cross_entropy: logits must be (T, V), got {logits.shape}")
    _check(targets.shape == logits.shape[:1], f"cross_entropy: targets must be ({logits.shape[0]},), got {targets.shape}")
    _check(mtp_weights.ndim == 1, f"cross_entropy: mtp_weights must be 1-D (K,), got {mtp_weights.shape}")
    _check(len(softcap) == 3, f"cross_entropy: softcap must be (a, b, c), got {softcap!r}")
    seq_len = checked_seq_len(seq_len, logits.shape[0], "cross_entropy")
    return _softcap_ce(logits, targets, jnp.asarray(mtp_weights, jnp.float32), tuple(float(x) for x in softcap), seq_len)


def checked_seq_len(seq_len: int | None, rows: int, op: str) -> int:
    """The length of the sequences laid end to end in ``rows`` rows (None: one sequence of all of them)."""
    if seq_len is None:
        return rows
    _check(isinstance(seq_len, int) and 0 < seq_len <= rows and rows % seq_len == 0,
           f"{op}: seq_len must be a whole int dividing the {rows} rows, got {seq_len!r}")
    return seq_len


def mtp_index(rows: int, depth: int):
    """(rows, depth) int: i + k, the row of row i's k-th MTP target."""
    return jnp.arange(rows)[:, None] + jnp.arange(depth)[None, :]


def mtp_valid(idx, seq_len: int):
    """[i + k < T] for idx = mtp_index(...): whether the target lies inside row i's own sequence of seq_len rows."""
    rows = idx.shape[0]
    if seq_len == rows:
        return idx < rows
    return idx < ((jnp.arange(rows) // seq_len + 1) * seq_len)[:, None]  # the end of row i's sequence


def _mtp_targets(targets, mtp_weights, seq_len):
    """(T, K) target ids targets[i+k] (clamped in range) and weights w_k [i+k < T], T and i within each sequence."""
    rows, depth = targets.shape[0], mtp_weights.shape[0]
    idx = mtp_index(rows, depth)
    weights = jnp.where(mtp_valid(idx, seq_len), mtp_weights[None, :], 0.0)
    return targets[jnp.minimum(idx, rows - 1)], weights


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def _softcap_ce(logits, targets, mtp_weights, softcap, seq_len):
    return _softcap_ce_fwd(logits, targets, mtp_weights, softcap, seq_len)[0]


def _softcap_ce_fwd(logits, targets, mtp_weights, softcap, seq_len):
    # z < a, so a stabilises the log-sum-exp without a max pass: one fused reduction, no (T, V) fp32 tensor.
    cap = softcap[0]
    lse = cap + jnp.log(jnp.sum(jnp.exp(softcap_logits(logits, softcap) - cap), axis=-1))
    tgt, weights = _mtp_targets(targets, mtp_weights, seq_len)
    z_tgt = softcap_logits(jnp.take_along_axis(logits, tgt, axis=1), softcap)
    loss = jnp.sum(weights * (lse[:, None] - z_tgt), axis=1)
    return loss, (logits, targets, mtp_weights, lse)


def _softcap_ce_bwd(softcap, seq_len, residuals, g):
    """d logits_ij = g_i (S_i p_ij - sum_k [i+k<T] w_k [j = tgt[i+k]]) (1/c) z_ij (1 - sigma_ij) (recipe §2.1), bf16;
    z recomputed from the logits, lse saved by the forward."""
    logits, targets, mtp_weights, lse = residuals
    a, b, c = softcap
    tgt, weights = _mtp_targets(targets, mtp_weights, seq_len)
    sig = jax.nn.sigmoid((logits.astype(jnp.float32) + b) / c)
    z = a * sig
    p = jnp.exp(z - lse[:, None])
    cols = lax.broadcasted_iota(jnp.int32, logits.shape, 1)
    hits = sum(jnp.where(cols == tgt[:, k : k + 1], weights[:, k : k + 1], 0.0) for k in range(tgt.shape[1]))
    total = jnp.sum(weights, axis=1, keepdims=True)
    d_logits = (g[:, None] * (total * p - hits) * (z * (1.0 - sig) / c)).astype(logits.dtype)
    z_tgt = softcap_logits(jnp.take_along_axis(logits, tgt, axis=1), softcap)
    valid = mtp_valid(mtp_index(targets.shape[0], mtp_weights.shape[0]), seq_len)
    d_weights = jnp.sum(g[:, None] * valid * (lse[:, None] - z_tgt), axis=0)
    return d_logits, None, d_weights


_softcap_ce.defvjp(_softcap_ce_fwd, _softcap_ce_bwd)


# ----------------------------------------------------------------------------------------------------------------------
# Embedding lookups with an fp32 scatter-add backward
# ----------------------------------------------------------------------------------------------------------------------


@jax.custom_vjp
def embedding_lookup(table, tokens):
    """table[..., tokens, :]: rows of a (V, D) table, or of each of a stack of (n, V, D) tables, for int tokens (T,).

    The gradient of a gather is a scatter-add of the (T, D) cotangent into the table. XLA's bf16 scatter-add on a GPU
    serialises on the rows of frequent tokens (measured 25-47 ms per micro-batch of the record on an H100, a third of
    a step); accumulating in fp32 uses the native atomics, and rounding once to bf16 at the end is also closer to the
    reference, whose embedding backward accumulates in fp32.
    """
    return jnp.take(table, tokens, axis=-2)


def _embedding_lookup_fwd(table, tokens):
    return jnp.take(table, tokens, axis=-2), (table, tokens)  # the table is a live parameter: no copy is kept


def _embedding_lookup_bwd(residuals, g):
    table, tokens = residuals
    grad = jnp.zeros(table.shape, jnp.float32).at[..., tokens, :].add(g.astype(jnp.float32), mode="drop")
    return grad.astype(table.dtype), None


embedding_lookup.defvjp(_embedding_lookup_fwd, _embedding_lookup_bwd)


def gathered_rows(rows, tokens):
    """The input-embedding rows of ``tokens`` that the caller gathered itself (engine.make_grad_fn differentiates with
    respect to them): the identity, called where the model takes them in, so that one function receives their
    cotangent, as embedding_lookup does when the model gathers (jaxrun.fp8_audit taps both)."""
    del tokens
    return rows


def _distinct_tokens(tokens, vocab):
    """jnp.unique(tokens, return_inverse=True, size=T, fill_value=vocab), with both index arrays written by scatters.

    XLA never fuses a scatter into its consumers, so the two arrays reach the gradient scatters as buffers. From
    jnp.unique they came as gathers over a cumsum, which XLA fused into each scatter and recomputed for every element
    of a row's update, D x tables times per row (4.2x the scatters' floor in phase 3 on an H200,
    docs/results/2026-12-02-h200-eleventh)."""
    t = tokens.shape[0]
    order = jnp.argsort(tokens, stable=True)
    ordered = tokens[order]
    run = jnp.cumsum(jnp.concatenate([jnp.zeros((1,), jnp.int32), (ordered[1:] != ordered[:-1]).astype(jnp.int32)]))
    inverse = jnp.zeros((t,), jnp.int32).at[order].set(run, unique_indices=True)
    unique = jnp.full((t,), vocab, tokens.dtype).at[run].set(ordered)  # a run's rows all write its token
    return unique, inverse


def accumulate_gathered_grad(acc, tokens, row_grads, dense_grad=None):
    """acc (..., V, D) f32 plus the table gradient of a gather ``table[..., tokens, :]`` whose rows got the cotangent
    ``row_grads`` (..., T, D), rounded exactly as embedding_lookup's backward rounds it: repeated tokens summed in fp32,
    the sum rounded to the table's bf16; with ``dense_grad`` (..., V, D) bf16, the table's other gradient (the tied
    head's), the two added in bf16 first, as autodiff adds them. The same numbers as
    ``acc + (dense_grad + grad of embedding_lookup).astype(f32)``, without a dense (V, D) gradient per micro-batch:
    the sum runs over the T rows (sorted unique tokens, a segment sum) and lands in acc's touched rows only, which
    removes a memset, a cast and a read-modify-write of every table per micro-batch (the value embeddings are 5 of
    them)."""
    t = tokens.shape[0]
    vocab = acc.shape[-2]
    # the distinct tokens, padded with an out-of-range id (dropped by the scatters below); inverse maps each row to its
    # distinct token (unique indices: the bf16 scatter below then rounds once per row, with no atomics)
    unique, inverse = _distinct_tokens(tokens, vocab)
    moved = jnp.moveaxis(row_grads.astype(jnp.float32), -2, 0)  # (T, ..., D): segment_sum sums over the first axis
    sums = jnp.moveaxis(jax.ops.segment_sum(moved, inverse.reshape(-1), num_segments=t), 0, -2)
    rounded = sums.astype(jnp.bfloat16)  # what embedding_lookup's backward returns for these rows
    if dense_grad is None:
        return acc.at[..., unique, :].add(rounded.astype(jnp.float32), mode="drop")
    combined = dense_grad.at[..., unique, :].add(rounded, mode="drop")  # one bf16 rounding per row, as add_any's
    return acc + combined.astype(jnp.float32)


# ----------------------------------------------------------------------------------------------------------------------
# Validation loss, chunked over tokens (recipe §2.2)
# ----------------------------------------------------------------------------------------------------------------------


def eval_loss(h, w, targets, *, chunk: int, head: Callable, cross_entropy: Callable):
    """Mean next-token CE of the final hidden states h (T, D) against targets (T,), computed ``chunk`` tokens at a
    time so a 262,144-token evaluation never holds its (T, V) logits at once. head(h_chunk, w) -> bf16 logits and
    cross_entropy(logits, targets) -> per-row loss are the backends' ops with their static arguments bound (the model
    binds the bf16 head and next-token-only weights)."""
    _check(isinstance(chunk, int) and chunk > 0, f"eval_loss: chunk must be a positive int, got {chunk!r}")
    _check(h.ndim == 2 and targets.shape == h.shape[:1],
           f"eval_loss: h must be (T, D) and targets (T,), got {h.shape} and {targets.shape}")
    seq_len = h.shape[0]
    chunk = min(chunk, seq_len)
    num_chunks = -(-seq_len // chunk)
    pad = num_chunks * chunk - seq_len
    h_chunks = jnp.pad(h, ((0, pad), (0, 0))).reshape(num_chunks, chunk, h.shape[1])
    t_chunks = jnp.pad(targets, (0, pad)).reshape(num_chunks, chunk)
    real = (jnp.arange(num_chunks * chunk) < seq_len).reshape(num_chunks, chunk)

    def chunk_sum(args):
        hc, tc, rc = args
        return jnp.sum(jnp.where(rc, cross_entropy(head(hc, w), tc), 0.0))

    return jnp.sum(lax.map(chunk_sum, (h_chunks, t_chunks, real))) / seq_len


__all__ = [
    "ATTENTION_BLOCK",
    "BACKENDS",
    "OPS",
    "BackendUnavailableError",
    "Kernels",
    "attention_xla",
    "auto_backend",
    "cross_entropy_xla",
    "eval_loss",
    "get",
    "check_head_shapes",
    "checked_fp8_scales",
    "fp8_head_backward_products",
    "fp8_head_forward",
    "head_loss_xla",
    "kernels",
    "lm_head_xla",
    "mlp_xla",
    "quantize_fp8",
    "scaled_fp8_dot",
    "softcap_logits",
]
