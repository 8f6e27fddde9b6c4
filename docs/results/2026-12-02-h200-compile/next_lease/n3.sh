# Next lease, when time remains: 98,304 tokens per forward in one all-phase bench with jax's default preallocation
# (one region of 75% of the memory, as `python -m jaxrun.train` runs unless told otherwise), against the shipped
# 65,536 of n1.sh's bench. setup.sh turns preallocation off; this command turns it back on for the bench only.
# (copy n1.sh's bench.json to .carry/bench.json first)
source .carry/setup.sh
el bench98304; env -u XLA_PYTHON_CLIENT_PREALLOCATE timeout $(left 580) python3 -m jaxrun.bench step --config configs/record60.py $P \
  --set schedule.scheduled_steps=150 --skip-cold --steps 10 --warmup 3 --set model.train_forward_tokens=98304 \
  --compare-to .carry/bench.json --json $R/bench_98304_prealloc.json > $R/bench_98304_prealloc.txt 2>&1; el "exit $?"
finish
grep -E "^(phase|extension) |error" $R/bench_98304_prealloc.txt
