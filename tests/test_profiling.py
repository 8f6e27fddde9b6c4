"""jaxrun/profiling.py: kernel totals from a hand-written Perfetto trace (the GPU ones come from the bench there)."""

from __future__ import annotations

import gzip
import json
import os

import jax
import jax.numpy as jnp
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


def scaled_sine(x):
    return jnp.sin(x) * 3.0


def test_hlo_sources_name_the_function_and_pass_of_each_instruction():
    """A real compiled module (this CPU's): its stack frames name the function, transpose(...) marks the backward."""
    compiled = jax.jit(jax.value_and_grad(lambda x: jnp.sum(scaled_sine(x) ** 2))).lower(jnp.ones(64)).compile()
    sources = profiling.hlo_sources(compiled.as_text())
    assert "scaled_sine fwd" in sources.values() and "scaled_sine bwd" in sources.values()
    # two modules in one text (the optimizer's variants are saved together): each is read with its own tables
    other = jax.jit(lambda x: jnp.cos(x) + 1).lower(jnp.ones(8)).compile().as_text()
    both = profiling.hlo_sources(compiled.as_text() + "\n" + other)
    assert {k: v for k, v in sources.items()}.items() <= both.items()


def test_kernels_are_attributed_through_the_saved_hlo(tmp_path, capsys):
    hlo = """HloModule jit_local

FileNames
1 "model.py"

FunctionNames
1 "rms_norm"
2 "smear"

FileLocations
1 {file_name_id=1 function_name_id=1 line=10 end_line=10 column=1 end_column=2}
2 {file_name_id=1 function_name_id=2 line=20 end_line=20 column=1 end_column=2}

StackFrames
1 {file_location_id=1 parent_frame_id=1}
2 {file_location_id=2 parent_frame_id=1}

ENTRY %main {
  %loop_add_fusion.2 = f32[4]{0} fusion(%p), kind=kLoop, calls=%c, metadata={op_name="jit(local)/jvp(f)/add" stack_frame_id=1}
  %custom-call.7 = bf16[4,4]{1,0} custom-call(%a, %b), custom_call_target="__cublas$lt$matmul", metadata={op_name="jit(local)/jvp(f)/dot_general" stack_frame_id=2}
  ROOT %input_reduce_fusion = f32[] fusion(%q), kind=kInput, calls=%d, metadata={op_name="jit(local)/transpose(jvp(f))/reduce_sum" stack_frame_id=2}
}
"""
    meta = [{"ph": "M", "pid": 2, "name": "process_name", "args": {"name": "/device:GPU:0"}}]
    kernels = [
        {"ph": "X", "pid": 2, "tid": 1, "ts": 0, "dur": 30, "name": "loop_add_fusion_2", "args": {"hlo_module": "jit_local"}},
        {"ph": "X", "pid": 2, "tid": 1, "ts": 30, "dur": 20, "name": "input_reduce_fusion", "args": {"hlo_module": "jit_local"}},
        {"ph": "X", "pid": 2, "tid": 1, "ts": 50, "dur": 50, "name": "nvjet_sm90_gemm", "args": {"hlo_module": "jit_local"}},
        # a GEMM launched by its own instruction (no CUDA graph): attributed through hlo_op
        {"ph": "X", "pid": 2, "tid": 1, "ts": 100, "dur": 40, "name": "nvjet_sm90_gemm",
         "args": {"hlo_module": "jit_local", "hlo_op": "custom-call.7"}},
    ]
    _write_trace(tmp_path / "p" / "plugins" / "perfetto_trace.json.gz", meta + kernels)
    profiling.save_hlo(tmp_path / "p", hlo, [])
    s = profiling.summarize(tmp_path / "p")
    assert profiling.attribute(s, tmp_path / "p") == {profiling.UNATTRIBUTED: 50.0, "smear fwd": 40.0,
                                                      "rms_norm fwd": 30.0, "smear bwd": 20.0}
    assert profiling.attribute(s, tmp_path) is None  # no HLO saved there
    out = tmp_path / "t.md"
    profiling.main([str(tmp_path / "p"), "--markdown", str(out), "--labels", "phase 1"])
    text = out.read_text()
    assert "| rms_norm fwd | 0.03 |" in text and "| smear bwd | 0.02 |" in text
    assert "rms_norm fwd" in capsys.readouterr().out


HLO_COSTS = """HloModule jit_local

%fused_dot (p0: bf16[64,32], p1: bf16[16,32]) -> f32[64,16] {
  %p0 = bf16[64,32]{1,0} parameter(0)
  %p1 = bf16[16,32]{1,0} parameter(1)
  ROOT %dot.1 = f32[64,16]{1,0} dot(%p0, %p1), lhs_contracting_dims={1}, rhs_contracting_dims={1}
}

ENTRY %main {
  %a = bf16[128,256]{1,0} parameter(0)
  %b = bf16[512,256]{1,0} parameter(1)
  %x = f32[1000]{0} parameter(2)
  %loop_add_fusion.2 = f32[1000]{0} fusion(%x, %x), kind=kLoop, calls=%c
  %custom-call.7 = (bf16[128,512]{1,0}, s8[33554432]{0}) custom-call(%a, %b), custom_call_target="__cublas$lt$matmul", backend_config={"gemm_backend_config":{"dot_dimension_numbers":{"lhs_batch_dimensions":[],"lhs_contracting_dimensions":["1"],"rhs_batch_dimensions":[],"rhs_contracting_dimensions":["1"]}}}
  %triton_kernel_call.3 = bf16[128,512]{1,0} custom-call(%a, %b), custom_call_target="triton_kernel_call", operand_layout_constraints={bf16[128,256]{1,0}, bf16[512,256]{1,0}}, api_version=API_VERSION_STATUS_RETURNING
  ROOT %gemm_fusion_dot.4 = f32[64,16]{1,0} fusion(%a, %b), kind=kCustom, calls=%fused_dot
}
"""


def test_hlo_costs_count_bytes_and_gemm_flops_by_hand():
    costs = profiling.hlo_costs(HLO_COSTS)
    # two f32[1000] reads and one write
    assert costs["loop_add_fusion.2"]["bytes"] == 3 * 4000 and costs["loop_add_fusion.2"]["flops"] is None
    assert costs["loop_add_fusion_2"] is costs["loop_add_fusion.2"]  # the kernel-name spelling too
    # a (128, 256) x (512, 256)^T GEMM: reads both operands, writes (128, 512) bf16, not the s8 workspace
    gemm = costs["custom-call.7"]
    assert gemm["bytes"] == 2 * (128 * 256 + 512 * 256 + 128 * 512) and gemm["flops"] == 2 * 128 * 512 * 256
    assert gemm["rate"] == "bf16"
    # a triton call: its operands from the layout constraints; no FLOPs in the HLO (the relu2 kernel gets them)
    triton = costs["triton_kernel_call.3"]
    assert triton["bytes"] == gemm["bytes"] and triton["flops"] is None and triton["operands"] == [[128, 256], [512, 256]]
    assert profiling._with_kernel_flops(triton, "_relu2_matmul_kernel")["flops"] == 2 * 128 * 512 * 256
    assert profiling._with_kernel_flops(triton, "_attn_fwd_kernel")["flops"] is None
    # an XLA GEMM fusion: the FLOPs of the dot in the computation it calls, 2 * 64 * 16 * 32
    assert costs["gemm_fusion_dot.4"]["flops"] == 2 * 64 * 16 * 32
    # a floor is the larger of bytes over the copy rate and FLOPs over the GEMM rate
    ceilings = {"bf16": 1e12, "fp8": 2e12, "copy": 1e9}
    assert profiling.floor_us(gemm, ceilings) == pytest.approx(max(gemm["bytes"] / 1e9, gemm["flops"] / 1e12) * 1e6)


def test_floors_count_each_launch_once_and_mark_bytes_only_floors():
    costs = profiling.hlo_costs(HLO_COSTS)
    sources = {"custom-call.7": "mlp bwd", "triton_kernel_call.3": "attention fwd"}
    summary = {"by_op": [
        # a split-K GEMM: two kernels per launch, 3 launches; its cost counts 3 times, not 6
        {"name": "nvjet_sm90_splitK", "op": "custom-call.7", "us": 30.0, "count": 3},
        {"name": "cublasLt::splitKreduce_kernel", "op": "custom-call.7", "us": 6.0, "count": 3},
        {"name": "_attn_fwd_kernel", "op": "triton_kernel_call.3", "us": 10.0, "count": 1},
    ]}
    ceilings = {"bf16": 1e12, "fp8": 2e12, "copy": 1e9}
    floors = profiling.floors_by_source(summary, sources, costs, ceilings=ceilings)
    gemm = floors["mlp bwd | matmul (cuBLAS/cutlass)"]
    assert gemm["us"] == 36.0 and gemm["flops"] == 3 * costs["custom-call.7"]["flops"]
    assert gemm["floor_us"] == pytest.approx(3 * profiling.floor_us(costs["custom-call.7"], ceilings))
    assert gemm["flops_known"]
    attention = floors["attention fwd | attention (triton)"]
    assert not attention["flops_known"] and attention["bytes"] == costs["triton_kernel_call.3"]["bytes"]
    table = profiling.markdown_floors({"steps": 1, "floors": floors})
    assert "| attention fwd | attention (triton) | 0.01 | >=" in table


def test_kernels_inside_a_cuda_graph_are_costed_by_their_fusion_name():
    # inside a CUDA graph every kernel's hlo_op names the graph (no instruction of the HLO): each kernel is then its own
    # launch, a fusion's costed by its name (its kernel is named after it), a library GEMM's not at all
    costs = profiling.hlo_costs(HLO_COSTS)
    sources = {"loop_add_fusion_2": "rms_norm bwd"}
    summary = {"by_op": [
        {"name": "loop_add_fusion_2", "op": "command_buffer.5", "us": 2.0, "count": 4},
        {"name": "nvjet_sm90_tst_128x160", "op": "command_buffer.5", "us": 9.0, "count": 2},
    ]}
    ceilings = {"bf16": 1e12, "fp8": 2e12, "copy": 1e9}
    floors = profiling.floors_by_source(summary, sources, costs, ceilings=ceilings)
    fusion = floors["rms_norm bwd | elementwise fusion"]
    # 4 launches of 3 x 4,000 bytes at 1e9 B/s: 48 us
    assert fusion["bytes"] == 4 * 12000 and fusion["floor_us"] == pytest.approx(48.0) and fusion["covered_us"] == 2.0
    gemm = floors[f"{profiling.UNATTRIBUTED} | matmul (cuBLAS/cutlass)"]
    assert gemm["us"] == 9.0 and gemm["floor_us"] == 0.0 and gemm["covered_us"] == 0.0


def test_attention_floors_take_the_useful_flops_of_their_pass(tmp_path):
    costs = profiling.hlo_costs(HLO_COSTS)
    # the forward kernel, and the backward's two kernels under one label (the same HLO cost reused for brevity)
    sources = {"triton_kernel_call.3": "attention bwd", "loop_add_fusion.2": "attention fwd"}
    summary = {"by_op": [
        {"name": "_attn_fwd_kernel", "op": "loop_add_fusion.2", "us": 10.0, "count": 1},
        {"name": "_attn_dkdv_kernel", "op": "triton_kernel_call.3", "us": 30.0, "count": 1},
        {"name": "_attn_dq_kernel", "op": "triton_kernel_call.3", "us": 20.0, "count": 1},
    ]}
    ceilings = {"bf16": 1e12, "fp8": 2e12, "copy": 1e10}
    without = profiling.floors_by_source(summary, sources, costs, ceilings=ceilings)
    assert not without["attention bwd | attention (triton)"]["flops_known"]
    # 5e7 forward FLOPs: 50 us at 1e12 FLOP/s, above the forward's bytes floor (12,000 bytes / 1e10 = 1.2 us); the
    # backward's 1e8, 100 us, above its two launches' 2 x 229,376 bytes / 1e10 = 45.9 us
    floors = profiling.floors_by_source(summary, sources, costs, ceilings=ceilings,
                                        attention_flops={"forward": 5 * 10**7, "backward": 10**8})
    fwd, bwd = floors["attention fwd | attention (triton)"], floors["attention bwd | attention (triton)"]
    assert fwd["flops"] == 5 * 10**7 and fwd["floor_us"] == pytest.approx(50.0) and fwd["flops_known"]
    assert bwd["flops"] == 10**8 and bwd["floor_us"] == pytest.approx(100.0) and bwd["flops_known"]
    assert "| attention bwd | attention (triton) | 0.05 | 0.10 | 0.5x |" in profiling.markdown_floors(
        {"steps": 1, "floors": floors})
    # a floor stays the bytes floor where that is the larger: 1e3 FLOPs are 0.001 us
    small = profiling.floors_by_source(summary, sources, costs, ceilings=ceilings,
                                       attention_flops={"forward": 1000, "backward": 2000})
    assert small["attention fwd | attention (triton)"]["floor_us"] == pytest.approx(1.2)
    assert small["attention bwd | attention (triton)"]["floor_us"] == pytest.approx(45.8752)
    # what bench step --profile saves beside the trace: the backward is twice the forward (recipe §9)
    profiling.save_attention_flops(tmp_path, 10**8)
    assert json.loads((tmp_path / profiling.ATTENTION_FLOPS_FILE).read_text()) == {"forward": 10**8,
                                                                                  "backward": 2 * 10**8}


def test_ceilings_option_wants_three_rates(tmp_path, capsys):
    with pytest.raises(SystemExit):
        profiling.main([str(tmp_path), "--ceilings", "790,1450"])
    assert "--ceilings wants three numbers" in capsys.readouterr().err


def test_a_profiled_process_runs_without_command_buffers():
    off = profiling.COMMAND_BUFFERS_OFF
    assert profiling.xla_flags_for_profiling("") == off
    assert profiling.xla_flags_for_profiling("--xla_dump_to=/tmp/d") == f"--xla_dump_to=/tmp/d {off}"
    # the user's own choice stands
    chosen = "--xla_gpu_enable_command_buffer=FUSION"
    assert profiling.xla_flags_for_profiling(chosen) == chosen


def test_bench_step_profile_sets_the_flags_before_jax_starts(monkeypatch, tmp_path):
    from jaxrun import bench

    seen = []

    def environment():  # the first thing of main that starts JAX's backend
        seen.append(os.environ.get("XLA_FLAGS"))
        raise SystemExit(0)

    monkeypatch.setattr(bench, "environment", environment)
    monkeypatch.setenv("XLA_FLAGS", "--xla_dump_to=/tmp/d")
    with pytest.raises(SystemExit):
        bench.main(["step", "--profile", str(tmp_path)])
    assert seen == [f"--xla_dump_to=/tmp/d {profiling.COMMAND_BUFFERS_OFF}"]
    monkeypatch.setenv("XLA_FLAGS", "--xla_dump_to=/tmp/d")
    with pytest.raises(SystemExit):
        bench.main(["step"])  # not profiled: the flags as they were
    assert seen[-1] == "--xla_dump_to=/tmp/d"
