# Ninth sitting, lease command 5 (run inline, as written here): the new attention tiles against the shipped ones in
# phase 2 and the extension.
source .carry/setup.sh; D=docs/results/2026-12-02-h200-levers
B="python3 -m jaxrun.bench step --config configs/record60.py $P --set schedule.scheduled_steps=150 --phase 1 --phase 3 --skip-cold --benched-variants-only --steps 10 --warmup 3"
el base13; timeout 90 $B --json $R/base13.json > $R/base13.txt 2>&1; el "exit $?"
git apply $D/attention_fwd64_dkdv3.patch
el cand13; timeout 100 $B --compare-to $R/base13.json --json $R/cand13.json > $R/cand13.txt 2>&1; el "exit $?"
git apply -R $D/attention_fwd64_dkdv3.patch
finish; grep -hE "^(phase|extension) " $R/base13.txt $R/cand13.txt; cat $R/timeline.txt
