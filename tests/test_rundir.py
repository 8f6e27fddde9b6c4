"""The run folder (jaxrun/rundir.py): one owner at a time, a dead owner's lock does not block, reuse rules."""

import signal
import subprocess
import sys
import time

import pytest

from jaxrun.rundir import RunDirError, RunDirLock, check_new_run, check_resumable, saved_steps

HOLDER = """
import sys, time
from jaxrun.rundir import RunDirLock
lock = RunDirLock(sys.argv[1])
lock.acquire()
print("locked", flush=True)
time.sleep(120)
"""


def test_a_second_owner_is_refused_with_who_holds_it(tmp_path):
    run = tmp_path / "runs" / "x"
    first = RunDirLock(run)
    first.acquire()
    try:
        with pytest.raises(RunDirError, match=r"is in use by process \d+ on .*started .*another --name"):
            RunDirLock(run).acquire()  # another open file description: flock conflicts even within one process
        RunDirLock(run, process_index=1).acquire()  # another process of the same multi-host run has its own lock
    finally:
        first.release()
    again = RunDirLock(run)
    again.acquire()  # released: free again
    again.release()


def test_the_lock_of_a_killed_process_does_not_block(tmp_path):
    run = tmp_path / "runs" / "y"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(run)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunDirError, match=f"process {holder.pid}"):
            RunDirLock(run).acquire()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
    deadline = time.time() + 10
    lock = RunDirLock(run)
    lock.acquire()  # the kernel dropped the dead process's lock; the file with its pid is still there
    lock.release()
    assert time.time() < deadline


def test_which_folders_a_new_run_or_a_resume_may_use(tmp_path):
    run = tmp_path / "r"
    assert check_new_run(run) is False  # nothing there yet
    RunDirLock(run).acquire()  # the lock file alone (this run's own) is not an earlier start
    assert check_new_run(run) is False
    (run / "checkpoints" / "12.orbax-checkpoint-tmp-1").mkdir(parents=True)  # a save that never finished
    (run / "log.txt").write_text("step:0/10 val_loss:10.0 train_time:0ms step_avg:0.00ms\n")
    assert saved_steps(run) == []
    assert check_new_run(run) is True  # reused: it saved nothing
    with pytest.raises(RunDirError, match="no config.json"):
        check_resumable(run)
    (run / "config.json").write_text("{}")
    with pytest.raises(RunDirError, match="holds no checkpoint .* without --resume"):
        check_resumable(run)
    (run / "checkpoints" / "4").mkdir()
    (run / "checkpoints" / "8").mkdir()
    assert saved_steps(run) == [4, 8]
    with pytest.raises(RunDirError, match=r"already holds a run \(checkpoints of steps 4, 8\): continue it with --resume"):
        check_new_run(run)
    check_resumable(run)
