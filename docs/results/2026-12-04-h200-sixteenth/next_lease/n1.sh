# Next lease (~480 s, fresh machine): the three figures of issue 19 this sitting did not re-measure, on main as it is.
# 1. phase 3's peak memory with the record's micro-batch (one rank per forward: setup.sh turns preallocation off, so
#    the memory table keeps 65,536 tokens per forward), in a process that benches phase 3 alone; the bound is 30 GiB;
# 2. the training loop's first timed step against its median, alone on the GPU, jax's default preallocation;
# 3. one rank's step per device (as on 8 GPUs), then the 8-GPU projection on paper (`bench project`).
source .carry/setup.sh
el peak3; timeout $(left 150) python3 -m jaxrun.bench step --config configs/record60.py $P --set schedule.scheduled_steps=150 \
  --phase 2 --skip-cold --benched-variants-only --steps 5 --warmup 2 --json $R/phase3_alone.json > $R/phase3_alone.txt 2>&1
el "peak3 exit $?"
el train; env -u XLA_PYTHON_CLIENT_PREALLOCATE timeout $(left 300) python3 -m jaxrun.train --config configs/record60.py $P \
  --set run.seed=0 --set run.val_every=1000 --name first_step --stop-at 61 > $R/train_first_step.txt 2>&1; el "train exit $?"
python3 - $R/train_first_step.txt > $R/first_step.txt <<'PY'
import re, statistics, sys
text = open(sys.argv[1]).read()
t = {int(s): int(ms) for s, ms in re.findall(r"^step:(\d+)/\d+ train_time:(\d+)ms", text, re.M)}
first = re.search(r"first timed step \(synchronised\): ([\d.]+)ms", text)
diffs = [t[s] - t[s - 1] for s in range(11, max(t) + 1) if s in t and s - 1 in t]
if first and diffs:
    f, m = float(first.group(1)), statistics.median(diffs)
    print(f"first timed step {f:.1f} ms, median of steps 11-{max(t)} {m:.1f} ms, ratio {f / m:.3f}")
else:
    print("no figures: see train_first_step.txt")
PY
el 1rank; timeout $(left 420) python3 -m jaxrun.bench step --config configs/record60.py $P --set data.num_ranks=1 --skip-cold \
  --benched-variants-only --steps 6 --warmup 2 --json $R/bench_1rank.json > $R/bench_1rank.txt 2>&1; el "1-rank bench exit $?"
timeout $(left 470) python3 -m jaxrun.bench project --step-json $R/bench_1rank.json --config configs/record60.py $P \
  --json $R/projection.json > $R/projection.txt 2>&1; el "projection exit $?"
finish
grep -hE "^phase 3 " $R/phase3_alone.txt; cat $R/first_step.txt; tail -12 $R/projection.txt; cat $R/timeline.txt
