"""Log parsing (jaxrun/logs.py) and the comparison table, t-test, reach points and plots (jaxrun/compare.py).

Expected numbers come from recipe §6/§8 (the published record-#60 figures), hand-worked cases and closed forms, never from
the functions under test.
"""

import json
import math

import pytest

from jaxrun import compare
from jaxrun.config import load_config, override, to_json
from jaxrun.logs import LogError, parse_log_text, read_group, read_run

SEP = "=" * 100

# The top of a published log: the source code, holding log-like strings (indented f-strings and one unindented line in
# a docstring) that must not be read as log lines.
SOURCE_CODE = '''import torch
"""Example of the output:
step:999/9999 val_loss:1.0000 train_time:1ms step_avg:1.00ms
"""
def log(step, N, loss, t):
    print0(f"step:{step}/{N} val_loss:{loss:.4f} train_time:{t:.0f}ms step_avg:{t/max(step, 1):.2f}ms")
    print0(f"step:{step+1}/{N} train_time:{t:.0f}ms step_avg:{t/(step + 1):.2f}ms")
print0(f"peak memory allocated: {a} MiB reserved: {b} MiB")
'''
HEADER = """Running Python 3.10.12
Running PyTorch 2.10.0.dev20251210+cu126 compiled for CUDA 12.6
+-----------------------------------------------------------------------------------------+
|=========================================+========================+======================|
|   0  NVIDIA H100 80GB HBM3          On  |   00000000:19:00.0 Off |                    0 |
"""
# 10 steps: step lines after every step, validation at 0, 5 and 10, as the reference prints them (recipe §6).
LOG_PART = """Compiling model and warming up kernels (~7 minutes on first execution)
Resetting Model
step:0/10 val_loss:10.8309 train_time:0ms step_avg:0.03ms
step:1/10 train_time:30ms step_avg:30.00ms
step:2/10 train_time:60ms step_avg:30.00ms
step:3/10 train_time:90ms step_avg:30.00ms
step:4/10 train_time:120ms step_avg:30.00ms
step:5/10 train_time:150ms step_avg:30.00ms
step:5/10 val_loss:4.5000 train_time:152ms step_avg:30.40ms
step:6/10 train_time:200ms step_avg:33.33ms
step:7/10 train_time:250ms step_avg:35.71ms
step:8/10 train_time:300ms step_avg:37.50ms
step:9/10 train_time:350ms step_avg:38.89ms
step:10/10 train_time:400ms step_avg:40.00ms
step:10/10 val_loss:3.2500 train_time:402ms step_avg:40.20ms
peak memory allocated: 29148 MiB reserved: 45178 MiB
"""
RAW_LOG = f"{SOURCE_CODE}{SEP}\n{HEADER}{SEP}\n{LOG_PART}"

CSV_HEADER = "step,total_steps,val_loss,train_time_ms,step_avg_ms\n"
# Record #60's log 45beba56 (recipe §8.1).
RECORD_LOG_45 = [
    (0, 10.8309, 0), (250, 4.6062, 8201), (500, 4.2740, 16316), (750, 4.0061, 29049), (1000, 3.7358, 43907),
    (1250, 3.5104, 61149), (1500, 3.3792, 82429), (1750, 3.2870, 103723), (1775, 3.2807, 105875),
]
RECORD_BOUNDS = (579, 1157, 1735)  # recipe §4: phase = floor(3 s / 1735)


def _csv(rows, total):
    return CSV_HEADER + "".join(f"{s},{total},{v:.4f},{t},{t / max(s, 1):.2f}\n" for s, v, t in rows)


def _val_log(rows, total):
    return "".join(f"step:{s}/{total} val_loss:{v:.4f} train_time:{t}ms step_avg:{t / max(s, 1):.2f}ms\n" for s, v, t in rows)


def test_raw_published_log_reads_only_after_the_last_separator(tmp_path):
    path = tmp_path / "45beba56.txt"
    path.write_text(RAW_LOG)
    run = read_run(path)
    assert run.name == "45beba56" and run.total_steps == 10 and run.finished
    assert run.val_steps == (0, 5, 10)
    assert run.val_losses == (10.8309, 4.5, 3.25)
    assert run.val_times_ms == (0, 152, 402)
    assert run.step_steps == tuple(range(1, 11))
    assert run.step_times_ms[:3] == (30, 60, 90) and run.step_times_ms[-1] == 400
    assert (run.peak_allocated_mib, run.peak_reserved_mib) == (29148, 45178)
    assert run.schedule is None


def test_old_record_format_with_train_loss_and_three_separators(tmp_path):
    log = (
        f"{SEP}\nimport torch\n{SEP}\nRunning pytorch 2.4.1\n{SEP}\nTraining DataLoader: 10 files\n{SEP}\n"
        "step:0/4 val_loss:11.0149 train_time:305ms step_avg:nanms\n"
        "step:1/4 train_loss:11.0091 train_time:24179ms step_avg:nanms\n"
        "step:4/4 train_loss:9.5 train_time:25000ms step_avg:6250.00ms\n"
        "step:4/4 val_loss:9.0001 train_time:25010ms step_avg:6252.50ms\n"
        "peak memory consumption: 37654 MiB\n"
    )
    path = tmp_path / "old.txt"
    path.write_text(log)
    run = read_run(path)
    assert run.val_steps == (0, 4) and run.val_losses == (11.0149, 9.0001)
    assert run.step_steps == (1, 4)
    assert (run.peak_allocated_mib, run.peak_reserved_mib) == (37654, None)


def test_csv_extract_and_its_peak_memory_table(tmp_path):
    (tmp_path / "a.csv").write_text(_csv(RECORD_LOG_45, 1775))
    (tmp_path / "peak_memory.json").write_text(json.dumps({"a": {"allocated_mib": 29148, "reserved_mib": 45178}}))
    run = read_run(tmp_path / "a.csv")
    assert run.val_steps == tuple(s for s, _, _ in RECORD_LOG_45)
    assert run.final_loss == 3.2807 and run.final_time_ms == 105875 and run.finished
    assert run.step_steps == ()
    assert (run.peak_allocated_mib, run.peak_reserved_mib) == (29148, 45178)


def test_jaxrun_run_directory_uses_its_own_schedule(tmp_path):
    cfg = load_config()
    cfg = override(cfg, "schedule.scheduled_steps", 30)
    cfg = override(cfg, "schedule.extension_steps", 6)
    run_dir = tmp_path / "tiny-run"
    run_dir.mkdir()
    (run_dir / "log.txt").write_text("jax 0.10.2 | 1 x cpu\n" + _val_log([(0, 10.9, 0), (36, 6.0, 3600)], 36))
    (run_dir / "config.json").write_text(to_json(cfg))
    for arg in (run_dir, run_dir / "log.txt"):
        run = read_run(arg)
        assert run.name == "tiny-run" and run.total_steps == 36 and run.schedule.scheduled_steps == 30
    summary = compare.summarize(read_group(str(run_dir)), 3.28, (), None, RECORD_BOUNDS)
    # 3 phases of 30 scheduled steps: int(3 s / 30) switches at s = 10 and 20; the extension starts at 30.
    assert summary["phase_bounds"] == [[10, 20, 30]]


def test_resumed_log_keeps_the_last_line_of_a_repeated_step(tmp_path):
    path = tmp_path / "log.txt"
    path.write_text(_val_log([(0, 10.8, 0), (5, 5.0, 100)], 10) + _val_log([(5, 4.9, 110), (10, 4.0, 220)], 10))
    run = read_run(path)
    assert run.val_steps == (0, 5, 10) and run.val_losses == (10.8, 4.9, 4.0) and run.val_times_ms == (0, 110, 220)


def test_groups_from_folder_glob_and_reference_names(tmp_path):
    (tmp_path / "x.txt").write_text(_val_log([(0, 10.8, 0), (10, 3.3, 100)], 10))
    (tmp_path / "y.csv").write_text(_csv([(0, 10.8, 0), (10, 3.2, 90)], 10))
    (tmp_path / "r1").mkdir()
    (tmp_path / "r1" / "log.txt").write_text(_val_log([(0, 10.8, 0), (10, 3.1, 80)], 10))
    (tmp_path / "plots").mkdir()  # a folder without a log.txt is not a run
    folder = read_group(str(tmp_path))
    assert [r.name for r in folder.runs] == ["r1", "x", "y"]
    assert [r.name for r in read_group(str(tmp_path / "*.txt")).runs] == ["x"]
    assert len(read_group("record60").runs) == 10
    assert [r.name for r in read_group("single_gpu").runs] == ["record59_single_gpu_baseline", "record59_single_gpu_run"]
    single = read_group("record59_single_gpu_run").runs
    assert len(single) == 1 and single[0].final_loss == 3.2796 and single[0].final_time_ms == 812830  # recipe §8.2
    assert single[0].peak_allocated_mib == 32826


def test_clear_errors(tmp_path):
    with pytest.raises(LogError, match="no such file"):
        read_run(tmp_path / "missing.txt")
    code_only = tmp_path / "code.txt"
    code_only.write_text(f"{SOURCE_CODE}{SEP}\n{HEADER}{SEP}\nCompiling model\n")
    with pytest.raises(LogError, match=r"code\.txt: no validation lines .*after the last line of 100 '='"):
        read_run(code_only)
    bad_csv = tmp_path / "bad.csv"
    bad_csv.write_text("step,loss\n0,10.8\n")
    with pytest.raises(LogError, match="is not the CSV extract's 'step,total_steps,val_loss"):
        read_run(bad_csv)
    mixed = tmp_path / "mixed.txt"
    mixed.write_text(_val_log([(0, 10.8, 0)], 10) + _val_log([(0, 10.8, 0)], 20))
    with pytest.raises(LogError, match=r"different step counts \(10, 20\)"):
        read_run(mixed)
    with pytest.raises(LogError, match="not a shipped reference .*record60"):
        read_group("record61")
    with pytest.raises(LogError, match="matches no file"):
        read_group(str(tmp_path / "nothing*.txt"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(LogError, match="holds no runs"):
        read_group(str(tmp_path / "empty"))


def test_t_test_on_a_hand_checked_case():
    losses = [3.270, 3.275, 3.280, 3.285]
    # mean 3.2775, s^2 = (2 * 0.0075^2 + 2 * 0.0025^2) / 3, t = (mean - 3.28) / (s / sqrt(4)) = -sqrt(0.6)
    mean = sum(losses) / 4
    s = math.sqrt(sum((x - mean) ** 2 for x in losses) / 3)
    t = (mean - 3.28) / (s / math.sqrt(4))
    assert t == pytest.approx(-math.sqrt(0.6))
    # Student-t CDF with 3 degrees of freedom in closed form: 1/2 + (atan(u) + u / (1 + u^2)) / pi, u = t / sqrt(3).
    u = t / math.sqrt(3)
    cdf = 0.5 + (math.atan(u) + u / (1 + u * u)) / math.pi
    assert cdf == pytest.approx(0.247513, abs=1e-6)
    assert compare.p_value_below(losses, 3.28) == pytest.approx(cdf, rel=1e-9)
    assert compare.p_value_below([3.27], 3.28) is None
    assert compare.p_value_below([3.27, 3.27], 3.28) is None


def test_record60_reproduces_the_published_statistics():
    summary = compare.summarize(read_group("record60"), 3.28, (3.28,), None, RECORD_BOUNDS)
    assert summary["num_runs"] == summary["num_finished"] == 10
    assert round(summary["final_val_loss"]["mean"], 4) == 3.2788  # recipe §8.1: 3.2788 ± 0.0012, p = 0.0067
    assert summary["final_val_loss"]["std"] == pytest.approx(0.0012, abs=5e-5)
    assert summary["p_value"] == pytest.approx(0.0067, abs=5e-5)
    assert summary["train_time_s"]["mean"] == pytest.approx(105.78, abs=0.005)
    assert summary["peak_allocated_mib"] == 29148
    # Nine of the ten final losses are <= 3.28 (3.2807 is not).
    assert summary["reach"][0]["runs_reached"] == 9


def test_phase_step_avg_from_validation_lines_of_the_record_log():
    steps, losses, times = zip(*RECORD_LOG_45)
    run = read_group("45beba56-93e2-4995-bc5b-caff3cb2c1b5").runs[0]
    assert (run.val_steps, run.val_losses, run.val_times_ms) == (steps, losses, times)
    s, t, source = compare.clock_readings(run)
    assert source == "val lines"
    avgs = compare.phase_step_avgs(s, t, RECORD_BOUNDS, 1775)
    # Validation points inside each phase: 0..500 | 750..1000 | 1250..1500 | 1750..1775.
    expected = [16316 / 500, (43907 - 29049) / 250, (82429 - 61149) / 250, (105875 - 103723) / 25]
    assert avgs == pytest.approx(expected)


def test_phase_step_avg_from_step_lines():
    # 12 steps: 10 ms each in phase 1 (s = 0..3), 20 in phase 2 (4..7), 30 in phase 3 (8, 9), 40 in the extension.
    per_step = [10] * 4 + [20] * 4 + [30] * 2 + [40] * 2
    cumulative = [sum(per_step[:k]) for k in range(1, 13)]
    log = _val_log([(0, 10.8, 0), (12, 3.3, cumulative[-1] + 5)], 12)
    log += "".join(f"step:{k}/12 train_time:{ms}ms step_avg:{ms / k:.2f}ms\n" for k, ms in enumerate(cumulative, 1))
    run = parse_log_text(log, "synthetic", "synthetic.txt")
    s, t, source = compare.clock_readings(run)
    assert source == "step lines"
    assert compare.phase_step_avgs(s, t, (4, 8, 10), 12) == pytest.approx([10, 20, 30, 40])
    s, t, source = compare.clock_readings(run, "val")
    assert source == "val lines"
    # Only the readings after 0 and 12 steps: every phase lacks two readings of its own.
    assert compare.phase_step_avgs(s, t, (4, 8, 10), 12) == [None] * 4
    # Phases past the end of a short run are empty.
    assert compare.phase_step_avgs(s, t, (20, 30, 40), 12)[1:] == [None] * 3


def test_first_reach_interpolates_between_validation_points():
    steps, losses, times = (0, 100, 200), (10.0, 4.0, 3.0), (0, 1000, 3000)
    hit = compare.first_reach(steps, losses, times, 3.5)  # half-way from 4.0 to 3.0
    assert (hit.step, hit.time_ms) == pytest.approx((150, 2000))
    hit = compare.first_reach(steps, losses, times, 4.0)  # exactly at a validation point
    assert (hit.step, hit.time_ms) == pytest.approx((100, 1000))
    hit = compare.first_reach(steps, losses, times, 7.0)  # (10 - 7) / (10 - 4) = 0.5 of the first interval
    assert (hit.step, hit.time_ms) == pytest.approx((50, 500))
    assert compare.first_reach(steps, losses, times, 11.0).step == 0
    assert compare.first_reach(steps, losses, times, 2.9) is None
    hit = compare.first_reach((0, 100, 200), (10.0, math.nan, 3.0), (0, 1000, 3000), 3.5)  # a NaN point is skipped
    assert (hit.step, hit.time_ms) == pytest.approx((200 * 6.5 / 7, 3000 * 6.5 / 7))


def test_table_plots_and_json_from_the_command_line(tmp_path, capsys):
    log = tmp_path / "one.txt"
    log.write_text(RAW_LOG)
    out = tmp_path / "out"
    assert compare.main(["record60", str(log), "--out", str(out), "--json", "--reach", "4.0", "3.0"]) == 0
    text = capsys.readouterr().out
    assert "0.0067" in text and "n/a (1 run" in text and "not reached" in text
    assert "3.2788 ± 0.0012" in text and "105.78 ± 0.06" in text
    for name in compare.PLOT_FILES:
        data = (out / name).read_bytes()
        assert data.startswith(b"\x89PNG") and len(data) > 10_000
    table = json.loads((out / "compare.json").read_text())["groups"]
    assert [g["label"] for g in table] == ["record60", str(log)]
    assert table[1]["p_value"] is None and table[1]["final_val_loss"]["mean"] == 3.25
    # The synthetic run reaches 4.0 between its validations at step 5 (4.5) and 10 (3.25): step 5 + 5 * 0.5 / 1.25 = 7.
    assert table[1]["reach"][0]["step"] == pytest.approx(7.0)
    assert table[1]["reach"][1]["runs_reached"] == 0


def test_command_line_errors(tmp_path, capsys):
    assert compare.main([str(tmp_path / "missing.txt"), "--no-plots"]) == 2
    assert "missing.txt: no such file or directory" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        compare.main(["record60", "--no-plots", "--phase-bounds", "579", "500"])
    assert "positive and increasing" in capsys.readouterr().err


def test_unfinished_runs_are_left_out_of_the_final_statistics(tmp_path):
    (tmp_path / "done.txt").write_text(_val_log([(0, 10.8, 0), (10, 3.27, 100)], 10))
    (tmp_path / "done2.txt").write_text(_val_log([(0, 10.8, 0), (10, 3.29, 120)], 10))
    (tmp_path / "crashed.txt").write_text(_val_log([(0, 10.8, 0), (5, 4.5, 50)], 10))
    summary = compare.summarize(read_group(str(tmp_path)), 3.28, (), None, (4, 8, 9))
    assert (summary["num_runs"], summary["num_finished"]) == (3, 2)
    assert summary["final_val_loss"]["mean"] == pytest.approx(3.28)
    assert summary["train_time_s"]["values"] == pytest.approx([0.1, 0.12])
    assert "2 unfinished" not in compare.format_table([summary]) and "1 unfinished" in compare.format_table([summary])



def _welch_by_hand(a, b):
    """Two-sided Welch p from the textbook formulas: t = (ma - mb) / sqrt(va/na + vb/nb), Welch-Satterthwaite df."""
    import scipy.stats

    na, nb = len(a), len(b)
    ma, mb = sum(a) / na, sum(b) / nb
    va = sum((x - ma) ** 2 for x in a) / (na - 1)
    vb = sum((x - mb) ** 2 for x in b) / (nb - 1)
    se2 = va / na + vb / nb
    t = (ma - mb) / math.sqrt(se2)
    df = se2**2 / ((va / na) ** 2 / (na - 1) + (vb / nb) ** 2 / (nb - 1))
    return 2 * scipy.stats.t.sf(abs(t), df)


def test_curve_table_compares_unfinished_runs_at_their_common_steps(tmp_path):
    """Two groups stopped at step 300 of a 1775-step schedule, a third group with a single run: per step the first
    group shares with another, the mean ± std (n), the difference from the first group and Welch's p, flagged below
    0.01; a group without that step shows n = 0 and no difference."""
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    fp8 = {100: [3.60, 3.62, 3.61], 200: [3.20, 3.21, 3.19], 300: [3.060, 3.055, 3.065]}
    bf16 = {100: [3.58, 3.59, 3.60], 200: [3.185, 3.180, 3.175], 300: [3.00, 3.01, 3.005]}
    for folder, curves in ((a, fp8), (b, bf16)):
        for i in range(3):
            (folder / f"run{i}.txt").write_text(_val_log([(s, v[i], s * 250) for s, v in curves.items()], 1775))
    single = tmp_path / "single.csv"
    single.write_text(_csv([(0, 10.83, 0), (100, 3.59, 25000), (300, 3.04, 75000)], 1775))
    groups = [read_group(str(a)), read_group(str(b)), read_group(str(single))]
    rows = compare.curve_table(groups)
    assert [r["step"] for r in rows] == [100, 200, 300]  # 0 is in the CSV only; 200 is missing from the CSV
    row200 = rows[1]["groups"]
    assert row200[2]["n"] == 0 and row200[2]["diff"] is None and row200[1]["n"] == 3
    row300 = rows[2]
    g0, g1, g2 = row300["groups"]
    assert (g0["n"], g1["n"], g2["n"]) == (3, 3, 1)
    assert g0["mean"] == pytest.approx(3.06) and g0["std"] == pytest.approx(0.005)
    assert g1["diff"] == pytest.approx(3.005 - 3.06)
    assert g1["p"] == pytest.approx(_welch_by_hand(bf16[300], fp8[300]), rel=1e-9)
    assert g1["flagged"] and g1["p"] < 0.01
    assert g2["p"] is None and not g2["flagged"]  # one run: no test
    row100 = rows[0]["groups"][1]
    assert row100["p"] == pytest.approx(_welch_by_hand(bf16[100], fp8[100]), rel=1e-9) and not row100["flagged"]
    paths = compare.plot_groups(groups, tmp_path / "plots", 3.28)  # with ±1 std bands for the 3-run groups
    assert all(p.read_bytes().startswith(b"\x89PNG") for p in paths)
    text = compare.format_curve_table(rows)
    assert "3.0600 ± 0.0050 (3)" in text and "-0.0550" in text and " *" in text and "n/a" in text
    assert text.splitlines()[2].split()[-3:] == ["—", "—", "—"]  # step 200: the CSV has no validation there


def test_curve_table_mixes_a_raw_pytorch_log_a_run_folder_and_a_csv(tmp_path, capsys):
    """Every input kind in one comparison; the curve is printed and lands in compare.json beside the table."""
    raw = tmp_path / "torch_run.txt"
    raw.write_text(RAW_LOG)  # validations at 0, 5, 10 of 10
    run_dir = tmp_path / "runs" / "jax_run"
    run_dir.mkdir(parents=True)
    (run_dir / "log.txt").write_text(_val_log([(0, 10.82, 0), (5, 4.4, 160)], 10))  # stopped at 5 of 10
    extract = tmp_path / "extract.csv"
    extract.write_text(_csv([(0, 10.83, 0), (5, 4.6, 150), (10, 3.3, 400)], 10))
    out = tmp_path / "out"
    assert compare.main([str(raw), str(run_dir), str(extract), "--out", str(out), "--json"]) == 0
    text = capsys.readouterr().out
    assert "unfinished: see the curve table" in text
    curve = json.loads((out / "compare.json").read_text())["curve"]
    assert [r["step"] for r in curve] == [0, 5, 10]
    assert curve[1]["groups"][1]["diff"] == pytest.approx(4.4 - 4.5)
    assert curve[2]["groups"][1]["n"] == 0 and curve[2]["groups"][2]["n"] == 1  # the jaxrun run stopped at 5
    assert (out / compare.PLOT_FILES[0]).read_bytes().startswith(b"\x89PNG")


def test_a_label_names_a_group_and_a_path_with_an_equals_sign_stays_a_path(tmp_path, capsys):
    odd = tmp_path / "lr=0.1"
    odd.mkdir()
    (odd / "run.txt").write_text(_val_log([(0, 10.8, 0), (5, 4.4, 160)], 10))
    plain = tmp_path / "b.txt"
    plain.write_text(_val_log([(0, 10.8, 0), (5, 4.5, 150)], 10))
    assert compare.labelled_group(f"fp8={plain}").label == "fp8"
    assert compare.labelled_group(str(odd)).label == read_group(str(odd)).label  # '/' before '=': a path
    assert compare.main([f"fp8={plain}", str(odd), "--no-plots"]) == 0
    assert "fp8 mean ± std (n)" in capsys.readouterr().out


def test_groups_share_no_step():
    assert "share no validation step" in compare.format_curve_table([])
