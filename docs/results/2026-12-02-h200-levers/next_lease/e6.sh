# A lease after e3.sh: the embedding-gradient accumulation without atomics (embed_grad.patch: kernels/embed_grad.py,
# used by ops.accumulate_gathered_grad on a GPU wherever there is no dense gradient, i.e. the value embeddings in
# every phase and the untied token embedding). On the CPU: bit for bit XLA's op in triton's interpreter with one row
# per chunk, within a bf16 step with 16 (embed_grad_interpreter_check.*); compiles for sm_90, 46 registers, no spills
# (embed_grad_sm90_compile.*). Not run on a GPU.
#   1. the op alone (scatter_determinism.py), shipped then patched: time, kernels, 2 compiles x 2 runs bit for bit
#   2. its GPU test (tests/test_kernels_embed_grad.py, in the patch): against fp64 sums rounded to bf16
#   3. bench step phases 1 and 3, shipped against patched; if phase 3 pays (< 0.99), the 300-step curve
source .carry/setup.sh
D=docs/results/2026-12-02-h200-levers/next_lease; p=embed_grad
el micro_shipped; TRACE_DIR=/tmp/tr_shipped timeout 100 python3 $D/scatter_determinism.py > $R/op_shipped.txt 2>&1; el "exit $?"
B="python3 -m jaxrun.bench step --config configs/record60.py $P --set schedule.scheduled_steps=150 --phase 0 --phase 2 --skip-cold --benched-variants-only --steps 10 --warmup 3"
el base; timeout 120 $B --json $R/base.json > $R/base.txt 2>&1; el "base exit $?"
git apply $D/$p.patch && el "$p applied"
el micro_patched; TRACE_DIR=/tmp/tr_patched timeout 100 python3 $D/scatter_determinism.py > $R/op_patched.txt 2>&1; el "exit $?"
el test; timeout 120 python3 -m pytest -q -m gpu -n 0 -p no:cacheprovider -rA tests/test_kernels_embed_grad.py \
  > $R/gpu_tests_embed_grad.txt 2>&1; rc=$?; el "test exit $rc"
if [ $rc = 0 ]; then
  el $p; timeout 130 $B --compare-to $R/base.json --json $R/$p.json > $R/$p.txt 2>&1; el "$p exit $?"
  r3=$(grep -E "^phase 3 " $R/$p.txt | awk '{print $NF}'); el "phase 3 ratio $r3"
  if python3 -c "import sys; sys.exit(0 if float('${r3:-9}') < 0.99 else 1)"; then
    el train; timeout $(left 590) python3 -m jaxrun.train --config configs/record60.py $P --set run.val_every=100 \
      --set run.seed=0 --name c300 --stop-at 301 > $R/train_c300.txt 2>&1; el "train exit $?"
    cp runs/c300/metrics.jsonl $R/metrics_c300.jsonl 2>/dev/null
  fi
fi
git apply -R $D/$p.patch
finish
grep -hv "^W1" $R/op_*.txt | head -60; grep -E "passed|failed" $R/gpu_tests_embed_grad.txt | tail -1
grep -hE "^(phase|extension) " $R/base.txt $R/$p.txt; grep -E "val_loss" $R/train_c300.txt | tail -4; cat $R/timeline.txt
