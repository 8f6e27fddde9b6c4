"""`fineweb` download: fails fast and clearly offline; keeps valid files and re-fetches missing or broken ones."""

import os
import subprocess
import sys
import time

import numpy as np
import pytest

from jaxrun.config import REPO_ROOT
from jaxrun.data import DataError, check_shard, fetch_fineweb, write_shard
from jaxrun.data import fineweb

NAMES = ["fineweb_val_000000.bin", "fineweb_train_000001.bin", "fineweb_train_000002.bin", "fineweb_train_000003.bin"]


def test_filenames_are_the_reference_layout():
    # data/cached_fineweb10B.py of the PyTorch speedrun: val shard 0, train shards from 1, at the repo's top level.
    assert fineweb.fineweb_filenames(3) == NAMES
    assert (fineweb.REPO_ID, fineweb.REPO_TYPE) == ("kjj0/fineweb10B-gpt2", "dataset")


@pytest.fixture
def no_hub(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HTTPS_PROXY", raising=False)
    monkeypatch.delenv("https_proxy", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "https://hub.invalid")  # RFC 2606: never resolves, wherever the tests run


def test_offline_fails_fast_with_the_tokenize_hint(tmp_path, no_hub):
    start = time.perf_counter()
    with pytest.raises(DataError) as err:
        fetch_fineweb(1, tmp_path / "fw", announce=lambda _: None)
    assert time.perf_counter() - start < 10
    assert "cannot reach the Hugging Face Hub at https://hub.invalid" in str(err.value)
    assert "python -m jaxrun.data tokenize" in str(err.value)
    assert not (tmp_path / "fw").exists()


def test_hf_hub_offline_is_respected(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DataError, match="HF_HUB_OFFLINE is set.*python -m jaxrun.data tokenize"):
        fetch_fineweb(1, tmp_path / "fw", announce=lambda _: None)


def test_unanswered_connection_gives_up_after_the_timeout(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HTTPS_PROXY", raising=False)
    monkeypatch.delenv("https_proxy", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "https://10.255.255.1")  # non-routable: the attempt hangs, is refused or fails TLS, never a Hub answer
    start = time.perf_counter()
    with pytest.raises(DataError, match="cannot reach the Hugging Face Hub"):
        fineweb.check_online(timeout=1.0)
    assert time.perf_counter() - start < 3


def test_command_line_offline(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "HTTPS_PROXY", "https_proxy")}
    env.update(HF_ENDPOINT="https://hub.invalid", PYTHONPATH=str(REPO_ROOT))
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "jaxrun.data", "fineweb", "--train-shards", "2", "--dir", str(tmp_path)],
                          capture_output=True, text=True, env=env, timeout=60)
    assert time.perf_counter() - start < 20
    assert done.returncode == 2 and "error: cannot reach the Hugging Face Hub" in done.stderr and "tokenize" in done.stderr


class FakeHub:
    def __init__(self, content=np.array([50256, 1, 2])):
        self.calls = []
        self.content = content

    def __call__(self, filenames, directory):
        self.calls.append(list(filenames))
        for name in filenames:
            write_shard(directory / name, self.content)


def test_valid_files_are_kept_missing_and_broken_ones_fetched(tmp_path):
    write_shard(tmp_path / NAMES[0], np.array([50256, 7]))
    write_shard(tmp_path / NAMES[1], np.array([50256, 8]))
    (tmp_path / NAMES[3]).write_bytes(b"\0" * 2000)  # wrong magic
    hub, lines = FakeHub(), []
    paths = fetch_fineweb(3, tmp_path, download=hub, announce=lines.append)
    assert hub.calls == [[NAMES[2], NAMES[3]]]
    assert [p.name for p in paths] == NAMES and all(check_shard(p) for p in paths)
    assert check_shard(tmp_path / NAMES[0]) == 2  # the valid files were not replaced
    assert any("not a valid shard" in line and NAMES[3] in line for line in lines)
    fetch_fineweb(3, tmp_path, download=hub, announce=lines.append)
    assert len(hub.calls) == 1  # everything present and valid: nothing downloaded, no network needed


def test_a_bad_download_is_reported(tmp_path):
    def truncating(filenames, directory):
        for name in filenames:
            write_shard(directory / name, np.array([50256, 1]))
            with open(directory / name, "ab") as f:
                f.write(b"\0")

    with pytest.raises(DataError, match="fineweb_val_000000.bin is too long"):
        fetch_fineweb(1, tmp_path, download=truncating, announce=lambda _: None)


def test_hub_downloader_asks_for_top_level_files_of_the_dataset_repo(tmp_path, monkeypatch):
    import huggingface_hub

    calls = []
    monkeypatch.setattr(fineweb, "check_online", lambda: None)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", lambda **kw: calls.append(kw))
    fineweb.download_from_hub(NAMES[:2], tmp_path / "fw")
    assert calls == [dict(repo_id="kjj0/fineweb10B-gpt2", filename=name, repo_type="dataset", local_dir=tmp_path / "fw") for name in NAMES[:2]]


def test_train_shards_must_be_positive(tmp_path):
    with pytest.raises(DataError, match="--train-shards must be >= 1"):
        fetch_fineweb(0, tmp_path)


def test_a_hub_that_answers_404_gives_one_clear_line(tmp_path):
    """HF_ENDPOINT pointing at a server that answers 404 to everything: one `error:` line naming the file, the
    endpoint and what to do, exit 2, no traceback."""
    import http.server
    import threading

    class NotFound(http.server.BaseHTTPRequestHandler):
        def _answer(self):
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()

        do_GET = do_HEAD = _answer

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), NotFound)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    endpoint = f"http://127.0.0.1:{server.server_address[1]}"
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "HTTPS_PROXY", "https_proxy", "HTTP_PROXY",
                                                             "http_proxy")}
    env.update(HF_ENDPOINT=endpoint, HF_HOME=str(tmp_path / "hf"), PYTHONPATH=str(REPO_ROOT), NO_PROXY="127.0.0.1")
    try:
        done = subprocess.run([sys.executable, "-m", "jaxrun.data", "fineweb", "--train-shards", "1", "--dir",
                               str(tmp_path / "fw")], capture_output=True, text=True, env=env, timeout=120)
    finally:
        server.shutdown()
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert f"error: could not download fineweb_val_000000.bin of kjj0/fineweb10B-gpt2 from {endpoint}" in done.stderr
