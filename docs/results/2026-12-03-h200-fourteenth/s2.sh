# Command 2 (warm machine, right after s1.sh): the reference's timed run (its warm-up finishes the cache s1 began),
# then jaxrun's bench alone with jax's default preallocation (75%: a 105 GiB pool, so the memory table's 131,072
# tokens per forward in phases 1-2 and 98,304 in phase 3 and the extension): cold compile, every phase, beside the
# reference's step lines. Then phases 1-2 again at 65,536 (the table without its 131,072 entry), against it.
source .carry/setup.sh
source docs/results/2026-12-02-h200-table/ref.sh
el ref; ref $R/ref.txt $(left 400); el "ref ended"
grep -E "^step:" $R/ref.txt > $R/ref_steps.txt
if grep -q "^step:189/190 val_loss" $R/ref.txt; then cp $R/ref_steps.txt .cache/ref_steps.txt; fi
if [ -f .cache/ref_steps.txt ] && [ $(left 585) -gt 100 ]; then
  el bench; env -u XLA_PYTHON_CLIENT_PREALLOCATE TRITON_CACHE_DIR=$(mktemp -d) timeout $(left 585) python3 -m jaxrun.bench step \
    --config configs/record60.py $P --set schedule.scheduled_steps=150 --steps 10 --warmup 3 \
    --compare-to .cache/ref_steps.txt --json $R/bench.json > $R/bench.txt 2>&1
  el "bench exit $?"
fi
if [ -f $R/bench.json ] && [ $(left 585) -gt 40 ]; then
  el bench65536; env -u XLA_PYTHON_CLIENT_PREALLOCATE timeout $(left 585) python3 -m jaxrun.bench step --config configs/record60.py $P \
    --set schedule.scheduled_steps=150 --set "model.forward_tokens_by_memory=((64,98304),)" --phase 0 --phase 1 --skip-cold \
    --benched-variants-only --steps 10 --warmup 3 --compare-to $R/bench.json --json $R/bench_65536.json > $R/bench_65536.txt 2>&1
  el "bench65536 exit $?"
fi
finish
tail -3 $R/ref_steps.txt; grep -hE "^(phase|extension) |^compile|ratio|tokens per forward|peak|rror" $R/bench.txt $R/bench_65536.txt; cat $R/timeline.txt
