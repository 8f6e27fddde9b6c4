# Next lease, command 2 of 2, right after n1.sh on the same (warm) machine: the reference's timed 150-step run
# (its own warm-up first, which finishes compiling from the Inductor cache n1.sh began), then jaxrun's bench again
# through the persistent cache n1.sh filled, with the reference's step lines as --compare-to.
source .carry/setup.sh
export TORCHINDUCTOR_CACHE_DIR=$PWD/.cache/inductor
el ref; SCHED_ITERS=150 STOP_AFTER=189 SEED=0 VAL_EVERY=0 \
  TRAIN_FILES='data/proxy16/fineweb_train_*.bin' VAL_FILES='data/proxy16/fineweb_val_*.bin' PYTHONPATH= \
  TRITON_CACHE_DIR=$PWD/.cache/triton timeout 520 torchrun --standalone --nproc_per_node=1 .carry/ref_sched.py 2>&1 \
  | grep -v "^\[rank0\]:W" > $R/ref.txt; el "ref exit $?"
grep -E "^step:" $R/ref.txt > $R/ref_steps.txt
el bench; timeout $(left 588) python3 -m jaxrun.bench step --config configs/record60.py $P --set schedule.scheduled_steps=150 \
  --skip-cold --steps 10 --warmup 3 --compare-to $R/ref_steps.txt --json $R/bench_vs_ref.json > $R/bench_vs_ref.txt 2>&1
el "bench exit $?"
finish
grep -E "^(phase|extension) " $R/bench_vs_ref.txt; tail -3 $R/ref_steps.txt; cat $R/timeline.txt
