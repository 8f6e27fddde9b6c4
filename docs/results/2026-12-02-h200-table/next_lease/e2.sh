# Next lease, when time remains after e1.sh: the attention tile sweep at phase 3's three calls on this GPU (the table
# was swept on an H100 at phase 1's short and the extension's long window). On proxy-like documents a 64-row query
# block would compute 1.15x the visible pairs instead of 1.27x (../../2026-12-02-cpu-attention-tiles/); the sweep
# says whether the smaller tile's rate gives that back.
source .carry/setup.sh
el sweep; timeout $(left 585) python3 -m jaxrun.bench tune-attention --shape "phase 3 short" --shape "phase 3 long" \
  --shape "phase 3 paired" --json $R/tune_attention_phase3.json > $R/tune_attention_phase3.txt 2>&1; el "sweep exit $?"
finish
grep -E "ms" $R/tune_attention_phase3.txt | tail -45; cat $R/timeline.txt
