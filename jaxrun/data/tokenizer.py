"""The GPT-2 BPE tokenizer, built offline from the ranks shipped in jaxrun/assets (nothing is ever fetched)."""

from __future__ import annotations

import base64
import functools
import hashlib
from pathlib import Path

import tiktoken

from jaxrun.data.errors import DataError

RANKS_FILE = Path(__file__).resolve().parent.parent / "assets" / "gpt2.tiktoken"
RANKS_SHA256 = "306cd27f03c1a714eca7108e03d66b7dc042abe8c258b44c199a7ed9838dd930"  # jaxrun/assets/README.md
# tiktoken's "gpt2" split pattern.
GPT2_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
EOT = "<|endoftext|>"
EOT_ID = 50256  # the last GPT-2 id; the data's document delimiter is data.bos_token (the same id in every config)
N_VOCAB = 50257


def _load_ranks(path: Path) -> dict[bytes, int]:
    # tiktoken.load.load_tiktoken_bpe would do this too, but it also copies the file into a cache under /tmp.
    contents = path.read_bytes()
    if hashlib.sha256(contents).hexdigest() != RANKS_SHA256:
        raise DataError(f"{path} is not the shipped GPT-2 BPE file (sha256 mismatch); restore it from git")
    ranks = {}
    for line in contents.splitlines():
        if line:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    return ranks


@functools.cache
def gpt2_encoding() -> tiktoken.Encoding:
    """tiktoken's "gpt2" Encoding (50,257 tokens, <|endoftext|> = 50256). Encode documents with encode_ordinary."""
    return tiktoken.Encoding(
        name="gpt2",
        pat_str=GPT2_PATTERN,
        mergeable_ranks=_load_ranks(RANKS_FILE),
        special_tokens={EOT: EOT_ID},
        explicit_n_vocab=N_VOCAB,
    )
