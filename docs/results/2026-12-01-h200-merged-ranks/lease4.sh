source .carry/setup.sh
el start
timeout $(left 210) python3 -m jaxrun.train --config configs/record60.py $P --set model.train_forward_tokens=65536 \
  --set run.val_every=100 --set run.seed=0 --name m65 --stop-at 301 > $R/train_m65.txt 2>&1; el "train m65 exit $?"
cp runs/m65/metrics.jsonl $R/metrics_m65.jsonl 2>/dev/null
timeout $(left 290) python3 -m pytest -q -m gpu -n 0 -p no:cacheprovider -rA \
  "tests/test_engine.py::test_merged_ranks_in_the_compiled_step_with_the_gpu_kernels" > $R/tests_merged.txt 2>&1; el "merged test exit $?"
MLPX="model.backends=(('attention','auto'),('lm_head','auto'),('mlp','xla'),('cross_entropy','auto'),('head_loss','auto'))"
timeout $(left 420) python3 -m jaxrun.bench step --config configs/record60.py $P --set schedule.scheduled_steps=150 \
  --set "$MLPX" --skip-cold --benched-variants-only --steps 10 --warmup 3 --compare-to .carry/bench_new.json \
  --json $R/bench_mlpxla.json > $R/bench_mlpxla.txt 2>&1; el "bench mlp xla exit $?"
timeout $(left 560) python3 -m jaxrun.bench step --config configs/record60.py $P --set data.num_ranks=1 --skip-cold \
  --benched-variants-only --steps 6 --warmup 2 --json $R/bench_1rank.json > $R/bench_1rank.txt 2>&1; el "1-rank bench exit $?"
timeout $(left 585) python3 -m jaxrun.bench project --step-json $R/bench_1rank.json --config configs/record60.py $P \
  --json $R/projection.json > $R/projection.txt 2>&1; el "projection exit $?"
finish
grep -h "val_loss\|first timed\|per device" $R/train_m65.txt | head; grep -hE "PASSED|FAILED|^E " $R/tests_merged.txt | head -5
grep -v "^\s*$" $R/bench_mlpxla.txt | tail -8; tail -12 $R/projection.txt; cat $R/timeline.txt
