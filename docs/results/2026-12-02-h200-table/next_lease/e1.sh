# Next lease: the phase-3 lever of this sitting's profile, accumulate_gathered_grad at 4.3x its floor once the head is
# untied (31 ms a step). Two candidate changes to jaxrun/ops.py, each benched against the shipped code in one process
# order (phase 1, tied, and phase 3, untied; --skip-cold), then the profile's row for the better one. Both patches give
# the same numbers as the shipped code on the CPU (tests/test_ops.py, tests/test_engine.py pass with each applied).
#   accumulate_hints.patch: the padding ids made distinct, so both scatters carry unique_indices / indices_are_sorted
#   accumulate_dense_embed.patch: the untied token embedding through a dense bf16 gradient, as while tied
source .carry/setup.sh
D=docs/results/2026-12-02-h200-table/next_lease
B="python3 -m jaxrun.bench step --config configs/record60.py $P --set schedule.scheduled_steps=150 --phase 0 --phase 2 --skip-cold --benched-variants-only --steps 10 --warmup 3"
el base; timeout 170 $B --json $R/base.json > $R/base.txt 2>&1; el "base exit $?"
for p in accumulate_hints accumulate_dense_embed; do
  git apply $D/$p.patch || { el "$p does not apply"; continue; }
  el $p; timeout $(left 560) $B --compare-to $R/base.json --json $R/$p.json > $R/$p.txt 2>&1; el "$p exit $?"
  git apply -R $D/$p.patch  # (not git checkout: the device keeps an older git index)
done
el base2; timeout $(left 585) $B --compare-to $R/base.json --json $R/base2.json > $R/base2.txt 2>&1; el "base2 exit $?"
finish
grep -hE "^(phase|extension) " $R/*.txt; cat $R/timeline.txt
