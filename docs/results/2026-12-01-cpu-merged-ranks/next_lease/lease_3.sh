# next lease, command 3 (~9 min), after command 2: the 301-step curve of what paid there (edit CHOICE), then the one-rank
# bench and `bench project` for the 8-GPU projection
CHOICE="--set model.train_forward_tokens=131072"   # or the mlp=xla override, or both, or nothing
source .carry/setup.sh
R=$OUT/r; mkdir -p $R; export R
( while true; do sleep 10; tar czf $OUT/res.tgz.tmp -C $R . 2>/dev/null && mv $OUT/res.tgz.tmp $OUT/res.tgz; done ) &
TARLOOP=$!
left() { echo $(( $1 - SECONDS )); }
el() { echo "[$SECONDS s] $*" | tee -a $R/timeline.txt; }
el start
timeout $(left 240) python3 -m jaxrun.train --config configs/record60.py $P $CHOICE --set run.val_every=100 \
  --set run.seed=0 --name choice --stop-at 301 > $R/train_choice.txt 2>&1; el "train exit $?"
cp runs/choice/metrics.jsonl $R/metrics_choice.jsonl 2>/dev/null
timeout $(left 540) python3 -m jaxrun.bench step --config configs/record60.py $P --set data.num_ranks=1 --skip-cold \
  --benched-variants-only --steps 6 --warmup 2 --json $R/bench_1rank.json > $R/bench_1rank.txt 2>&1; el "1-rank bench exit $?"
timeout $(left 590) python3 -m jaxrun.bench project --step-json $R/bench_1rank.json --config configs/record60.py $P \
  --json $R/projection.json > $R/projection.txt 2>&1; el "projection exit $?"
kill $TARLOOP; tar czf $OUT/res.tgz -C $R .
grep -h "val_loss\|first timed\|compiled\|per device" $R/train_choice.txt | head; tail -20 $R/projection.txt
cat $R/timeline.txt
