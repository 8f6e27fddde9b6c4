# Next lease: the embedding-gradient sums in two triton kernels, cut by rows (embed_grad_chunked.patch: kernels/
# embed_grad.py as the embed_grad op's triton backend, the sixth op in ops.OPS, picked by the shipped auto table).
# The first try (../../2026-12-02-h200-levers/next_lease/embed_grad.patch) gave each distinct token to one program:
# the frequent tokens made that program 2.1 ms a call, and phase 1 3.2% slower. Checked on the CPU: in triton's
# interpreter within a bf16 step of fp64 sums (bit for bit XLA's op in every case there), wrong if the second kernel
# or the carry between tiles is dropped (embed_grad_interpreter_check.*); compiles for sm_90, 109 registers, no spills.
#   1. bench step, all four phases, shipped (before the patch)
#   2. the op per call: XLA, the kernels' defaults, four other launch shapes (C,R,BLOCK_D,WARPS)
#   3. its GPU tests (tests/test_kernels_embed_grad.py: fp64 sums, the same bits compile to compile, the compiled step)
#   4. bench step with the patch; if phase 3 pays (< 0.99) and phase 1 does not lose (<= 1.0), the 300-step curve
source .carry/setup.sh
D=docs/results/2026-12-02-h200-tenth/next_lease; p=embed_grad_chunked
B="python3 -m jaxrun.bench step --config configs/record60.py $P --set schedule.scheduled_steps=150 --skip-cold --benched-variants-only --steps 10 --warmup 3"
el base; timeout 150 $B --json $R/base.json > $R/base.txt 2>&1; el "base exit $?"
git apply $D/$p.patch && el "$p applied"
el sweep; timeout 150 python3 $D/embed_grad_sweep.py 256,16,256,8 64,16,256,8 128,16,128,4 128,32,128,4 \
  > $R/embed_grad_sweep.txt 2>&1; el "sweep exit $?"
el tests; timeout 200 python3 -m pytest -q -m gpu -n 0 -p no:cacheprovider -rA tests/test_kernels_embed_grad.py \
  > $R/gpu_tests_embed_grad.txt 2>&1; rc=$?; el "tests exit $rc"
el $p; timeout $(left 420) $B --compare-to $R/base.json --json $R/$p.json > $R/$p.txt 2>&1; el "$p exit $?"
r1=$(grep -E "^phase 1 " $R/$p.txt | awk '{print $NF}'); r3=$(grep -E "^phase 3 " $R/$p.txt | awk '{print $NF}')
el "ratios phase 1 $r1 phase 3 $r3"
if [ $rc = 0 ] && python3 -c "import sys; sys.exit(0 if float('${r3:-9}') < 0.99 and float('${r1:-9}') <= 1.0 else 1)"; then
  el train; timeout $(left 590) python3 -m jaxrun.train --config configs/record60.py $P --set run.val_every=100 \
    --set run.seed=0 --name eg300 --stop-at 301 > $R/train_eg300.txt 2>&1; el "train exit $?"
  cp runs/eg300/metrics.jsonl $R/metrics_eg300.jsonl 2>/dev/null
fi
git apply -R $D/$p.patch
finish
cat $R/embed_grad_sweep.txt | grep -v "^W1"; grep -E "passed|failed" $R/gpu_tests_embed_grad.txt | tail -1
grep -hE "^(phase|extension) " $R/base.txt $R/$p.txt; grep -E "val_loss" $R/train_eg300.txt | tail -4; cat $R/timeline.txt
