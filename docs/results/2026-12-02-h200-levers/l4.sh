# Ninth sitting, lease command 4 (fresh machine): the attention tiles the phase-3 sweep of l3.sh found faster (forward
# 64 x 64 with 4 warps: 0.366 vs 0.411 ms long, 0.302 vs 0.355 paired; dK dV with 3 stages: 1.448 vs 1.487, 1.231 vs
# 1.263), benched against the shipped tiles in phases 1 and 3; only if phase 3 pays (ratio < 0.995): the attention GPU
# tests and the 300-step curve check with them.
source .carry/setup.sh
D=docs/results/2026-12-02-h200-levers; p=attention_fwd64_dkdv3
B="python3 -m jaxrun.bench step --config configs/record60.py $P --set schedule.scheduled_steps=150 --phase 0 --phase 2 --skip-cold --benched-variants-only --steps 10 --warmup 3"
el base; timeout 120 $B --json $R/base.json > $R/base.txt 2>&1; el "base exit $?"
git apply $D/$p.patch && el "$p applied"
el $p; timeout 100 $B --compare-to $R/base.json --json $R/$p.json > $R/$p.txt 2>&1; el "$p exit $?"
r3=$(grep -E "^phase 3 " $R/$p.txt | awk '{print $NF}'); el "phase 3 ratio $r3"
if python3 -c "import sys; sys.exit(0 if float('${r3:-9}') < 0.995 else 1)"; then
  el tests; timeout 260 python3 -m pytest -q -m gpu -n 0 -p no:cacheprovider -rA tests/test_kernels_attention.py \
    > $R/gpu_tests_attention_$p.txt 2>&1; el "tests exit $?"
  el train; timeout $(left 590) python3 -m jaxrun.train --config configs/record60.py $P --set run.val_every=100 \
    --set run.seed=0 --name c300 --stop-at 301 > $R/train_c300.txt 2>&1; el "train exit $?"
  cp runs/c300/metrics.jsonl $R/metrics_c300.jsonl 2>/dev/null
fi
git apply -R $D/$p.patch
finish
grep -hE "^(phase|extension) " $R/base.txt $R/$p.txt; grep -E "passed|failed" $R/gpu_tests_*.txt | tail -1
grep -E "val_loss" $R/train_c300.txt | tail -4; cat $R/timeline.txt
