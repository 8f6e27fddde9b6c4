"""`python -m jaxrun.data tokenize INPUT... OUT_DIR` and `python -m jaxrun.data fineweb --train-shards N [--dir DIR]`."""

from __future__ import annotations

import argparse
import sys

from jaxrun.config import CONFIG_DIR, config_from_file
from jaxrun.data.errors import DataError
from jaxrun.data.fineweb import DEFAULT_DIR, fetch_fineweb
from jaxrun.data.tokenize import DEFAULT_SHARD_TOKENS, tokenize_corpus


def _default_val_tokens() -> int:
    # The record's validation reads val_tokens + 1 tokens; the PyTorch reference's loader wants one more
    # (its `pos + num_tokens + 1 >= len(tokens)` check), so shards made here serve both.
    return config_from_file(CONFIG_DIR / "record60.py").data.val_tokens + 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m jaxrun.data", description="Make token shards (recipe §5.1).")
    commands = parser.add_subparsers(dest="command", required=True)

    tok = commands.add_parser("tokenize", help="tokenize .txt / .jsonl / .jsonl.xz files into val + train shards")
    tok.add_argument("paths", nargs="+", metavar="INPUT... OUT_DIR", help="input files, then the output directory")
    tok.add_argument("--val-tokens", type=int, default=None,
                     help="the first documents, until at least this many tokens, form the validation shard "
                          "(default: the record's val_tokens + 2)")
    tok.add_argument("--shard-tokens", type=int, default=DEFAULT_SHARD_TOKENS, help="tokens per training shard (default %(default)s)")
    tok.add_argument("--passes", type=int, default=1,
                     help="write the training documents K times: pass 0 in corpus order, each later pass reshuffled (default 1)")
    tok.add_argument("--seed", type=int, default=0, help="seed of the reshuffled passes (default 0)")
    tok.add_argument("--workers", type=int, default=None, help="encoding processes (default: all cores)")

    fw = commands.add_parser("fineweb", help="download FineWeb-10B GPT-2 shards (kjj0/fineweb10B-gpt2) from the Hugging Face Hub")
    fw.add_argument("--train-shards", type=int, required=True,
                    help="number of training shards (100M tokens each; the record reads ~6, 9 is customary)")
    fw.add_argument("--dir", default=DEFAULT_DIR, help="where the shards go (default %(default)s)")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "tokenize":
            if len(args.paths) < 2:
                parser.error("tokenize needs at least one INPUT and an OUT_DIR")
            *inputs, out_dir = args.paths
            val_tokens = _default_val_tokens() if args.val_tokens is None else args.val_tokens
            tokenize_corpus(inputs, out_dir, val_tokens=val_tokens, shard_tokens=args.shard_tokens, passes=args.passes,
                            seed=args.seed, workers=args.workers, progress=True, announce=print)
        else:
            fetch_fineweb(args.train_shards, args.dir)
    except DataError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
