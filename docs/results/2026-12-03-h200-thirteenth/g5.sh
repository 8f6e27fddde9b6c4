# Thirteenth sitting, command 5: the attention forward's variants at phase 3's calls (attn_bench.py), then a profile
# of all four phases with the new CE kernel (the map for the next levers)
source .carry/setup.sh
D=docs/results/2026-12-03-h200-thirteenth
el variants; python3 $D/attn_variants.py /tmp/fa > $R/attn_names.txt
el attn_bench; timeout $(left 240) python3 $D/attn_bench.py /tmp/fa $(cat $R/attn_names.txt) 2>&1 | grep -v "^W\|^I0000" | tee $R/attn_bench.txt; cp /tmp/fa/attn_bench.json $R/ 2>/dev/null
B="python3 -m jaxrun.bench step --config configs/record60.py $P --set schedule.scheduled_steps=150 --skip-cold --benched-variants-only"
el profile; timeout $(left 470) $B --steps 4 --warmup 2 --profile /tmp/prof > $R/profile_bench.txt 2>&1; el "profile exit $?"
timeout $(left 570) python3 -m jaxrun.profiling /tmp/prof/phase0 /tmp/prof/phase1 /tmp/prof/phase2 /tmp/prof/phase3 --steps 2 \
  --labels "phase 1,phase 2,phase 3,extension" --markdown $R/profile_table.md --json $R/profile.json > $R/profiling.txt 2>&1
el "profiling exit $?"
finish
cat $R/attn_bench.txt; grep -A14 "^phase 3, roofline" $R/profile_table.md; cat $R/timeline.txt
