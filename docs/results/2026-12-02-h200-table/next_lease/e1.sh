# Next lease: three candidate changes, each benched against the shipped code in phase 1 (tied) and phase 3 (untied)
# (--skip-cold; the lowering cache keys on the sources, so a patch recompiles). Levers of this sitting's profile:
#   accumulate_hints.patch: accumulate_gathered_grad (4.3x its floor once the head is untied, 31 ms a phase-3 step):
#     the padding ids made distinct, so both scatters carry unique_indices / indices_are_sorted
#   accumulate_dense_embed.patch: the untied token embedding through a dense bf16 gradient, as while tied
#     (both give the shipped numbers on the CPU: tests/test_ops.py and tests/test_engine.py pass with each applied)
#   attention_dkdv_3stages.patch: the dK dV kernel with 3 pipeline stages (3-4% faster alone in an H100 sweep); its
#     correctness tests (the attention GPU tests) run with it applied
source .carry/setup.sh
D=docs/results/2026-12-02-h200-table/next_lease
B="python3 -m jaxrun.bench step --config configs/record60.py $P --set schedule.scheduled_steps=150 --phase 0 --phase 2 --skip-cold --benched-variants-only --steps 10 --warmup 3"
el micro; timeout 120 python3 $D/accumulate_micro.py > $R/accumulate_micro.txt 2>&1; el "micro exit $?"  # the op alone
el base; timeout 170 $B --json $R/base.json > $R/base.txt 2>&1; el "base exit $?"
for p in accumulate_hints accumulate_dense_embed attention_dkdv_3stages; do
  git apply $D/$p.patch || { el "$p does not apply"; continue; }
  el $p; timeout $(left 500) $B --compare-to $R/base.json --json $R/$p.json > $R/$p.txt 2>&1; el "$p exit $?"
  if [ $p = attention_dkdv_3stages ]; then
    timeout $(left 585) python3 -m pytest -q -m gpu -n 0 -p no:cacheprovider -rA tests/test_kernels_attention.py \
      > $R/gpu_tests_attention_3stages.txt 2>&1; el "attention tests exit $?"
  fi
  git apply -R $D/$p.patch  # (not git checkout: the device may keep an older git index)
done
finish
cat $R/accumulate_micro.txt; grep -hE "^(phase|extension) " $R/*.txt; grep -E "passed|failed" $R/gpu_tests_attention_3stages.txt | tail -1; cat $R/timeline.txt
