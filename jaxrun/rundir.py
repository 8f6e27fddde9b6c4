"""The run folder (runs/<name>/): one process owns it at a time, and a new run may reuse it only if it saved nothing.

A run takes an exclusive lock (``fcntl.flock`` on ``.lock-p<process index>``) before it writes anything there and
holds it until it exits. The operating system drops the lock with the process, so the lock of a killed run never
blocks the next one; the file only records who held it last, for the message. Two runs with the same name
therefore cannot interleave their logs or their checkpoints.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from pathlib import Path


class RunDirError(RuntimeError):
    """The run folder cannot be used as asked; the message says why and what to do."""


class RunDirLock:
    def __init__(self, run_dir: Path, process_index: int = 0):
        self.path = Path(run_dir) / f".lock-p{process_index}"
        self._file = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        f = open(self.path, "a+")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            f.seek(0)
            holder = f.read().strip()
            f.close()
            try:
                who = json.loads(holder)
                who = f"process {who['pid']} on {who['host']}, started {who['started']}"
            except (json.JSONDecodeError, KeyError, TypeError):
                who = "another process"
            raise RunDirError(f"{self.path.parent} is in use by {who}: wait for that run to end, or use another "
                              f"--name") from None
        f.seek(0)
        f.truncate()
        f.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                            "started": time.strftime("%Y-%m-%d %H:%M:%S")}))
        f.flush()
        self._file = f

    def release(self) -> None:
        if self._file is not None:
            fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()
            self._file = None


def saved_steps(run_dir: Path) -> list[int]:
    """The step folders orbax completed under runs/<name>/checkpoints (temporary folders of an unfinished save are
    not steps)."""
    directory = Path(run_dir) / "checkpoints"
    if not directory.is_dir():
        return []
    return sorted(int(p.name) for p in directory.iterdir() if p.is_dir() and p.name.isdigit())


def check_new_run(run_dir: Path) -> bool:
    """For a new run: True if the folder exists from an earlier start that saved no checkpoint (it is reused: its log
    and metrics are rewritten); RunDirError if it holds a run with checkpoints."""
    steps = saved_steps(run_dir)
    if steps:
        raise RunDirError(f"{run_dir} already holds a run (checkpoints of steps {', '.join(map(str, steps))}): continue "
                          f"it with --resume {run_dir}, or use another --name")
    run_dir = Path(run_dir)
    return run_dir.is_dir() and any(not p.name.startswith(".lock-p") for p in run_dir.iterdir())


def check_resumable(run_dir: Path) -> None:
    if not (Path(run_dir) / "config.json").is_file():
        raise RunDirError(f"--resume {run_dir}: no config.json there (is it a jaxrun run directory?)")
    if not saved_steps(run_dir):
        raise RunDirError(f"--resume {run_dir}: it holds no checkpoint (the run stopped before its first save). Start it "
                          f"again with the same command without --resume; the folder is reused")
