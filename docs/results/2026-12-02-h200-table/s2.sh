# Command 2 (warm machine, within ~30 s of s1): the reference's timed run; its warm-up finishes the cache s1 began.
# Then, if time is left, jaxrun's bench (cold compile, then every phase) with the reference's step lines beside it.
source .carry/setup.sh
source docs/results/2026-12-02-h200-table/ref.sh
el ref; ref $R/ref.txt $(left 585); el "ref ended"
grep -E "^step:" $R/ref.txt > $R/ref_steps.txt
if grep -q "^step:189/190 val_loss" $R/ref.txt; then cp $R/ref.txt .cache/ref.txt; cp $R/ref_steps.txt .cache/ref_steps.txt; fi
if [ -f .cache/ref_steps.txt ] && [ $(left 590) -gt 190 ]; then
  el bench; TRITON_CACHE_DIR=$(mktemp -d) timeout $(left 590) python3 -m jaxrun.bench step --config configs/record60.py $P \
    --set schedule.scheduled_steps=150 --steps 10 --warmup 3 --compare-to .cache/ref_steps.txt --json $R/bench.json > $R/bench.txt 2>&1
  rc=$?; el "bench exit $rc"; [ $rc = 0 ] && cp $R/bench.json .cache/bench.json
fi
finish
tail -4 $R/ref_steps.txt; grep -E "^(phase|extension) |^compile|ratio|error" $R/bench.txt 2>/dev/null; cat $R/timeline.txt
