"""FineWeb-10B GPT-2 shards from the Hugging Face Hub: `python -m jaxrun.data fineweb --train-shards N [--dir DIR]`.

The same files the PyTorch speedrun downloads (its data/cached_fineweb10B.py): dataset repo "kjj0/fineweb10B-gpt2",
files ``fineweb_val_000000.bin`` and ``fineweb_train_000001.bin`` ... at the repository's top level. Files already
present with a valid header and size are kept. Without a network this fails within seconds and says how to tokenize
local text instead.
"""

from __future__ import annotations

import os
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path

from tqdm import tqdm

from jaxrun.data.errors import DataError
from jaxrun.data.shards import check_shard, train_shard_name, val_shard_name

REPO_ID = "kjj0/fineweb10B-gpt2"
REPO_TYPE = "dataset"
DEFAULT_DIR = "data/fineweb10B"
HUB_ENDPOINT = "https://huggingface.co"
CONNECT_TIMEOUT_S = 3.0
OFFLINE_HINT = "To train on local text instead, tokenize it: python -m jaxrun.data tokenize CORPUS.jsonl.xz OUT_DIR"

Downloader = Callable[[Sequence[str], Path], None]


def fineweb_filenames(train_shards: int) -> list[str]:
    """The validation shard and the first ``train_shards`` training shards (numbered from 1)."""
    return [val_shard_name(), *(train_shard_name(i) for i in range(1, train_shards + 1))]


def _probe(url: str, timeout: float) -> str | None:
    """None if ``url`` answers an HTTP HEAD request within ``timeout`` seconds (any status), else why not."""
    outcome: list[str | None] = []

    def attempt() -> None:
        try:
            urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout).close()
            outcome.append(None)
        except urllib.error.HTTPError:
            outcome.append(None)  # the server answered
        except (OSError, ValueError) as err:
            outcome.append(str(getattr(err, "reason", err)) or type(err).__name__)

    # Name lookup ignores socket timeouts, so the attempt runs in a daemon thread that is abandoned when it hangs.
    thread = threading.Thread(target=attempt, daemon=True)
    thread.start()
    thread.join(timeout)
    return outcome[0] if outcome else f"no answer within {timeout:.0f}s"


def check_online(timeout: float = CONNECT_TIMEOUT_S) -> None:
    """Fail fast, with advice, when the Hub does not answer (HF_HUB_OFFLINE, no route, no name resolution, a proxy
    that swallows connections). urllib honours HTTPS_PROXY like huggingface_hub does."""
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        raise DataError(f"cannot download FineWeb shards: HF_HUB_OFFLINE is set. {OFFLINE_HINT}")
    endpoint = os.environ.get("HF_ENDPOINT") or HUB_ENDPOINT
    why = _probe(endpoint, timeout)
    if why is not None:
        raise DataError(f"cannot reach the Hugging Face Hub at {endpoint}: {why}. No network? {OFFLINE_HINT}")


def download_from_hub(filenames: Sequence[str], directory: Path) -> None:
    """Download files of the FineWeb repo into ``directory`` through huggingface_hub (checks connectivity first)."""
    check_online()
    from huggingface_hub import hf_hub_download  # imported here: slow to import, and only this needs it

    directory.mkdir(parents=True, exist_ok=True)
    endpoint = os.environ.get("HF_ENDPOINT") or HUB_ENDPOINT
    for name in tqdm(filenames, desc="fineweb", unit=" shard"):
        try:
            hf_hub_download(repo_id=REPO_ID, filename=name, repo_type=REPO_TYPE, local_dir=directory)
        except Exception as err:  # noqa: BLE001 - huggingface_hub's HTTP, entry and cache errors: one clear line
            first = (str(err).strip().splitlines() or [""])[0][:300]
            raise DataError(
                f"could not download {name} of {REPO_ID} from {endpoint} ({type(err).__name__}: {first}). The shards "
                f"already downloaded stay in {directory}; check HF_ENDPOINT and the network, then run the command again. "
                f"{OFFLINE_HINT}"
            ) from err


def _valid(path: Path) -> bool:
    try:
        check_shard(path)
    except DataError:
        return False
    return True


def fetch_fineweb(train_shards: int, directory: str | Path = DEFAULT_DIR, download: Downloader = download_from_hub,
                  announce: Callable[[str], None] = print) -> list[Path]:
    """Make sure ``directory`` holds valid val + ``train_shards`` train shards; download only what is missing or broken."""
    if train_shards < 1:
        raise DataError(f"--train-shards must be >= 1, got {train_shards}")
    directory = Path(directory)
    paths = [directory / name for name in fineweb_filenames(train_shards)]
    broken = [p for p in paths if p.exists() and not _valid(p)]
    for path in broken:
        announce(f"{path} is not a valid shard (bad header or size): downloading it again")
        path.unlink()
    needed = [p.name for p in paths if not p.exists()]
    if needed:
        announce(f"downloading {len(needed)} of {len(paths)} FineWeb shard(s) from {REPO_ID} into {directory}")
        download(needed, directory)
        for path in paths:
            check_shard(path)
    announce(f"{directory}: val + {train_shards} train shard(s) present and valid")
    return paths
