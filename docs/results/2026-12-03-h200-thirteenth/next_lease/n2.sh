# Next lease, command 2 (warm machine, right after n1.sh): the reference's timed run (its warm-up finishes the cache
# n1 began), then jaxrun's bench (cold compile, then every phase) beside its step lines: the table, one sitting
source .carry/setup.sh
source docs/results/2026-12-02-h200-table/ref.sh
el ref; ref $R/ref.txt $(left 420); el "ref ended"
grep -E "^step:" $R/ref.txt > $R/ref_steps.txt
if grep -q "^step:189/190 val_loss" $R/ref.txt; then cp $R/ref_steps.txt .cache/ref_steps.txt; fi
if [ -f .cache/ref_steps.txt ] && [ $(left 580) -gt 130 ]; then
  el bench; TRITON_CACHE_DIR=$(mktemp -d) timeout $(left 580) python3 -m jaxrun.bench step --config configs/record60.py $P \
    --set schedule.scheduled_steps=150 --steps 10 --warmup 3 --compare-to .cache/ref_steps.txt --json $R/bench.json > $R/bench.txt 2>&1
  el "bench exit $?"
fi
finish
tail -4 $R/ref_steps.txt; grep -E "^(phase|extension) |^compile|ratio|rror" $R/bench.txt; cat $R/timeline.txt
