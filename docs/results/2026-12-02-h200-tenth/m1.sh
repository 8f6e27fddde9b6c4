# Tenth sitting, command 1 (next_lease/e5.sh with the curve before the tests): the persistent ReLU² matmul (mlp_persistent.patch). The MLP's triton kernels are 1.6-1.8x their FLOP
# floor (88 ms of a phase-3 step, 28 ms of phase 1); both of their products have K = 768, a tile's 12 K steps against
# its epilogue, which the FP8 head's GEMM turned from 1.65 into 1.27 ms by the same change (persistent, the tile loop
# flattened with the K loop). Bit for bit the shipped kernel's outputs in triton's interpreter
# (mlp_persistent_interpreter_check.py); compiles for sm_90 with no spills (tests/test_kernels_compile.py).
#   1. per call: the shipped kernel, then the persistent one at its table's tile and the candidates
#   2. bench step phases 1 and 3, shipped against persistent
#   3. if phase 1 or 3 pays (ratio < 0.99): the MLP GPU tests and the 300-step curve with it
source .carry/setup.sh
D=docs/results/2026-12-02-h200-levers/next_lease; p=mlp_persistent
el sweep_shipped; timeout 90 python3 $D/mlp_sweep.py > $R/mlp_sweep_shipped.txt 2>&1; el "exit $?"
B="python3 -m jaxrun.bench step --config configs/record60.py $P --set schedule.scheduled_steps=150 --phase 0 --phase 2 --skip-cold --benched-variants-only --steps 10 --warmup 3"
el base; timeout 120 $B --json $R/base.json > $R/base.txt 2>&1; el "base exit $?"
git apply $D/$p.patch && el "$p applied"
el sweep_persistent; timeout 170 python3 $D/mlp_sweep.py 128,256,64,8,3 256,128,64,8,3 128,256,128,8,2 64,256,64,4,4 \
  128,128,64,4,4 > $R/mlp_sweep_persistent.txt 2>&1; el "exit $?"
el $p; timeout 120 $B --compare-to $R/base.json --json $R/$p.json > $R/$p.txt 2>&1; el "$p exit $?"
r1=$(grep -E "^phase 1 " $R/$p.txt | awk '{print $NF}'); r3=$(grep -E "^phase 3 " $R/$p.txt | awk '{print $NF}')
el "ratios phase 1 $r1 phase 3 $r3"
if python3 -c "import sys; sys.exit(0 if min(float('${r1:-9}'), float('${r3:-9}')) < 0.99 else 1)"; then
  el train; timeout $(left 420) python3 -m jaxrun.train --config configs/record60.py $P --set run.val_every=100 \
    --set run.seed=0 --name c300 --stop-at 301 > $R/train_c300.txt 2>&1; el "train exit $?"
  cp runs/c300/metrics.jsonl $R/metrics_c300.jsonl 2>/dev/null
  el tests; timeout $(left 590) python3 -m pytest -q -m gpu -n 0 -p no:cacheprovider -rA tests/test_kernels_dense.py -k mlp \
    > $R/gpu_tests_mlp.txt 2>&1; el "tests exit $?"
fi
git apply -R $D/$p.patch
finish
grep -h "M=" $R/mlp_sweep_*.txt; grep -hE "^(phase|extension) " $R/base.txt $R/$p.txt
grep -E "passed|failed" $R/gpu_tests_mlp.txt | tail -1; grep -E "val_loss" $R/train_c300.txt | tail -4; cat $R/timeline.txt
