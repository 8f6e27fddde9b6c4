# Twelfth sitting, command 4: the index fix A/B on one machine, all four phases: landed code, then with the fix
# reverted (the phase-3-alone benches of f9/e10 read 645 ms on this machine against e8's 618 on another)
source .carry/setup.sh
N=docs/results/2026-12-02-h200-eleventh/next_lease
B="python3 -m jaxrun.bench step --config configs/record60.py $P --set schedule.scheduled_steps=150 --skip-cold --benched-variants-only --steps 10 --warmup 3"
el fixed; timeout 140 $B --json $R/fixed.json > $R/fixed.txt 2>&1; el "exit $?"
git apply -R $N/scatter_index_by_scatter.patch && el reverted
el shipped; timeout $(left 290) $B --compare-to $R/fixed.json > $R/shipped.txt 2>&1; el "exit $?"
git apply $N/scatter_index_by_scatter.patch
finish
grep -hE "^(phase|extension) " $R/fixed.txt $R/shipped.txt | grep -v steps; cat $R/timeline.txt
