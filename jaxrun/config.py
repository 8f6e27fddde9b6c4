"""Configuration: plain frozen dataclasses, loaded from a Python file and overridden from the command line.

A config file (``configs/record60.py``, ``configs/tiny.py``) defines ``get_config() -> Config``. Every number of the
recipe lives in those files; the library reads them from here and hard-codes none. ``--set a.b=value`` replaces one
field; the value is parsed as a Python literal when it is one (``3``, ``0.5``, ``(1, 3)``, ``True``) and kept as a
string otherwise. An unknown key fails with the nearest valid keys.
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Repository root (configs/, data/ and runs/ live there when jaxrun is installed in editable mode, as the README does).
REPO_ROOT = Path(__file__).resolve().parent.parent
CONFIG_DIR = REPO_ROOT / "configs"
DEFAULT_CONFIG = CONFIG_DIR / "tiny.py"
# The sample corpus ships inside the package, so the embedded default finds it from any working directory (its
# shards and runs/ are written relative to the working directory).
SAMPLE_CORPUS = Path(__file__).resolve().parent / "assets" / "sample" / "sample.jsonl.xz"


class ConfigError(ValueError):
    """A config file or override that cannot be used; the message says what to do."""


@dataclass(frozen=True)
class ModelConfig:
    vocab_size: int  # padded to a multiple of 128 (recipe §1.1)
    num_layers: int
    model_dim: int
    num_heads: int
    head_dim: int
    mlp_hidden: int
    gate_dim: int  # channels read by every sigmoid gate (12 in the record)
    # Layer map (recipe §1.2).
    paired_layers: tuple[int, ...]
    no_attention_layers: tuple[int, ...]
    long_window_layers: tuple[int, ...]
    key_offset_layers: tuple[int, ...]
    value_embed_layers: tuple[tuple[int, int], ...]  # (layer, value-embedding table), in ve_gate_bank order
    num_value_embeds: int
    skip_from: int  # U-net skip source layer (its block output is saved)
    skip_to: int  # the skip is added at this layer's input
    backout_from: int
    num_scalars: int  # resid (L) + sa (2L) + smear, backout, skip, padded to the 8-rank layout (recipe §1.3)
    # Initialisation (recipe §1.3).
    init_attn_bound: float  # Q, K, V rows: U(-b, b); O rows zero
    init_fc_bound: float
    init_lm_head_std: float
    init_resid_lambda: float
    init_sa_lambda: tuple[float, float]  # (lambda_in, lambda_out)
    init_smear_lambda: float
    init_backout_lambda: float
    init_skip_lambda: float
    init_scalar_pad: float
    # Numerics.
    rms_eps: float  # fp32 machine epsilon, PyTorch's rms_norm default (recipe §1.1)
    rope_min_freq: float  # f_k = min_freq ** (k / (n - 1)), n = head_dim // 4 (recipe §1.7)
    softcap: tuple[float, float, float]  # z = a * sigmoid((logit + b) / c) (recipe §1.10)
    fp8_scales: tuple[float, float, float]  # x, w, grad (recipe §1.9)
    fp8_head: bool  # FP8 lm head in training (eval is always bf16)
    eval_token_chunk: int  # validation head + CE run over this many tokens at a time (recipe §2.2 memory hint)
    # Backend per heavy op: "xla" | "triton" | "cudnn" | "auto" (jaxrun.ops).
    backends: tuple[tuple[str, str], ...] = (("attention", "xla"), ("lm_head", "xla"), ("mlp", "xla"), ("cross_entropy", "xla"),
                                             ("head_loss", "xla"))
    # The most tokens one training forward takes on a device: that many of its virtual ranks' rows (a divisor of its
    # ranks) run as one packed sequence whose rows keep their own positions, documents and MTP targets (engine.
    # ranks_per_forward); 0 = one rank per forward, the reference's shape. More per forward: fewer, larger kernels and
    # one gradient accumulation per group, for activation memory; the loss and gradients are the per-rank ones to rounding.
    # (The cudnn attention backend's softmax statistics grow with the square of a forward's tokens: 3 GB a layer at
    # 131,072; the triton and xla backends' memory grows linearly.)
    train_forward_tokens: int = 0
    # Larger forwards where the memory allows: (GiB, tokens) pairs. Where every device's allocator has a preallocated
    # pool of at least GiB, a forward takes up to the largest such entry's tokens instead of train_forward_tokens.
    # Decided once at the start (engine.forward_tokens_for_memory); config.json records the tokens that ran, with this
    # table emptied, so a resumed run keeps them. () = train_forward_tokens everywhere.
    forward_tokens_by_memory: tuple[tuple[int, int], ...] = ()

    def backend(self, op: str) -> str:
        return dict(self.backends)[op]

    @property
    def attention_layers(self) -> tuple[int, ...]:
        """Layers with attention, in attn_gate_bank / qkvo bank order."""
        return tuple(i for i in range(self.num_layers) if i not in self.no_attention_layers)


@dataclass(frozen=True)
class AdamGroup:
    """Per-parameter Adam settings (recipe §1.3)."""

    lr_mul: float
    wd_mul: float
    betas: tuple[float, float]


@dataclass(frozen=True)
class OptimConfig:
    muon_lr: float
    muon_momentum_range: tuple[float, float]  # (start, peak); see ScheduleConfig for the ramps
    muon_beta2: float
    muon_weight_decay: float
    muon_lr_muls: tuple[tuple[str, float], ...]  # by bank name
    polar_express_coeffs: tuple[tuple[float, float, float], ...]
    polar_express_norm_scale: float  # X / (||X||_F * scale + eps)
    polar_express_eps: float
    normuon_eps: float  # floor inside the row normalisation
    adam_lr: float
    adam_eps: float
    adam_weight_decay: float
    adam_groups: tuple[tuple[str, AdamGroup], ...]  # by parameter name

    def adam_group(self, name: str) -> AdamGroup:
        return dict(self.adam_groups)[name]


@dataclass(frozen=True)
class ScheduleConfig:
    scheduled_steps: int  # 1735: x_s = s / scheduled_steps
    extension_steps: int  # 40 more at the last phase's shapes
    seqs_per_rank: tuple[int, ...]  # per phase (the record has 3; any number); tokens per rank = seqs * seq_len
    seq_len: int  # 2048
    window_blocks: tuple[tuple[int, int], ...]  # (short, long) per phase, then the extension's
    window_block_size: int  # 128 tokens per window block
    final_eval_long_window: int  # 20 blocks at the final evaluation, no YaRN update
    lr_max: tuple[float, ...]  # per phase
    lr_floor: float  # 0.1
    cooldown_frac: float  # decay starts at x = 1 - cooldown_frac
    momentum_warmup_steps: int  # 300
    momentum_cooldown_start: int  # 1725
    momentum_cooldown_steps: int  # 50
    momentum_cooldown_drop: float  # 0.10
    mtp_weights: tuple[tuple[float, ...], ...]  # per phase, at the phase start; see schedule.mtp_weights for the decay
    attn_scale_init: float  # 0.1
    yarn_attn_factor: float  # attn_scale *= 1 + factor * ln(new / old)
    yarn_alpha: float  # ramp of w_k: clip((rotations - alpha) / (beta - alpha), 0, 1)
    yarn_beta: float

    @property
    def total_steps(self) -> int:
        return self.scheduled_steps + self.extension_steps


@dataclass(frozen=True)
class DataConfig:
    train_files: str  # glob of training shards, read in sorted order
    val_file: str
    val_tokens: int  # 10,485,760 (+1 for the last target)
    val_seq_len: int  # 262,144 tokens per evaluation chunk
    num_ranks: int  # the recipe's 8 virtual ranks (recipe §3.6)
    max_doc_len: int  # 2048
    bos_token: int  # 50256
    # When the shards above are missing and this corpus is set, they are tokenized from it on first use.
    tokenize_from: str = ""
    tokenize_val_tokens: int = 0
    tokenize_passes: int = 1  # reshuffled passes over the training documents (a small corpus read several times)


@dataclass(frozen=True)
class RunConfig:
    name: str  # runs/<name>/; "" = derived from the config name and the time
    out_dir: str  # "runs"
    seed: int
    val_every: int  # 250
    checkpoint_every: int  # 0 = only at the end and on a signal
    log_every: int  # step lines printed every N steps (the reference prints every step)
    compile_cache_dir: str  # JAX persistent compilation cache; "" disables it
    # The speedrun's bar: mean final val loss below it, one-sided t-test p < 0.01 over runs (recipe §6); jaxrun.compare's default.
    target_val_loss: float = 3.28
    keep_checkpoints: int = 3  # the newest N stay on disk: a damaged one falls back to the one before
    # the step functions' lowerings (jaxrun.lowering_cache), so that a cached start skips tracing; "" disables it
    lowering_cache_dir: str = "~/.cache/jaxrun/lowered"


@dataclass(frozen=True)
class Config:
    model: ModelConfig
    optim: OptimConfig
    schedule: ScheduleConfig
    data: DataConfig
    run: RunConfig
    name: str = "config"


def _field_paths(obj: Any, prefix: str = "") -> list[str]:
    out = []
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        path = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(value):
            out.extend(_field_paths(value, path + "."))
        else:
            out.append(path)
    return out


def valid_keys(cfg: Config) -> list[str]:
    return _field_paths(cfg)


def _parse_value(text: str) -> Any:
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def _coerce(value: Any, current: Any, key: str) -> Any:
    """Give an override the type of the field it replaces, or say why it cannot have it."""
    if isinstance(current, bool):
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        raise ConfigError(f"--set {key}: expected true or false, got {value!r}")
    if isinstance(current, int):
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"--set {key}: expected an integer, got {value!r}")
    if isinstance(current, float):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"--set {key}: expected a number, got {value!r}")
    if isinstance(current, str):
        return str(value)
    if isinstance(current, tuple):
        if isinstance(value, (tuple, list)):
            return _to_tuple(value)
        raise ConfigError(f"--set {key}: expected a tuple such as (1, 2), got {value!r}")
    return value


def _to_tuple(value: Any) -> Any:
    if isinstance(value, (tuple, list)):
        return tuple(_to_tuple(v) for v in value)
    return value


def override(cfg: Config, key: str, raw_value: str | Any) -> Config:
    """Return cfg with the dotted field ``key`` replaced; unknown keys name the nearest valid ones."""
    keys = valid_keys(cfg)
    if key not in keys:
        near = difflib.get_close_matches(key, keys, n=5, cutoff=0.5)
        hint = f" Did you mean: {', '.join(near)}?" if near else ""
        raise ConfigError(f"unknown config key {key!r}.{hint} (valid keys: python -m jaxrun.train --print-config)")
    value = _parse_value(raw_value) if isinstance(raw_value, str) else raw_value
    head, _, rest = key.partition(".")
    if not rest:
        return dataclasses.replace(cfg, **{head: _coerce(value, getattr(cfg, head), key)})
    sub = getattr(cfg, head)
    leaf = rest
    current = getattr(sub, leaf)
    return dataclasses.replace(cfg, **{head: dataclasses.replace(sub, **{leaf: _coerce(value, current, key)})})


def apply_overrides(cfg: Config, items: list[str]) -> Config:
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"--set expects key=value, got {item!r}")
        cfg = override(cfg, key.strip(), value.strip())
    return cfg


def config_from_file(path: Path) -> Config:
    """Run a config file's ``get_config()`` (config files may build on each other through this)."""
    if not path.is_file():
        candidates = sorted(p.name for p in CONFIG_DIR.glob("*.py")) if CONFIG_DIR.is_dir() else []
        raise ConfigError(f"config file {str(path)!r} not found. Shipped configs in {CONFIG_DIR}: {', '.join(candidates) or 'none'}")
    spec = importlib.util.spec_from_file_location(f"jaxrun_config_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not hasattr(module, "get_config"):
        raise ConfigError(f"config file {path} defines no get_config() function")
    cfg = module.get_config()
    if not isinstance(cfg, Config):
        raise ConfigError(f"{path}: get_config() must return jaxrun.config.Config, got {type(cfg).__name__}")
    return cfg


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Load ``get_config()`` from a config file (default: configs/tiny.py) and apply ``--set`` overrides."""
    cfg = config_from_file(Path(path) if path else DEFAULT_CONFIG)
    cfg = apply_overrides(cfg, overrides or [])
    validate(cfg)
    return cfg


# Every numeric field's allowed range, checked at load time so that a bad value never reaches the compiler:
# (section, field, lowest allowed, whether the lowest is allowed, highest or None). Tuple fields are checked entrywise.
_RANGES = (
    ("model", "vocab_size", 1, True, None), ("model", "num_layers", 1, True, None), ("model", "model_dim", 1, True, None),
    ("model", "num_heads", 1, True, None), ("model", "head_dim", 1, True, None), ("model", "mlp_hidden", 1, True, None),
    ("model", "gate_dim", 1, True, None), ("model", "num_value_embeds", 0, True, None),
    ("model", "num_scalars", 1, True, None), ("model", "init_attn_bound", 0, True, None),
    ("model", "init_fc_bound", 0, True, None), ("model", "init_lm_head_std", 0, True, None),
    ("model", "rms_eps", 0, False, None), ("model", "rope_min_freq", 0, False, 1),
    ("model", "fp8_scales", 0, False, None), ("model", "eval_token_chunk", 1, True, None),
    ("model", "train_forward_tokens", 0, True, None), ("model", "forward_tokens_by_memory", 1, True, None),
    ("optim", "muon_lr", 0, False, None), ("optim", "muon_momentum_range", 0, True, 1),
    ("optim", "muon_beta2", 0, True, 1), ("optim", "muon_weight_decay", 0, True, None),
    ("optim", "polar_express_norm_scale", 0, False, None), ("optim", "polar_express_eps", 0, True, None),
    ("optim", "normuon_eps", 0, False, None), ("optim", "adam_lr", 0, False, None), ("optim", "adam_eps", 0, False, None),
    ("optim", "adam_weight_decay", 0, True, None),
    ("schedule", "scheduled_steps", 1, True, None), ("schedule", "extension_steps", 0, True, None),
    ("schedule", "seqs_per_rank", 1, True, None), ("schedule", "seq_len", 1, True, None),
    ("schedule", "window_blocks", 0, True, None), ("schedule", "window_block_size", 1, True, None),
    ("schedule", "final_eval_long_window", 0, True, None), ("schedule", "lr_max", 0, False, None),
    ("schedule", "lr_floor", 0, True, 1), ("schedule", "cooldown_frac", 0, True, 1),
    ("schedule", "momentum_warmup_steps", 0, True, None), ("schedule", "momentum_cooldown_start", 0, True, None),
    ("schedule", "momentum_cooldown_steps", 0, True, None), ("schedule", "momentum_cooldown_drop", 0, True, 1),
    ("schedule", "mtp_weights", 0, True, None), ("schedule", "attn_scale_init", 0, False, None),
    ("data", "val_tokens", 1, True, None), ("data", "val_seq_len", 1, True, None), ("data", "num_ranks", 1, True, None),
    ("data", "max_doc_len", 1, True, None), ("data", "bos_token", 0, True, None),
    ("data", "tokenize_val_tokens", 0, True, None), ("data", "tokenize_passes", 1, True, None),
    ("run", "val_every", 1, True, None), ("run", "checkpoint_every", 0, True, None), ("run", "log_every", 1, True, None),
    ("run", "keep_checkpoints", 1, True, None),
)


def _flat_numbers(value):
    if isinstance(value, (tuple, list)):
        return [x for v in value for x in _flat_numbers(v)]
    return [value]


def check_ranges(cfg: Config) -> None:
    """Each numeric field against its allowed range (_RANGES); the message names the field, the value and the range."""
    for section, name, low, low_ok, high in _RANGES:
        value = getattr(getattr(cfg, section), name)
        for x in _flat_numbers(value):
            bad = (x < low or (x == low and not low_ok)) or (high is not None and x > high)
            if bad or x != x:  # NaN compares false everywhere
                bound = f"{'>=' if low_ok else '>'} {low}" + (f" and <= {high}" if high is not None else "")
                raise ConfigError(f"{section}.{name} = {value!r}: every value must be {bound}")


def validate(cfg: Config) -> None:
    """Every numeric field's range, then cross-field checks that a single override can break."""
    m, s = cfg.model, cfg.schedule
    table = m.forward_tokens_by_memory
    if not all(isinstance(e, tuple) and len(e) == 2 and all(isinstance(x, int) and not isinstance(x, bool) for x in e)
               for e in table):
        raise ConfigError(f"model.forward_tokens_by_memory = {table!r}: expected (GiB, tokens) pairs of integers, "
                          f"e.g. ((64, 98304),), or () to use model.train_forward_tokens everywhere")
    check_ranges(cfg)
    if m.num_heads * m.head_dim != m.model_dim:
        raise ConfigError(f"model.num_heads * model.head_dim ({m.num_heads} * {m.head_dim}) must equal model.model_dim ({m.model_dim})")
    if m.head_dim % 4:
        raise ConfigError("model.head_dim must be a multiple of 4 (half-truncated RoPE rotates head_dim/2 dims in pairs)")
    if m.paired_layers and m.num_heads % 2:
        raise ConfigError("paired-head layers need an even model.num_heads")
    if m.num_scalars < 3 * m.num_layers + 3:
        raise ConfigError(f"model.num_scalars must be at least 3 * num_layers + 3 = {3 * m.num_layers + 3}")
    for name in ("paired_layers", "long_window_layers", "key_offset_layers"):
        bad = [i for i in getattr(m, name) if not 0 <= i < m.num_layers or i in m.no_attention_layers]
        if bad:
            raise ConfigError(f"model.{name} names layers without attention or out of range: {bad}")
    # Any number of phases (jaxrun.schedule.stages), but every per-phase list describes the same ones
    n = len(s.seqs_per_rank)
    found = {"seqs_per_rank": n, "lr_max": len(s.lr_max), "mtp_weights": len(s.mtp_weights), "window_blocks": len(s.window_blocks)}
    if n < 1 or found["lr_max"] != n or found["mtp_weights"] != n or found["window_blocks"] != n + 1:
        raise ConfigError("schedule: seqs_per_rank, lr_max and mtp_weights need one entry per phase (at least one), "
                          "window_blocks one per phase and one for the extension; found "
                          + ", ".join(f"{k} {v}" for k, v in found.items()))
    if cfg.data.num_ranks < 1:
        raise ConfigError("data.num_ranks must be >= 1")


def to_dict(cfg: Config) -> dict:
    return dataclasses.asdict(cfg)


def to_json(cfg: Config) -> str:
    return json.dumps(to_dict(cfg), indent=2)


# Fields that were removed but that a config.json written before still has: they sized a cu_seqlens array that nothing
# read (the model marks documents with seg_ids), so dropping them changes nothing and such a run can still be resumed.
_REMOVED_DATA_KEYS = frozenset({"cu_seqlens_multiple", "cu_seqlens_tokens_per_doc"})


def _with_head_loss(model: dict) -> dict:
    """A config.json from before the head_loss op names four ops: it ran the head and the cross entropy as two ops,
    which is head_loss's xla backend, so a resumed run keeps doing exactly that."""
    backends = model.get("backends")
    if backends is not None and "head_loss" not in {op for op, _ in backends}:
        model = {**model, "backends": (*backends, ("head_loss", "xla"))}
    return model


def from_dict(d: dict) -> Config:
    """Inverse of to_dict (used to reload runs/<name>/config.json on resume); ignores _REMOVED_DATA_KEYS."""
    optim = dict(d["optim"])
    optim["adam_groups"] = tuple((name, AdamGroup(g["lr_mul"], g["wd_mul"], tuple(g["betas"]))) for name, g in optim["adam_groups"])
    sections = {
        "model": ModelConfig(**_with_head_loss({k: _to_tuple(v) for k, v in d["model"].items()})),
        "optim": OptimConfig(**{k: (v if k == "adam_groups" else _to_tuple(v)) for k, v in optim.items()}),
        "schedule": ScheduleConfig(**{k: _to_tuple(v) for k, v in d["schedule"].items()}),
        "data": DataConfig(**{k: v for k, v in d["data"].items() if k not in _REMOVED_DATA_KEYS}),
        "run": RunConfig(**d["run"]),
    }
    return Config(**sections, name=d.get("name", "config"))


__all__ = [
    "AdamGroup",
    "Config",
    "ConfigError",
    "DataConfig",
    "ModelConfig",
    "OptimConfig",
    "RunConfig",
    "ScheduleConfig",
    "apply_overrides",
    "config_from_file",
    "from_dict",
    "load_config",
    "override",
    "to_json",
    "valid_keys",
]
