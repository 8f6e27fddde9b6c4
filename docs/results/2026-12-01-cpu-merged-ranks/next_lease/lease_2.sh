# next lease, command 2 (~9.5 min): the CE kernels bit for bit against beff1a0's on the GPU (kcheck.py, needs
# .carry/oldtree.tar), then three bench steps one after the other, each --compare-to the one before:
# this code cold + warm (both caches) against the PyTorch log; mlp=xla; and up to 131,072 tokens per forward
source .carry/setup.sh
R=$OUT/r; mkdir -p $R; export R
( while true; do sleep 10; tar czf $OUT/res.tgz.tmp -C $R . 2>/dev/null && mv $OUT/res.tgz.tmp $OUT/res.tgz; done ) &
TARLOOP=$!
left() { echo $(( $1 - SECONDS )); }
el() { echo "[$SECONDS s] $*" | tee -a $R/timeline.txt; }
mkdir -p /tmp/o && tar xf .carry/oldtree.tar -C /tmp/o && ln -s ../kernels /tmp/o/jaxrun/kernels
el start
timeout 100 python3 docs/results/2026-12-01-h200-ce-kernel/next_lease/kcheck.py > $R/kcheck.txt 2>&1; el "kcheck exit $?"
S150="--set schedule.scheduled_steps=150"
TORCH="--compare-to docs/results/2026-12-01-h200-side-by-side/pytorch_ref_sched150.txt"
timeout $(left 330) python3 -m jaxrun.bench step --config configs/record60.py $P $S150 $TORCH --steps 10 --warmup 3 \
  --json $R/bench_new.json > $R/bench_new.txt 2>&1; el "bench new exit $?"
MLPX="model.backends=(('attention','auto'),('lm_head','auto'),('mlp','xla'),('cross_entropy','auto'),('head_loss','auto'))"
timeout $(left 460) python3 -m jaxrun.bench step --config configs/record60.py $P $S150 --set "$MLPX" --skip-cold \
  --benched-variants-only --steps 10 --warmup 3 --compare-to $R/bench_new.json --json $R/bench_mlpxla.json \
  > $R/bench_mlpxla.txt 2>&1; el "bench mlp xla exit $?"
timeout $(left 590) python3 -m jaxrun.bench step --config configs/record60.py $P $S150 \
  --set model.train_forward_tokens=131072 --skip-cold --benched-variants-only --steps 10 --warmup 3 \
  --compare-to $R/bench_new.json --json $R/bench_merged.json > $R/bench_merged.txt 2>&1; el "bench merged exit $?"
kill $TARLOOP; tar czf $OUT/res.tgz -C $R .
tail -2 $R/kcheck.txt; for f in new mlpxla merged; do echo "== $f"; grep -v "^\s*$" $R/bench_$f.txt | tail -12; done
cat $R/timeline.txt
