"""jaxrun/profiling.py: kernel totals from a hand-written Perfetto trace (the GPU ones come from the bench there)."""

from __future__ import annotations

import gzip
import json

import pytest

from jaxrun import profiling


def _write_trace(path, events):
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wt") as f:
        json.dump({"traceEvents": events}, f)


def test_summarize_totals_device_kernels_by_name_and_kind(tmp_path, capsys):
    meta = [
        {"ph": "M", "pid": 1, "name": "process_name", "args": {"name": "/host:CPU"}},
        {"ph": "M", "pid": 2, "name": "process_name", "args": {"name": "/device:GPU:0"}},
    ]
    kernels = [  # two streams; the second overlaps the first by 5 us
        {"ph": "X", "pid": 2, "tid": 1, "ts": 0, "dur": 10, "name": "flash_attention_fwd"},
        {"ph": "X", "pid": 2, "tid": 1, "ts": 20, "dur": 30, "name": "sm90_xmma_gemm_bf16"},
        {"ph": "X", "pid": 2, "tid": 2, "ts": 45, "dur": 10, "name": "nccl_all_reduce"},
        {"ph": "X", "pid": 2, "tid": 1, "ts": 60, "dur": 20, "name": "flash_attention_fwd"},
        {"ph": "X", "pid": 1, "tid": 9, "ts": 0, "dur": 500, "name": "python step"},  # host: not counted
    ]
    _write_trace(tmp_path / "run" / "plugins" / "profile" / "x" / "perfetto_trace.json.gz", meta + kernels)
    s = profiling.summarize(tmp_path / "run", steps=2)
    assert s["window_us"] == 80 and s["kernel_us"] == 70
    assert s["busy_us"] == 10 + (55 - 20) + 20  # union of [0,10], [20,50] U [45,55], [60,80]
    assert s["by_kind"] == {"attention (triton)": 30.0, "matmul (cuBLAS/cutlass)": 30.0, "collective": 10.0}
    assert s["by_name"][0] == {"name": "flash_attention_fwd", "kind": "attention (triton)", "count": 2, "us": 30.0}
    profiling.print_summary(s)
    out = capsys.readouterr().out
    assert "busy 0.03 ms (idle 0.01 ms)" in out and "[collective] nccl_all_reduce" in out


def test_errors_name_the_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match="--profile"):
        profiling.find_trace(tmp_path)
    _write_trace(tmp_path / "perfetto_trace.json.gz", [{"ph": "X", "pid": 1, "ts": 0, "dur": 1, "name": "cpu"}])
    with pytest.raises(ValueError, match="no device kernel events"):
        profiling.summarize(tmp_path)
