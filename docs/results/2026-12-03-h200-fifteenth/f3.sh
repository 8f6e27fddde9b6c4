# Fifteenth sitting, command 3 (dsdq.patch with the 64 x 64 dQ tile installed in the working tree): cold compile of every
# step variant, then a profile of all four phases with jax's default preallocation (the shipped forwards)
source .carry/setup.sh
B="python3 -m jaxrun.bench step --config configs/record60.py $P --set schedule.scheduled_steps=150 --benched-variants-only"
el cold; env -u XLA_PYTHON_CLIENT_PREALLOCATE timeout $(left 300) $B --steps 4 --warmup 2 --json $R/cold.json > $R/cold.txt 2>&1; el "cold exit $?"
el profile; env -u XLA_PYTHON_CLIENT_PREALLOCATE timeout $(left 500) $B --skip-cold --steps 4 --warmup 2 --profile /tmp/prof > $R/profile_bench.txt 2>&1; el "profile exit $?"
timeout $(left 580) python3 -m jaxrun.profiling /tmp/prof/phase0 /tmp/prof/phase1 /tmp/prof/phase2 /tmp/prof/phase3 --steps 2 \
  --labels "phase 1,phase 2,phase 3,extension" --markdown $R/profile_table.md --json $R/profile.json > $R/profiling.txt 2>&1
el "profiling exit $?"
finish
grep -iE "compil|cold|cache" $R/cold.txt | head; grep -hE "^(phase|extension) " $R/cold.txt $R/profile_bench.txt; grep -A16 "^phase 3, roofline" $R/profile_table.md; cat $R/timeline.txt
