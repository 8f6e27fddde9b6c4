"""jaxrun/bench.py: shapes, FLOP counting, timing and the CLI (CPU; the GPU figures come from running it there)."""

from __future__ import annotations

import json

import numpy as np

import jax
import jax.numpy as jnp

from jaxrun import bench
from jaxrun.config import CONFIG_DIR, load_config


def test_attention_shapes_of_the_record():
    shapes = {s.label: (s.rows, s.heads, s.window, s.backward) for s in bench.attention_shapes(load_config(CONFIG_DIR / "record60.py"))}
    # recipe §4: T = 16,384 / 32,768 / 49,152; windows (short, long) 128/384, 384/896, 640/1408, 768/1664 tokens;
    # paired layers: 2T rows, 3 channels, the short window in rows (recipe §1.6); final validation 262,144, long 2560.
    assert shapes["phase 1 short"] == (16384, 6, 128, True)
    assert shapes["phase 1 paired"] == (32768, 3, 128, True)
    assert shapes["phase 2 long"] == (32768, 6, 896, True)
    assert shapes["phase 3 paired"] == (98304, 3, 640, True)
    assert shapes["extension long"] == (49152, 6, 1664, True)
    assert shapes["final val long"] == (262144, 6, 2560, False)
    assert shapes["final val paired"] == (524288, 3, 768, False)


def test_random_documents():
    seg = bench.random_documents(5000, 40, np.random.default_rng(0))
    assert seg.shape == (5000,) and seg[0] == 0 and np.all(np.diff(seg) >= 0)
    lengths = np.bincount(seg)
    assert lengths.max() <= 40 and lengths.min() >= 1 and 15 < lengths[:-1].mean() < 26


def test_attention_case_flops_count_visible_pairs():
    cfg = load_config(CONFIG_DIR / "tiny.py")
    shape = bench.attention_shapes(cfg)[0]
    assert shape.label == "phase 1 short"
    fwd, fwd_bwd = bench.attention_cases(cfg, names=("triton",), shapes=[shape])  # built, not run, on CPU
    q, k, v, seg_ids, dout = fwd_bwd.args
    seg, window = np.asarray(seg_ids), cfg.schedule.window_blocks[0][0] * cfg.schedule.window_block_size
    i, j = np.arange(seg.size)[:, None], np.arange(seg.size)[None, :]
    pairs = np.sum((seg[:, None] == seg[None, :]) & (j <= i) & (i - j <= window))  # recipe §5.4, brute force
    heads, d = q.shape[1:]
    assert fwd.flops == 4 * d * heads * pairs
    assert fwd_bwd.flops == 3.5 * fwd.flops
    (xla,) = bench.attention_cases(cfg, names=("xla",), shapes=[shape])  # fwd+bwd only
    out, (dq, dk, dv) = jax.jit(xla.fn)(*xla.args)
    assert xla.flops == fwd_bwd.flops and out.shape == dq.shape == q.shape


def test_time_ms_and_run_report_rows(capsys):
    case = bench.Case("add T=1024", "xla", lambda x: x + 1, (jnp.ones(1024),), flops=1024.0, bytes=8192.0)
    ms, compile_s = bench.time_ms(case.fn, case.args, samples=3)
    assert ms > 0 and compile_s > 0
    rows = bench.run([case, bench.Case("add T=1024", "broken", lambda x: x.undefined, (jnp.ones(3),))],
                     {"bf16": 1e12, "fp8": 2e12, "copy": 1e11})
    assert rows[0]["floor_ms"] == 8192.0 / 1e11 * 1e3 and rows[0]["tflops"] > 0
    assert "AttributeError" in rows[1]["error"]
    bench.print_table(rows, reference_backends=("xla",))
    assert "FAILED" in capsys.readouterr().out


def test_cli_writes_json(tmp_path, monkeypatch):
    def one_case(cfg, names=None):
        return [bench.Case("mul T=8", "xla", lambda x: x * 2, (jnp.ones(8),), 8.0, 64.0)]

    monkeypatch.setitem(bench.OP_CASES, "attention", one_case)
    path = tmp_path / "bench.json"
    bench.main(["ops", "--op", "attention", "--json", str(path)])
    result = json.loads(path.read_text())
    assert result["environment"]["backend"] == "cpu"
    assert result["rows"][0]["name"] == "mul T=8" and result["rows"][0]["ms"] > 0


def test_pick_backends_takes_least_total_fwd_bwd_time_and_skips_failures():
    rows = [
        {"name": "mlp T=8 fwd+bwd", "backend": "xla", "ms": 3.0},
        {"name": "mlp T=8 fwd+bwd", "backend": "triton", "ms": 1.0},
        {"name": "mlp T=16 fwd+bwd", "backend": "xla", "ms": 3.0},
        {"name": "mlp T=16 fwd+bwd", "backend": "triton", "ms": 4.0},  # 5.0 in all vs xla's 6.0: triton
        {"name": "mlp T=16 fwd", "backend": "xla", "ms": 0.1},  # forward-only rows do not count
        {"name": "cross_entropy T=8 mtp fwd+bwd", "backend": "triton", "ms": 1.0},
        {"name": "cross_entropy T=16 mtp fwd+bwd", "backend": "triton", "error": "boom"},  # failed once: out
        {"name": "cross_entropy T=8 mtp fwd+bwd", "backend": "xla", "ms": 9.0},
        {"name": "attention p1 fwd+bwd", "backend": "cudnn", "ms": 0.5},  # exact only up to a document bound: never
        {"name": "attention p1 fwd+bwd", "backend": "cudnn-nodoc", "ms": 0.1},  # another function: never
        {"name": "attention p1 fwd+bwd", "backend": "triton", "ms": 2.0},
    ]
    assert bench.pick_backends(rows) == {"mlp": "triton", "cross_entropy": "xla", "attention": "triton"}


def test_cli_on_cpu_reports_picks_without_recording_them(tmp_path, monkeypatch):
    monkeypatch.setenv("JAXRUN_AUTO_BACKENDS", str(tmp_path / "auto.json"))
    monkeypatch.setitem(bench.OP_CASES, "mlp", lambda cfg, names=None: [
        bench.Case("mlp T=8 fwd+bwd", "xla", lambda x: x * 2, (jnp.ones(8),), 8.0, 64.0)])
    path = tmp_path / "bench.json"
    bench.main(["ops", "--op", "mlp", "--json", str(path)])
    assert json.loads(path.read_text())["auto"] == {"mlp": "xla"}
    assert not (tmp_path / "auto.json").exists()  # only GPU measurements are recorded


def test_model_and_normuon_commands_on_the_tiny_config(tmp_path):
    path = tmp_path / "model.json"
    bench.main(["model", "--config", str(CONFIG_DIR / "tiny.py"), "--json", str(path)])
    result = json.loads(path.read_text())
    # the tiny schedule's last phase: 3 sequences of 64 tokens, untied (recipe §1.11 untie at 2/3 of the schedule)
    assert result["tokens"] == 192 and result["tied"] is False and result["ms"] > 0 and result["flops"] > 0
    path = tmp_path / "normuon.json"
    bench.main(["normuon", "--config", str(CONFIG_DIR / "tiny.py"), "--repeats", "2", "--json", str(path)])
    result = json.loads(path.read_text())
    # batched and per matrix are the same arithmetic: the whole update agrees to rounding level (single entries can move
    # by a few bf16 steps where a flipped rounding is carried through the five Polar Express iterates)
    assert result["n_matrices"] == 17 and result["rel_update_diff"] < 1e-2
    assert result["max_abs_update_diff"] < 0.1 * result["max_abs_update"]
