# Twelfth sitting, command 2 (fresh machine: e8's warm one was lost). The index fix (ops._distinct_tokens) is landed
# now, so no patch is applied for it.
#   1. the GPU tests of the compiled step's embedding gradients: tests/test_engine.py tests/test_fp8_audit.py -m gpu
#   2. phase 3 alone, then with the chunked triton kernels (embed_grad_chunked.patch at its best shape 128,32,128,4):
#      do they still pay once XLA's scatters read their indices as buffers?
#   3. a profile of all four phases, to refresh the map for the next levers
source .carry/setup.sh
T=docs/results/2026-12-02-h200-tenth/next_lease
B="python3 -m jaxrun.bench step --config configs/record60.py $P --set schedule.scheduled_steps=150 --skip-cold --benched-variants-only --steps 10 --warmup 3"
el tests; timeout 290 python3 -m pytest -q -m gpu -n 0 -p no:cacheprovider -rA tests/test_engine.py tests/test_fp8_audit.py \
  > $R/gpu_tests.txt 2>&1; el "tests exit $?"
el "p3 bench"; timeout 80 $B --phase 2 --json $R/p3.json > $R/p3.txt 2>&1; el "exit $?"
git apply $T/embed_grad_chunked.patch && el "embed_grad applied"
sed -i 's/^ROWS_PER_TILE = 16 /ROWS_PER_TILE = 32 /; s/^BLOCK_D = 256 /BLOCK_D = 128 /; s/^NUM_WARPS = 8$/NUM_WARPS = 4/' kernels/embed_grad.py
el "embed_grad bench"; timeout 80 $B --phase 2 --compare-to $R/p3.json > $R/eg_p3.txt 2>&1; el "exit $?"
sed -i 's/^ROWS_PER_TILE = 32 /ROWS_PER_TILE = 16 /; s/^BLOCK_D = 128 /BLOCK_D = 256 /; s/^NUM_WARPS = 4$/NUM_WARPS = 8/' kernels/embed_grad.py
git apply -R $T/embed_grad_chunked.patch && [ ! -e kernels/embed_grad.py ] && el "embed_grad reverted" || { el "revert failed"; finish; exit 1; }
el profile; timeout $(left 500) $B --steps 4 --warmup 2 --profile /tmp/prof > $R/profile_bench.txt 2>&1; el "profile exit $?"
timeout $(left 585) python3 -m jaxrun.profiling /tmp/prof/phase0 /tmp/prof/phase1 /tmp/prof/phase2 /tmp/prof/phase3 --steps 2 \
  --labels "phase 1,phase 2,phase 3,extension" --markdown $R/profile_table.md --json $R/profile.json > $R/profiling.txt 2>&1
el "table exit $?"
finish
grep -E "passed|failed" $R/gpu_tests.txt | tail -2; grep -hE "^phase 3 " $R/p3.txt $R/eg_p3.txt
head -40 $R/profile_table.md; cat $R/timeline.txt
