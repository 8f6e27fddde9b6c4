"""The embedded default: a small model of the record's design on the shipped sample corpus, on CPU, in a few minutes.

Record #60 (configs/record60.py) scaled down: 6 layers instead of 11 with the same kinds of layer in the same order
(paired-head layers, a long-window layer with the key offset that feeds the U-net skip, an attention-free layer that
receives it, the backout source, value embeddings at both ends), width 64, 64-token sequences, 48 steps, and the
shipped sample corpus (tokenized into data/sample_shards/ on first use). Optimizers and the shape of every schedule are
the record's.
"""

import dataclasses
from pathlib import Path

from jaxrun.config import SAMPLE_CORPUS, config_from_file


def get_config():
    base = config_from_file(Path(__file__).with_name("record60.py"))
    d, layers = 64, 6
    model = dataclasses.replace(
        base.model,
        num_layers=layers,
        model_dim=d,
        num_heads=2,
        head_dim=32,
        mlp_hidden=4 * d,
        paired_layers=(0, 4),
        no_attention_layers=(3,),
        long_window_layers=(2, 5),
        key_offset_layers=(2, 5),
        value_embed_layers=((0, 1), (1, 2), (4, 0), (5, 2)),
        skip_from=2,
        skip_to=3,
        backout_from=4,
        num_scalars=24,  # 3 * 6 + 3, padded to a multiple of 8 as the record's 40
        init_attn_bound=3**0.5 * d**-0.5,
        init_fc_bound=3**0.5 * 0.5 * d**-0.5,
        fp8_head=False,  # CPUs have no FP8 matmul; the bf16 head is the eval path of the record
        eval_token_chunk=1024,
        train_forward_tokens=0,  # one rank per forward (the CPU gains nothing from merging them)
        forward_tokens_by_memory=(),  # on a GPU too: record60's table is sized for its model
    )
    schedule = dataclasses.replace(
        base.schedule,
        scheduled_steps=42,  # 45 steps in all: the embedded default finishes within 3 minutes on 2 CPU cores
        extension_steps=3,
        seqs_per_rank=(1, 2, 3),
        seq_len=64,
        window_block_size=16,
        momentum_warmup_steps=8,  # ~300 / 1735 of the schedule, as the record
        momentum_cooldown_start=42,
        momentum_cooldown_steps=3,
    )
    data = dataclasses.replace(
        base.data,
        train_files="data/sample_shards/fineweb_train_*.bin",
        val_file="data/sample_shards/fineweb_val_000000.bin",
        val_tokens=8_192,
        val_seq_len=1024,
        max_doc_len=64,
        tokenize_from=str(SAMPLE_CORPUS),
        tokenize_val_tokens=40_000,
        tokenize_passes=12,  # 45 steps take ~1,100 documents (each capped at 64 tokens); one pass has 371
    )
    run = dataclasses.replace(base.run, val_every=15, log_every=5)
    return dataclasses.replace(base, model=model, schedule=schedule, data=data, run=run, name="tiny")
