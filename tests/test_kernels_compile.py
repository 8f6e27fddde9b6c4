"""Every triton kernel of the record's steps compiles for sm_90 (H100, H200) on this machine, with no GPU.

tests/triton_compile.py traces the gradient function of each phase's step, and the evaluation function, with the
triton backends. A stand-in for jax_triton compiles each kernel launch, built as jax-triton builds it, with triton's
compiler and ptxas. This is where a kernel that triton or ptxas refuses first fails, before any GPU time. It caught an
early return of another dtype in softcap_ce's gradient helper, which the GPU tests (skipped here) could not.

What it does not check: numbers, speed, and anything the GPU runtime adds (the launch itself, memory). The GPU tests
(-m gpu) check those on the GPU machine.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

HELPER = Path(__file__).with_name("triton_compile.py")

if sys.platform != "linux":  # triton publishes wheels for Linux only; the dev extra installs it there
    pytest.skip("triton has no wheels for this platform", allow_module_level=True)


def _compile(*args) -> list[dict]:
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": ""}  # one CPU device is enough for tracing
    done = subprocess.run([sys.executable, str(HELPER), *args], capture_output=True, text=True, env=env, timeout=1200)
    assert done.returncode == 0, done.stderr[-6000:]
    return [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]


def test_the_record_steps_kernels_compile_for_sm90():
    lines = _compile("--backends", "record", "--ptxas-info")
    launches, summary = lines[:-1], lines[-1]
    assert summary["kernels"] == len(launches)
    names = {x["name"] for x in launches}
    # attention forward/backward, the ReLU² matmul both ways, the fused head loss, and evaluation's CE forward
    assert names == {"flash_attention_fwd", "flash_attention_dq", "flash_attention_dkdv", "relu2_matmul_fwd",
                     "relu2_matmul_bwd", "softcap_ce_fused_fp8", "softcap_ce_fwd"}
    # the fused head loss once per phase's forward, as shipped (model.train_forward_tokens = 65,536): 4 ranks of 16,384
    # rows, 2 of 32,768, then one of 49,152 (phase 3 and the extension share it)
    fused = sorted((x["constexprs"]["T"], x["constexprs"]["ROW"]) for x in launches if x["name"] == "softcap_ce_fused_fp8")
    assert fused == [(49152, 49152), (65536, 16384), (65536, 32768)]
    assert all(x["shared_bytes"] <= 227 * 1024 for x in launches)  # an H100's / H200's shared memory per block
    for x in launches:
        if x["name"].startswith(("softcap_ce", "relu2_matmul", "flash_attention")):
            assert x["spill_bytes"] == 0, x
        if x["name"] == "flash_attention_dq":
            # dQ reads the dS tiles the dK dV kernel wrote (docs/results/2026-12-03-h200-fifteenth): no exponential, so
            # no special-function instruction at all; one recomputing S and P again would have them
            assert x["sass_opcodes"].get("MUFU", 0) == 0, x["sass_opcodes"]
        if x["name"].startswith("softcap_ce"):
            # What makes the CE kernels fast (docs/results/2026-12-01-h200-ce-kernel): exp and the sigmoid's 1/x as
            # the bare MUFU instructions, without tl.exp's and the division's range checks (104 FSETP before), and no
            # per-column compare against the targets (82 ISETP before). A refactor that brings either back fails here.
            # And no single-element F2F (the gradient's bf16 rounding as one packed cvt per two elements): F2F runs on
            # the special-function pipe with the MUFUs (docs/results/2026-12-03-h200-thirteenth, 1.57 -> 1.43 ms).
            ops = x["sass_opcodes"]
            assert ops.get("FSETP", 0) <= 4 and ops.get("ISETP", 0) <= 40, (x["name"], ops)
            assert ops.get("F2F", 0) == 0, (x["name"], ops)


def test_the_separate_head_and_cross_entropy_kernels_compile_for_sm90():
    launches = _compile("--backends", "separate", "--phase", "0")[:-1]
    names = {x["name"] for x in launches}
    assert {"scaled_fp8_matmul", "softcap_ce_fwd", "softcap_ce_bwd"} <= names
    assert "softcap_ce_fused_fp8" not in names


def test_the_merged_ranks_kernels_compile_for_sm90():
    # model.train_forward_tokens = 131072 in phase 1: all 8 ranks in one forward, so every launch has 131,072 rows and
    # the fused head loss's MTP targets stop at each rank's 16,384 rows (ROW < T); it stays as lean as the ROW == T one
    lines = _compile("--backends", "record", "--phase", "0", "--forward-tokens", "131072", "--no-eval", "--ptxas-info")
    launches = lines[:-1]
    fused = [x for x in launches if x["name"] == "softcap_ce_fused_fp8"]
    assert [(x["constexprs"]["T"], x["constexprs"]["ROW"]) for x in fused] == [(131072, 16384)]
    assert {x["constexprs"]["M"] for x in launches if x["name"].startswith("relu2_matmul")} == {131072}
    ops = fused[0]["sass_opcodes"]
    assert fused[0]["spill_bytes"] == 0 and ops.get("FSETP", 0) <= 4 and ops.get("ISETP", 0) <= 40, ops
