# Command 3 (warm machine): whatever s2 left undone (the reference's timed run, jaxrun's bench beside it), then a
# profile of the shipped step and 98,304 tokens per forward with jax's default preallocation, as time allows.
source .carry/setup.sh
source docs/results/2026-12-02-h200-table/ref.sh
if [ ! -f .cache/ref_steps.txt ]; then
  el ref; ref $R/ref.txt $(left 400); el "ref ended"; grep -E "^step:" $R/ref.txt > $R/ref_steps.txt
  grep -q "^step:189/190 val_loss" $R/ref.txt && cp $R/ref_steps.txt .cache/ref_steps.txt
fi
if [ ! -f .cache/bench.json ]; then
  el bench; TRITON_CACHE_DIR=$(mktemp -d) timeout $(left 590) python3 -m jaxrun.bench step --config configs/record60.py $P \
    --set schedule.scheduled_steps=150 --steps 10 --warmup 3 --compare-to .cache/ref_steps.txt --json $R/bench.json > $R/bench.txt 2>&1
  rc=$?; el "bench exit $rc"; [ $rc = 0 ] && cp $R/bench.json .cache/bench.json
fi
if [ $(left 590) -gt 150 ]; then
  el profile; XLA_FLAGS=--xla_gpu_enable_command_buffer= timeout $(left 560) python3 -m jaxrun.bench step --config configs/record60.py $P \
    --set schedule.scheduled_steps=150 --skip-cold --benched-variants-only --steps 4 --warmup 2 --profile /tmp/prof > $R/profile_bench.txt 2>&1
  el "profile exit $?"
  timeout $(left 590) python3 -m jaxrun.profiling /tmp/prof/phase0 /tmp/prof/phase1 /tmp/prof/phase2 /tmp/prof/phase3 --steps 2 \
    --labels "phase 1,phase 2,phase 3,extension" --markdown $R/profile_table.md --json $R/profile.json > $R/profiling.txt 2>&1; el "table exit $?"
fi
if [ $(left 590) -gt 110 ] && [ -f .cache/bench.json ]; then
  el bench98304; env -u XLA_PYTHON_CLIENT_PREALLOCATE timeout $(left 590) python3 -m jaxrun.bench step --config configs/record60.py $P \
    --set schedule.scheduled_steps=150 --skip-cold --steps 10 --warmup 3 --set model.train_forward_tokens=98304 \
    --compare-to .cache/bench.json --json $R/bench_98304_prealloc.json > $R/bench_98304_prealloc.txt 2>&1; el "exit $?"
fi
finish
grep -E "^(phase|extension) |^compile|error" $R/bench.txt $R/bench_98304_prealloc.txt 2>/dev/null; tail -3 $R/profiling.txt 2>/dev/null; cat $R/timeline.txt
