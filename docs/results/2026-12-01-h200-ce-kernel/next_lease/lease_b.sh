# lease 2, command B (prepared 2026-12-01, not run: refused): the 300-step curve of the shipped config (alone), the GPU
# tests of the CE kernels and the compiled step's head, then the one-rank bench for the 8-GPU projection
source .carry/setup.sh
R=$OUT/r; mkdir -p $R; export R
( while true; do sleep 10; tar czf $OUT/res.tgz.tmp -C $R . 2>/dev/null && mv $OUT/res.tgz.tmp $OUT/res.tgz; done ) &
TARLOOP=$!
left() { echo $(( $1 - SECONDS )); }
el() { echo "[$SECONDS s] $*" | tee -a $R/timeline.txt; }
el start
timeout $(left 200) python3 -m jaxrun.train --config configs/record60.py $P --set run.val_every=100 --set run.seed=0 \
  --name cur --stop-at 301 > $R/train.txt 2>&1; el "train exit $?"
cp runs/cur/metrics.jsonl $R/ 2>/dev/null
timeout $(left 400) python3 -m pytest -q -m gpu -n 0 -p no:cacheprovider -rA \
  tests/test_kernels_dense.py -k "cross_entropy or head_loss" > $R/tests_dense.txt 2>&1; el "dense tests exit $?"
timeout $(left 470) python3 -m pytest -q -m gpu -n 0 -p no:cacheprovider -rA \
  "tests/test_fp8_audit.py::test_fused_head_loss_in_the_compiled_step_gives_the_separate_ops_gradients" \
  "tests/test_fp8_audit.py::test_head_and_embedding_gradients_in_the_compiled_step" > $R/tests_audit.txt 2>&1; el "audit tests exit $?"
timeout $(left 560) python3 -m jaxrun.bench step --config configs/record60.py $P --set data.num_ranks=1 --skip-cold \
  --benched-variants-only --steps 6 --warmup 2 --json $R/bench_1rank.json > $R/bench_1rank.txt 2>&1; el "1-rank bench exit $?"
timeout $(left 590) python3 -m jaxrun.bench project --step-json $R/bench_1rank.json --config configs/record60.py $P \
  --json $R/projection.json > $R/projection.txt 2>&1; el "projection exit $?"
kill $TARLOOP; tar czf $OUT/res.tgz -C $R .
grep -h "val_loss\|first timed\|compiled" $R/train.txt | head; grep -hE "PASSED|FAILED|ERROR|passed|failed" $R/tests_*.txt | tail -30
tail -20 $R/projection.txt; cat $R/timeline.txt
