# Next lease, command 3 (warm machine, alone, ~350 s): attn_variants.py's kernels at phase 3's calls (the thirteenth
# sitting's attn_bench.py: times, and the largest differences from the committed kernels' outputs and gradients);
# then, if the fastest beats the committed kernels by more than 2% in fwd+bwd over the three calls, the whole step of
# all four phases, committed first, then it
source .carry/setup.sh
D=docs/results/2026-12-03-h200-fifteenth/next_lease
mkdir -p /tmp/fa; cp kernels/flash_attention.py /tmp/fa/fa_committed.py
NAMES=$(python3 $D/attn_variants.py /tmp/fa); el "variants: $NAMES"
el attn_bench; timeout $(left 270) python3 docs/results/2026-12-03-h200-thirteenth/attn_bench.py /tmp/fa $NAMES 2>&1 \
  | grep -v "^W\|^I0000" | tee $R/attn_bench.txt; cp /tmp/fa/attn_bench.json $R/ 2>/dev/null; el "attn_bench exit $?"
PICK=$(python3 - <<'PY'
import json, collections
r = json.load(open("/tmp/fa/attn_bench.json")); tot = collections.defaultdict(float)
for key, row in r.items():
    tot[key.split("|")[1]] += row["fwd_bwd_ms"]
best = min((n for n in tot if n != "base"), key=tot.get)
print(best, dict(tot), file=open("/tmp/fa/pick.txt", "w"))
print(best if tot[best] < 0.98 * tot["base"] else "")
PY
)
cp /tmp/fa/pick.txt $R/attn_pick.txt; el "picked '${PICK}'"
if [ -n "$PICK" ]; then
  B="python3 -m jaxrun.bench step --config configs/record60.py $P --set schedule.scheduled_steps=150 --skip-cold --benched-variants-only --steps 10 --warmup 3"
  el base; env -u XLA_PYTHON_CLIENT_PREALLOCATE timeout $(left 450) $B --json $R/base.json > $R/base.txt 2>&1; el "exit $?"
  cp /tmp/fa/fa_$PICK.py kernels/flash_attention.py
  el $PICK; env -u XLA_PYTHON_CLIENT_PREALLOCATE timeout $(left 585) $B --compare-to $R/base.json --json $R/pick.json > $R/pick.txt 2>&1; el "exit $?"
  cp /tmp/fa/fa_committed.py kernels/flash_attention.py  # not git: the device copy has an older git directory
fi
finish
cat $R/attn_bench.txt $R/attn_pick.txt; grep -hE "^(phase|extension) |tokens per forward|rror" $R/base.txt $R/pick.txt 2>/dev/null | grep -v steps; cat $R/timeline.txt
