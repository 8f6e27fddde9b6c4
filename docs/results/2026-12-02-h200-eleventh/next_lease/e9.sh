# Next lease, command 2 (warm, right after e8, if its better patch paid; e8 left its name in .cache/e8_best): the GPU
# tests that exercise the embedding gradients in the compiled step, with that patch; then whether the chunked triton
# kernels (embed_grad_chunked.patch, best shape 128,32,128,4) still pay in phase 3 once XLA's scatters have their
# indices materialised; then a profile of all four phases with the patch, to refresh the map
# (../../2026-12-02-h200-tenth/m4_profile/).
source .carry/setup.sh
N=docs/results/2026-12-02-h200-eleventh/next_lease; T=docs/results/2026-12-02-h200-tenth/next_lease
X=$(cat .cache/e8_best 2>/dev/null || echo scatter_index_barrier); el "index patch: $X"
B="python3 -m jaxrun.bench step --config configs/record60.py $P --set schedule.scheduled_steps=150 --skip-cold --benched-variants-only --steps 10 --warmup 3"
git apply $N/$X.patch && el "$X applied"
el tests; timeout 280 python3 -m pytest -q -m gpu -n 0 -p no:cacheprovider -rA tests/test_engine.py tests/test_fp8_audit.py \
  > $R/gpu_tests_$X.txt 2>&1; el "tests exit $?"
el "$X bench"; timeout 80 $B --phase 2 --json $R/index_p3.json > $R/index_p3.txt 2>&1; el "exit $?"
git apply $T/embed_grad_chunked.patch && el "embed_grad applied"
sed -i 's/^ROWS_PER_TILE = 16 /ROWS_PER_TILE = 32 /; s/^BLOCK_D = 256 /BLOCK_D = 128 /; s/^NUM_WARPS = 8$/NUM_WARPS = 4/' kernels/embed_grad.py
el "$X + embed_grad bench"; timeout 80 $B --phase 2 --compare-to $R/index_p3.json > $R/index_eg_p3.txt 2>&1; el "exit $?"
# back to the index patch alone: undo the shape edit so the patch reverses cleanly, then check that it did
sed -i 's/^ROWS_PER_TILE = 32 /ROWS_PER_TILE = 16 /; s/^BLOCK_D = 128 /BLOCK_D = 256 /; s/^NUM_WARPS = 4$/NUM_WARPS = 8/' kernels/embed_grad.py
git apply -R $T/embed_grad_chunked.patch && [ ! -e kernels/embed_grad.py ] && el "embed_grad reverted" || { el "revert failed"; finish; exit 1; }
el profile; timeout $(left 500) $B --steps 4 --warmup 2 --profile /tmp/prof > $R/profile_bench.txt 2>&1; el "profile exit $?"
timeout $(left 585) python3 -m jaxrun.profiling /tmp/prof/phase0 /tmp/prof/phase1 /tmp/prof/phase2 /tmp/prof/phase3 --steps 2 \
  --labels "phase 1,phase 2,phase 3,extension" --markdown $R/profile_table.md --json $R/profile.json > $R/profiling.txt 2>&1
el "table exit $?"; git apply -R $N/$X.patch
finish
grep -E "passed|failed" $R/gpu_tests_$X.txt | tail -2; grep -hE "^phase 3 " $R/index_p3.txt $R/index_eg_p3.txt
grep -E "accumulate_gathered|transpose" $R/profile_table.md | head; cat $R/timeline.txt
