"""The embedded default: a small model of the record's shape on the shipped sample corpus, on CPU, in a few minutes.

Same layer map, optimizers and schedule shape as record #60 (configs/record60.py); smaller width, shorter sequences,
fewer steps, and the shipped sample corpus (tokenized into data/sample_shards/ on first use).
"""

import dataclasses
from pathlib import Path

from jaxrun.config import config_from_file


def get_config():
    base = config_from_file(Path(__file__).with_name("record60.py"))
    d = 128
    model = dataclasses.replace(
        base.model,
        model_dim=d,
        num_heads=2,
        head_dim=64,
        mlp_hidden=4 * d,
        init_attn_bound=3**0.5 * d**-0.5,
        init_fc_bound=3**0.5 * 0.5 * d**-0.5,
        fp8_head=False,  # CPUs have no FP8 matmul; the bf16 head is the eval path of the record
        eval_token_chunk=2048,
    )
    schedule = dataclasses.replace(
        base.schedule,
        scheduled_steps=150,
        extension_steps=10,
        seqs_per_rank=(1, 2, 3),
        seq_len=256,
        window_block_size=16,
        momentum_warmup_steps=26,
        momentum_cooldown_start=145,
        momentum_cooldown_steps=15,
    )
    data = dataclasses.replace(
        base.data,
        train_files="data/sample_shards/fineweb_train_*.bin",
        val_file="data/sample_shards/fineweb_val_000000.bin",
        val_tokens=32_768,
        val_seq_len=2048,
        max_doc_len=256,
        tokenize_from="data/sample/sample.jsonl.xz",
        tokenize_val_tokens=40_000,
        tokenize_passes=12,  # 160 steps take 3,920 documents (each capped at 256 tokens); one pass has 371
    )
    run = dataclasses.replace(base.run, val_every=25, log_every=10)
    return dataclasses.replace(base, model=model, schedule=schedule, data=data, run=run, name="tiny")
