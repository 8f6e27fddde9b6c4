"""jaxrun/stepbench.py (`python -m jaxrun.bench step`): step pairs, the JSON it writes, its figures against an independent
FLOP count of the same batches, and its errors.

One CLI run on 2 of the 8 fake CPU devices benches two phases of a micro schedule of the tiny config: 6 steps, no
extension, one batch size and one pair of windows throughout, so that the untie step (5) is the last step and a single
gradient variant compiles (XLA's CPU compile of a gradient variant dominates this file's time). The other tests read
the JSON it wrote.
"""

import json
import math
import re
import statistics

import numpy as np
import pytest

from jaxrun import bench, stepbench
from jaxrun import data as data_lib
from jaxrun.config import CONFIG_DIR, SAMPLE_CORPUS, ConfigError, load_config

MICRO = [
    "schedule.scheduled_steps=6",
    "schedule.extension_steps=0",
    "schedule.seqs_per_rank=(1, 1, 1)",
    "schedule.window_blocks=((1, 2), (1, 2), (1, 2), (1, 2))",
    "schedule.momentum_warmup_steps=2",
    "schedule.momentum_cooldown_start=6",
    "schedule.momentum_cooldown_steps=2",
    "run.val_every=1000",
    "data.tokenize_passes=1",
]
PHASES, WARMUP, STEPS, DEVICES = (0, 1), 1, 2, 2


@pytest.fixture(scope="module")
def overrides(tmp_path_factory):
    """MICRO with shards tokenized once into a temporary directory from the shipped sample."""
    root = tmp_path_factory.mktemp("stepbench")
    out = MICRO + [
        f"data.train_files={root / 'shards' / 'fineweb_train_*.bin'}",
        f"data.val_file={root / 'shards' / 'fineweb_val_000000.bin'}",
        f"data.tokenize_from={SAMPLE_CORPUS}",
    ]
    data_lib.ensure_shards(load_config(None, out).data, announce=lambda _: None)
    return out


def _cli(overrides, *extra):
    argv = ["step"]
    for item in overrides:
        argv += ["--set", item]
    bench.main(argv + list(extra))


@pytest.fixture(scope="module")
def result(overrides, tmp_path_factory):
    path = tmp_path_factory.mktemp("stepbench_json") / "step.json"
    phases = [arg for p in PHASES for arg in ("--phase", str(p))]
    _cli(overrides, *phases, "--steps", str(STEPS), "--warmup", str(WARMUP), "--devices", str(DEVICES), "--json", str(path))
    return json.loads(path.read_text())


def test_step_pairs_of_the_record():
    cfg = load_config(CONFIG_DIR / "record60.py")
    # recipe §4: phases start at 0, 579 and 1157, the extension at 1735; the untie step is 1157 (recipe §1.11)
    assert [stepbench.step_pair(cfg, p) for p in range(4)] == [(0, 1), (580, 581), (1158, 1159), (1736, 1737)]


def test_json_has_the_environment_and_compile_times(result):
    assert result["environment"]["backend"] == "cpu" and result["jax"] == result["environment"]["jax"]
    assert result["config"] == "tiny" and result["devices"] == DEVICES and result["device_kind"] == "cpu"
    assert result["backends"] == dict.fromkeys(("attention", "lm_head", "mlp", "cross_entropy", "head_loss"), "auto")  # as record60
    assert result["backends_resolved"] == dict.fromkeys(("attention", "lm_head", "mlp", "cross_entropy", "head_loss"), "xla")  # CPU
    assert result["peak_tflops_per_device"] is None
    c = result["compile"]
    # one gradient variant (one shape, every step tied), Adam or not, eval at step 0 (tied) and the final one (untied)
    assert c["variants"] == {"grad": 1, "update": 2, "eval": 2, "untie": 1}
    assert c["cache_files"] >= sum(c["variants"].values())  # every executable went to the fresh cache
    assert 0 < c["warm_s"] < c["cold_s"]
    # the warm compile reads every lowering from the lowering cache the cold one filled, instead of tracing
    n = sum(c["variants"].values())
    assert c["lowering_cache"] == f"{n} of {n} lowerings read from the lowering cache, 0 stored"
    assert 0 < c["lower_s"] < c["cold_lower_s"] / 3 and c["lower_s"] < c["warm_s"]
    # per variant, when the cold lowering and compile ended; the last compile to end is the cold figure's end
    assert len(c["cold_timeline"]) == n and all(0 <= lo <= done <= c["cold_s"] for lo, done in c["cold_timeline"].values())
    last = max(c["cold_timeline"], key=lambda k: c["cold_timeline"][k][1])
    assert c["cold_slowest"].startswith(f"{last}: lowered by ")


def test_phase_figures_are_consistent(result):
    assert [f["phase"] for f in result["phases"]] == list(PHASES)
    assert [f["steps"] for f in result["phases"]] == [[0, 1], [2, 3]]
    for f in result["phases"]:
        seconds = [ms / 1e3 for ms in f["step_ms"]]
        assert len(seconds) == STEPS and all(s > 0 for s in seconds)
        assert f["mean_ms"] == pytest.approx(1e3 * statistics.mean(seconds), rel=1e-12)
        assert f["median_ms"] == pytest.approx(1e3 * statistics.median(seconds), rel=1e-12)
        assert f["tokens_per_step"] == 8 * 64  # the recipe's 8 virtual ranks x one 64-token sequence
        assert f["tokens_per_s"] == pytest.approx(f["tokens_per_step"] * STEPS / sum(seconds), rel=1e-12)
        assert f["tflops"] == pytest.approx(sum(f["flops_per_step"]) / sum(seconds) / 1e12, rel=1e-12)
        assert f["tflops_per_device"] == pytest.approx(f["tflops"] / DEVICES, rel=1e-12)
        assert f["mfu"] is None and f["peak_memory_bytes"] is None  # CPU: no peak FLOP/s, no memory stats
        assert all(math.isfinite(loss) and loss > 0 for loss in f["train_losses"])


def _spec9_step_flops(cfg, seg_ids_per_rank, short: int, long: int) -> int:
    """recipe §9 by brute force: 6 N per token, plus 3 x forward attention = 3 x 4 d per visible (query, key) pair and
    head; paired layers see 2 interleaved rows per token in H/2 channels with the short window in rows (recipe §1.6)."""
    m = cfg.model
    attention_layers = [i for i in range(m.num_layers) if i not in m.no_attention_layers]
    qkvo, mlp, head = 4 * m.model_dim**2, 2 * m.mlp_hidden * m.model_dim, m.vocab_size * m.model_dim  # recipe §1.12
    n = len(attention_layers) * qkvo + m.num_layers * mlp + head

    def pairs(seg, window):
        i, j = np.arange(seg.size)[:, None], np.arange(seg.size)[None, :]
        return int(np.sum((seg[:, None] == seg[None, :]) & (j <= i) & (i - j <= window)))

    attention = 0
    for seg in seg_ids_per_rank:
        for layer in attention_layers:
            if layer in m.paired_layers:
                attention += 4 * m.head_dim * (m.num_heads // 2) * pairs(np.repeat(seg, 2), short)
            else:
                window = long if layer in m.long_window_layers else short
                attention += 4 * m.head_dim * m.num_heads * pairs(seg, window)
    return 6 * n * seg_ids_per_rank.size + 3 * attention


def test_flops_count_the_timed_batches(result, overrides):
    """The FLOPs of each timed step are recipe §9's of the batch the training loader gives at that point (the bench
    draws warm-up and timed batches in order from one loader)."""
    cfg = load_config(None, overrides)
    loader = data_lib.TrainLoader(cfg.data, range(cfg.data.num_ranks), prefetch=False)
    window_tokens = cfg.schedule.window_block_size
    for f, p in zip(result["phases"], PHASES):
        short, long = (b * window_tokens for b in cfg.schedule.window_blocks[p])
        assert f["windows"] == [short, long]
        batches = [loader.next_batch(cfg.schedule.seqs_per_rank[p] * cfg.schedule.seq_len) for _ in range(WARMUP + STEPS)]
        expected = [_spec9_step_flops(cfg, b["seg_ids"], short, long) for b in batches[WARMUP:]]
        assert f["flops_per_step"] == expected
    loader.close()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--phase", "7"], r"--phase 7 is not a phase of config 'tiny': use 0 \(phase 1\), .*3 \(extension\)"),
        (["--phase", "2"], r"--phase 2 \(phase 3, steps 4 \.\. 5\) has no even/odd pair .* untie step 5"),
        (["--phase", "3"], r"--phase 3 \(extension\) has no training steps"),
        (["--phase", "0", "--steps", "0"], r"--steps must be at least 1"),
        (["--phase", "0", "--devices", "3"], r"3 devices cannot share the recipe's 8 virtual ranks"),
        (["--phase", "0", "--devices", "9"], r"--devices 9: this process sees 8 device\(s\)"),
    ],
)
def test_bad_options_exit_with_a_clear_error(args, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        _cli(MICRO, *args)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "usage: python -m jaxrun.bench step" in err
    assert re.search(message, err), err


def test_check_options_rejects_an_empty_phase_list():
    with pytest.raises(ConfigError, match="no phase to bench"):
        stepbench.check_options(load_config(None, MICRO), stepbench.StepBenchOptions(phases=()))


def test_benched_variants_only_compiles_the_benched_pairs_and_no_evaluation():
    cfg = load_config(CONFIG_DIR / "record60.py")
    assert stepbench.variants_to_compile(cfg, stepbench.StepBenchOptions(phases=(0, 2)), (0, 2)) == {}  # everything
    only = stepbench.StepBenchOptions(phases=(0, 2), benched_variants_only=True)
    assert stepbench.variants_to_compile(cfg, only, (0, 2)) == {"steps": [0, 1, 1158, 1159], "evals": []}


def test_report_says_how_the_steps_compiled(result, capsys):
    c = result["compile"]
    stepbench.print_report(result)
    assert (f"cold {c['cold_s']:.1f} s, lowering {c['cold_lower_s']:.1f} s of it, warm {c['warm_s']:.1f} s "
            f"({c['cache_files']} cache files); lowering (tracing, sequential) {c['lower_s']:.1f} s of the warm one "
            f"({c['lowering_cache']}); last to finish cold: {c['cold_slowest']}") in capsys.readouterr().out
    skip_cold = {**result, "compile": {**c, "cold_s": None, "warm_s": None, "once_s": 1.5, "cache_files": None}}
    stepbench.print_report(skip_cold)  # what --skip-cold records
    assert "untie variants: 1.5 s through the usual persistent cache; lowering (tracing, sequential)" in capsys.readouterr().out


def _torch_style_log(path, total, step_ms):
    """A PyTorch speedrun log: code and environment on top, then a step line per step with the cumulative train_time."""
    lines, t = ["import torch  # the record's code comes first", "=" * 20, f"step:0/{total} val_loss:10.8258 train_time:0ms step_avg:0.03ms"], 0.0
    for n in range(1, total + 1):
        t += step_ms(n - 1)
        lines.append(f"step:{n}/{total} train_time:{t:.0f}ms step_avg:{t / n:.2f}ms")
    path.write_text("\n".join(lines) + "\n")


def test_compare_to_reads_a_logs_median_step_time_per_phase(tmp_path, capsys):
    """60 scheduled steps: phases of 20 steps; the log's steps take 100 / 200 / 300 ms by phase, step 25 is an outlier
    (the median ignores it) and the first 10 steps (warm-up effects, 999 ms) are skipped."""
    cfg = load_config(None, ["schedule.scheduled_steps=60", "schedule.extension_steps=0",
                             "schedule.momentum_cooldown_start=50", "schedule.momentum_cooldown_steps=10"])
    log = tmp_path / "torch.txt"
    _torch_style_log(log, 60, lambda s: 999.0 if s < 10 else 5000.0 if s == 25 else 100.0 * (1 + s // 20))
    assert stepbench.reference_step_ms(str(log), cfg) == {0: 100.0, 1: 200.0, 2: 300.0}
    short = tmp_path / "short.txt"
    _torch_style_log(short, 30, lambda s: 100.0)
    with pytest.raises(ConfigError, match="its schedule has 30 steps, config 'tiny' 60"):
        stepbench.reference_step_ms(str(short), cfg)
    result = {"config": "tiny", "devices": 1, "device_kind": "cpu", "jax": "x",
              "compile": {"cold_s": 1.0, "warm_s": 0.5, "cache_files": 3, "variants": {"grad": 1, "update": 2, "eval": 1}},
              "reference": {"log": str(log), "step_ms": {"0": 100.0, "1": 200.0}},
              "phases": [{"phase": p, "label": f"phase {p + 1}", "steps": [2 * p, 2 * p + 1], "tokens_per_step": 8,
                          "windows": [1, 2], "median_ms": m, "mean_ms": m, "tokens_per_s": 1.0, "tflops": 1.0,
                          "tflops_per_device": 1.0, "mfu": None, "peak_memory_bytes": None}
                         for p, m in ((0, 75.0), (2, 10.0))]}
    stepbench.print_report(result)
    out = capsys.readouterr().out.splitlines()
    assert out[2].split()[-3:] == ["ref", "ms", "ratio"]
    assert out[3].split()[-2:] == ["100.00", "0.750"]  # phase 1: 75 ms against the log's 100
    assert out[4].split()[-2:] == ["n/a", "n/a"]  # phase 3: the reference has none


def test_compare_to_reads_another_bench_json(result, overrides, tmp_path):
    """A bench of the code before a change (the same lease) as the reference: its per-phase medians, checked against
    this config's step pairs."""
    path = tmp_path / "before.json"
    path.write_text(json.dumps(result))
    cfg = load_config(None, overrides)
    assert stepbench.reference_step_ms(str(path), cfg) == {f["phase"]: f["median_ms"] for f in result["phases"]}
    other = load_config(None, [*overrides, "schedule.scheduled_steps=60", "schedule.momentum_cooldown_start=50",
                               "schedule.momentum_cooldown_steps=10"])
    with pytest.raises(ConfigError, match="its phase .* timed steps .* the schedules differ"):
        stepbench.reference_step_ms(str(path), other)
    (tmp_path / "log.json").write_text("{}")
    with pytest.raises(ConfigError, match="not a `bench step --json` result"):
        stepbench.reference_step_ms(str(tmp_path / "log.json"), cfg)
