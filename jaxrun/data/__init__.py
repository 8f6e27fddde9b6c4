"""The data layer: token shards (recipe §5.1), tokenizing and downloading them, and the training / validation batches.

    ensure_shards(cfg.data)                  # validate, or tokenize data.tokenize_from on first use, or say what to run
    loader = TrainLoader(cfg.data, ranks)    # BOS-aligned batches (recipe §5.2): loader.next_batch(tokens_per_rank)
    val = val_batches(cfg.data, ranks)       # validation chunks (recipe §2.2, §5.3)

Command line: `python -m jaxrun.data tokenize ...` and `python -m jaxrun.data fineweb ...` (see __main__).

Names are imported on first use: the loader needs grain (which imports JAX, seconds), the command line and the
tokenizer's worker processes do not.
"""

import importlib

_EXPORTS = {
    "DataError": "errors",
    "ShardFiles": "ensure",
    "ensure_shards": "ensure",
    "fetch_fineweb": "fineweb",
    "TrainLoader": "loader",
    "check_shard": "shards",
    "read_shard": "shards",
    "write_shard": "shards",
    "TokenizeSummary": "tokenize",
    "tokenize_corpus": "tokenize",
    "gpt2_encoding": "tokenizer",
    "ValBatches": "validation",
    "val_batches": "validation",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)


def __dir__() -> list[str]:
    return __all__
