# Ninth sitting, lease command 3: the profile with the triton attention's floors on its useful FLOPs (the profiler change
# of the eighth sitting, not yet run on a GPU), phases 1 and 3; then the attention tile sweep at phase 3's calls.
source .carry/setup.sh
el profile; timeout 230 python3 -m jaxrun.bench step --config configs/record60.py $P --set schedule.scheduled_steps=150 \
  --phase 0 --phase 2 --skip-cold --benched-variants-only --steps 5 --warmup 2 --profile $R/prof --json $R/prof_bench.json \
  > $R/profile.txt 2>&1; el "profile exit $?"
rm -rf $R/prof/*/plugins 2>/dev/null
el sweep; timeout $(left 585) python3 -m jaxrun.bench tune-attention --shape "phase 3 short" --shape "phase 3 long" \
  --shape "phase 3 paired" --json $R/tune_attention_phase3.json > $R/tune_attention_phase3.txt 2>&1; el "sweep exit $?"
finish
tail -5 $R/profile.txt; tail -30 $R/tune_attention_phase3.txt; cat $R/timeline.txt
