# next lease, command 3 (~9.5 min), after command 2 (copy its bench_new.json to .carry/): mlp=xla against it, the
# 301-step curve of what paid (edit CHOICE), then the one-rank bench and `bench project` for the 8-GPU projection
CHOICE="--set model.train_forward_tokens=131072"   # the best budget of command 2, or nothing
MLPX="model.backends=(('attention','auto'),('lm_head','auto'),('mlp','xla'),('cross_entropy','auto'),('head_loss','auto'))"
source .carry/setup.sh  # this folder's setup.sh, copied into .carry/
el start
timeout $(left 140) python3 -m jaxrun.bench step --config configs/record60.py $P --set schedule.scheduled_steps=150 \
  --set "$MLPX" --skip-cold --benched-variants-only --steps 10 --warmup 3 --compare-to .carry/bench_new.json \
  --json $R/bench_mlpxla.json > $R/bench_mlpxla.txt 2>&1; el "bench mlp xla exit $?"
timeout $(left 380) python3 -m jaxrun.train --config configs/record60.py $P $CHOICE --set run.val_every=100 \
  --set run.seed=0 --name choice --stop-at 301 > $R/train_choice.txt 2>&1; el "train exit $?"
cp runs/choice/metrics.jsonl $R/metrics_choice.jsonl 2>/dev/null
timeout $(left 560) python3 -m jaxrun.bench step --config configs/record60.py $P --set data.num_ranks=1 --skip-cold \
  --benched-variants-only --steps 6 --warmup 2 --json $R/bench_1rank.json > $R/bench_1rank.txt 2>&1; el "1-rank bench exit $?"
timeout $(left 590) python3 -m jaxrun.bench project --step-json $R/bench_1rank.json --config configs/record60.py $P \
  --json $R/projection.json > $R/projection.txt 2>&1; el "projection exit $?"
finish
grep -v "^\s*$" $R/bench_mlpxla.txt | tail -10; grep -h "val_loss\|first timed\|compiled\|per device" $R/train_choice.txt | head; tail -20 $R/projection.txt
cat $R/timeline.txt
