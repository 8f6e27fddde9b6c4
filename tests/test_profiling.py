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


def test_optimizer_kernels_are_one_kind_and_phases_make_one_table(tmp_path, capsys):
    meta = [{"ph": "M", "pid": 2, "name": "process_name", "args": {"name": "/device:GPU:0"}}]
    grad = {"hlo_module": "jit_local"}
    kernels = [
        {"ph": "X", "pid": 2, "tid": 1, "ts": 0, "dur": 40, "name": "_ce_backward_kernel", "args": grad},
        {"ph": "X", "pid": 2, "tid": 1, "ts": 50, "dur": 30, "name": "nvjet_sm90_tst_128x128", "args": grad},
        {"ph": "X", "pid": 2, "tid": 1, "ts": 80, "dur": 20, "name": "nvjet_sm90_tst_128x128", "args": {"hlo_module": "jit_update"}},
    ]
    _write_trace(tmp_path / "a" / "perfetto_trace.json.gz", meta + kernels)
    _write_trace(tmp_path / "b" / "perfetto_trace.json.gz", meta + kernels[:2])
    s = profiling.summarize(tmp_path / "a", steps=2)
    assert s["by_kind"] == {"cross entropy (triton)": 40.0, "matmul (cuBLAS/cutlass)": 30.0,
                            profiling.OPTIMIZER_KIND: 20.0}
    assert {r["name"] for r in s["by_name"]} == {"_ce_backward_kernel", "nvjet_sm90_tst_128x128",
                                                 "nvjet_sm90_tst_128x128 (update)"}
    out = tmp_path / "table.md"
    profiling.main([str(tmp_path / "a"), str(tmp_path / "b"), "--steps", "2", "--labels", "p1,p2", "--markdown", str(out)])
    lines = out.read_text().splitlines()
    assert lines[0] == "| kind | p1 ms | share | p2 ms | share |"
    # a: 90 us of kernels over 2 steps in a 100 us window (idle 10 us); b: no optimizer kernels, 70 us in 80
    assert "| cross entropy (triton) | 0.02 | 44.4% | 0.02 | 57.1% |" in lines
    assert f"| {profiling.OPTIMIZER_KIND} | 0.01 | 22.2% | 0.00 | 0.0% |" in lines
    assert "| idle inside the window (host gaps) | 0.01 | 10.0% | 0.01 | 12.5% |" in lines
    with pytest.raises(SystemExit):
        profiling.main([str(tmp_path / "a"), "--labels", "x,y"])
