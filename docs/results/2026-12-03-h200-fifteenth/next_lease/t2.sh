# Next lease, command 2 (warm machine, right after t1.sh, ~510 s): the reference's timed run (its warm-up finishes the
# cache t1 began), then jaxrun's bench alone with jax's default preallocation (the shipped forwards): cold compile of
# every variant and every phase, beside the reference's step lines
source .carry/setup.sh
source docs/results/2026-12-02-h200-table/ref.sh
el ref; ref $R/ref.txt $(left 400); el "ref ended"
grep -E "^step:" $R/ref.txt > $R/ref_steps.txt
if grep -q "^step:189/190 val_loss" $R/ref.txt; then cp $R/ref_steps.txt .cache/ref_steps.txt; fi
if [ -f .cache/ref_steps.txt ] && [ $(left 585) -gt 100 ]; then
  el bench; env -u XLA_PYTHON_CLIENT_PREALLOCATE TRITON_CACHE_DIR=$(mktemp -d) timeout $(left 585) python3 -m jaxrun.bench step \
    --config configs/record60.py $P --set schedule.scheduled_steps=150 --steps 10 --warmup 3 \
    --compare-to .cache/ref_steps.txt --json $R/bench.json > $R/bench.txt 2>&1
  el "bench exit $?"; cp $R/bench.json .cache/bench_t2.json 2>/dev/null
fi
finish
tail -3 $R/ref_steps.txt; grep -hE "^(phase|extension) |^compile|ratio|tokens per forward|peak|rror" $R/bench.txt; cat $R/timeline.txt
