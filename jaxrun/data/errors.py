"""The one exception type of the data layer: every message names the file or setting at fault and what to do."""

from pathlib import Path


class DataError(ValueError):
    """Missing, malformed or exhausted data; the message says what was wrong and how to fix it."""


def make_shards_hint(directory: str | Path) -> str:
    """The commands that create shards in ``directory``."""
    return (
        f"make them with `python -m jaxrun.data fineweb --train-shards 9 --dir {directory}` (FineWeb, needs the network) "
        f"or `python -m jaxrun.data tokenize CORPUS.jsonl.xz {directory}` (any local text)"
    )
