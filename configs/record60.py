"""Record #60 of the modded-nanogpt speedrun (1.765 min on 8xH100), number by number from docs/recipe.md.

Every number of the recipe lives here; the library code reads it from this object.
"""

import math

from jaxrun.config import AdamGroup, Config, DataConfig, ModelConfig, OptimConfig, RunConfig, ScheduleConfig

D = 768

MODEL = ModelConfig(
    vocab_size=50304,  # next multiple of 128 >= 50257 (recipe §1.1)
    num_layers=11,
    model_dim=D,
    num_heads=6,
    head_dim=128,
    mlp_hidden=4 * D,
    gate_dim=12,
    paired_layers=(0, 2, 5, 9),  # recipe §1.2 / §1.6
    no_attention_layers=(6,),
    long_window_layers=(3, 10),
    key_offset_layers=(3, 10),  # [NOTE] recipe §1.5.4: dims 32:64 and 96:128, the #58-#61 behaviour
    value_embed_layers=((0, 1), (1, 2), (8, 0), (9, 1), (10, 2)),  # the ".12 ... 012" pattern
    num_value_embeds=3,
    skip_from=3,
    skip_to=6,
    backout_from=7,
    num_scalars=40,  # 3*11 + 3, padded to a multiple of 8 ranks (recipe §1.3)
    init_attn_bound=math.sqrt(3) * D**-0.5,  # = 1/16
    init_fc_bound=math.sqrt(3) * 0.5 * D**-0.5,  # = 1/32
    init_lm_head_std=0.005,
    init_resid_lambda=1.1,
    init_sa_lambda=(0.5, 1.0),
    init_smear_lambda=0.0,
    init_backout_lambda=0.5,
    init_skip_lambda=-1.5,
    init_scalar_pad=1.0,
    rms_eps=1.1920929e-07,  # float32 eps (recipe §1.1)
    rope_min_freq=1 / 1024,
    softcap=(23.0, 5.0, 7.5),  # z = 23 * sigmoid((l + 5) / 7.5) (recipe §1.10)
    fp8_scales=(100 / 448, 1.6 / 448, 0.75 / 448),  # x, w, grad (recipe §1.9)
    fp8_head=True,
    eval_token_chunk=16384,
    # the fastest measured backend per op on this GPU (jaxrun/assets/auto_backends.json, or what
    # `python -m jaxrun.bench ops` recorded here); xla on a CPU
    backends=(("attention", "auto"), ("lm_head", "auto"), ("mlp", "auto"), ("cross_entropy", "auto"),
              ("head_loss", "auto")),
    # up to 65,536 tokens of a device's virtual ranks in one forward: on one GPU 4 / 2 / 1 ranks per forward in phases
    # 1 / 2 / 3 (on 8 GPUs, one rank each, as the reference). Measured on an H200: phase 1 -8.7%, phase 2 -6.1%, the
    # same curve (step 300: 3.0577 against 3.0564), peak 34.9 GB (docs/results/2026-12-01-h200-merged-ranks).
    # 0 runs one rank per forward.
    train_forward_tokens=65536,
    # 98,304 (2 ranks per forward in phase 3 and the extension) where jax's preallocated pool holds 64 GiB
    # (engine.forward_tokens_for_memory; jax preallocates 75% of a GPU unless told not to, 105 GiB on an H200): 1.3%
    # faster there in the training loop, same curve (step 300 of a 260-step schedule: 2.4799 against 2.4813), peak
    # 52.6 GB against 34.9 (docs/results/2026-12-03-h200-fourteenth). Its 46.9 GiB scratch did not fit after phases 1-2
    # with preallocation off (docs/results/2026-12-02-h200-compile), hence the preallocated pool. 131,072 in phases 1-2
    # (8 / 4 ranks per forward) was measured at 1.002 / 0.992 of 65,536 for a 67.7 GB peak: not taken. Below 64 GiB
    # (an 80 GB GPU at 75%), 65,536 everywhere.
    forward_tokens_by_memory=((64, 98304),),
)

_SMALL = (0.9, 0.99)
OPTIM = OptimConfig(
    muon_lr=0.023,
    muon_momentum_range=(0.85, 0.95),
    muon_beta2=0.95,
    muon_weight_decay=1.2,
    muon_lr_muls=(("qkvo", 1.0), ("fc", 1.0), ("proj", 2.0)),
    polar_express_coeffs=(
        (8.156554524902461, -22.48329292557795, 15.878769915207462),
        (4.042929935166739, -2.808917465908714, 0.5000178451051316),
        (3.8916678022926607, -2.772484153217685, 0.5060648178503393),
        (3.285753657755655, -2.3681294933425376, 0.46449024233003106),
        (2.3465413258596377, -1.7097828382687081, 0.42323551169305323),
    ),
    polar_express_norm_scale=1.02,
    polar_express_eps=1e-6,
    normuon_eps=1e-10,
    adam_lr=0.008,
    adam_eps=1e-10,
    adam_weight_decay=0.005,
    adam_groups=(
        ("lm_head", AdamGroup(1.0, 150.0, (0.5, 0.95))),
        ("embed", AdamGroup(1.0, 150.0, (0.5, 0.95))),
        ("ve", AdamGroup(75.0, 5.0, (0.75, 0.95))),
        ("attn_gate_bank", AdamGroup(1.0, 1.0, _SMALL)),
        ("ve_gate_bank", AdamGroup(1.0, 1.0, _SMALL)),
        ("smear_gate", AdamGroup(0.01, 0.0, _SMALL)),
        ("skip_gate", AdamGroup(0.05, 0.0, _SMALL)),
        ("x0_lambdas", AdamGroup(5.0, 0.0, (0.65, 0.95))),
        ("scalars", AdamGroup(5.0, 0.0, _SMALL)),
    ),
)

SCHEDULE = ScheduleConfig(
    scheduled_steps=1735,
    extension_steps=40,
    seqs_per_rank=(8, 16, 24),  # x 2048 tokens: 16,384 / 32,768 / 49,152 per rank (recipe §4)
    seq_len=2048,
    window_blocks=((1, 3), (3, 7), (5, 11), (6, 13)),
    window_block_size=128,
    final_eval_long_window=20,
    lr_max=(1.0, 1.52, 1.73),
    lr_floor=0.1,
    cooldown_frac=0.5,
    momentum_warmup_steps=300,
    momentum_cooldown_start=1725,
    momentum_cooldown_steps=50,
    momentum_cooldown_drop=0.10,
    mtp_weights=((1.0, 0.5, 0.25), (1.0, 0.5), (1.0,)),
    attn_scale_init=0.1,
    yarn_attn_factor=0.2,
    yarn_alpha=1.0,
    yarn_beta=32.0,
)

DATA = DataConfig(
    train_files="data/fineweb10B/fineweb_train_*.bin",
    val_file="data/fineweb10B/fineweb_val_000000.bin",
    val_tokens=10_485_760,
    val_seq_len=262_144,
    num_ranks=8,
    max_doc_len=2048,
    bos_token=50256,
)

RUN = RunConfig(
    name="",
    out_dir="runs",
    seed=0,
    val_every=250,
    checkpoint_every=0,
    log_every=1,
    compile_cache_dir="~/.cache/jaxrun/jax_compilation_cache",
    lowering_cache_dir="~/.cache/jaxrun/lowered",  # traced step functions (jax.export): a cached start skips tracing
    target_val_loss=3.28,
)


def get_config() -> Config:
    return Config(model=MODEL, optim=OPTIM, schedule=SCHEDULE, data=DATA, run=RUN, name="record60")
