# Ninth sitting, lease command 1: the prepared levers, each benched against the shipped code in phase 1 (tied) and
# phase 3 (untied) on one machine, back to back (--skip-cold; a patch changes the sources, so it recompiles).
# The accumulation op alone first (accumulate_micro.py: shipped vs both candidates, bit for bit checked).
source .carry/setup.sh
D=docs/results/2026-12-02-h200-levers
N=docs/results/2026-12-02-h200-table/next_lease  # the eighth sitting's patches and accumulate_micro.py (copies of them ran)
B="python3 -m jaxrun.bench step --config configs/record60.py $P --set schedule.scheduled_steps=150 --phase 0 --phase 2 --skip-cold --benched-variants-only --steps 10 --warmup 3"
el micro; timeout 90 python3 $N/accumulate_micro.py > $R/accumulate_micro.txt 2>&1; el "micro exit $?"
el base; timeout 170 $B --json $R/base.json > $R/base.txt 2>&1; el "base exit $?"
for p in accumulate_hints accumulate_dense_embed attention_dkdv_3stages accumulate_hints_dense; do
  [ $(left 560) -gt 60 ] || { el "no time for $p"; continue; }
  f=$N/$p.patch; [ -f $f ] || f=$D/$p.patch
  git apply $f || { el "$p does not apply"; continue; }
  el $p; timeout $(left 590) $B --compare-to $R/base.json --json $R/$p.json > $R/$p.txt 2>&1; el "$p exit $?"
  git apply -R $f  # (not git checkout: the device may keep an older git index)
done
finish
cat $R/accumulate_micro.txt | tail -8; for f in $R/*.txt; do echo "== $f"; grep -hE "^(phase|extension) |ratio|compile" $f | head -8; done; cat $R/timeline.txt
