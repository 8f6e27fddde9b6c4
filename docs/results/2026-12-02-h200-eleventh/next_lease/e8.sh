# Next lease, command 1: the embedding-gradient scatters with their indices materialised first
# (scatter_index_barrier.patch: lax.optimization_barrier on jnp.unique's (unique, inverse) in
# ops.accumulate_gathered_grad). The eleventh sitting's HLO (../u1/scatter_fusions.txt) has each scatter fusion
# recomputing unique's index arithmetic per update element (3 x 768 per row); in phase 3 that is a three-level cumsum
# and a remainder by 49,152, and the scatters ran at 4.2x their floor there (1.1x in phases 1-2).
#   1. bench step, all four phases, shipped
#   2. the phase-3 HLO with the patch: do the scatter fusions now read the indices as plain parameters?
#   3. bench step with the patch
#   4. if phase 3 < 0.99 and phase 1 <= 1.005: the 300-step curve (seed 0; the shipped curve: ../README.md section 2)
source .carry/setup.sh
N=docs/results/2026-12-02-h200-eleventh/next_lease; p=scatter_index_barrier
B="python3 -m jaxrun.bench step --config configs/record60.py $P --set schedule.scheduled_steps=150 --skip-cold --benched-variants-only --steps 10 --warmup 3"
el base; timeout 150 $B --json $R/base.json > $R/base.txt 2>&1; el "base exit $?"
git apply $N/$p.patch && el "$p applied"
el hlo; XLA_FLAGS="--xla_dump_to=/tmp/hlo --xla_dump_hlo_as_text" timeout 120 $B --phase 2 --steps 1 --warmup 1 \
  > $R/hlo_bench.txt 2>&1; el "hlo exit $?"
python3 docs/results/2026-12-02-h200-eleventh/scatter_fusions.py /tmp/hlo 80 > $R/scatter_fusions.txt 2>&1
grep -c "opt-barrier" /tmp/hlo/*sm_9.0a_gpu_after_optimizations.txt >> $R/timeline.txt 2>&1
el $p; timeout $(left 420) $B --compare-to $R/base.json --json $R/$p.json > $R/$p.txt 2>&1; el "$p exit $?"
r1=$(grep -E "^phase 1 " $R/$p.txt | awk '{print $NF}'); r3=$(grep -E "^phase 3 " $R/$p.txt | awk '{print $NF}')
el "ratios phase 1 $r1 phase 3 $r3"
if python3 -c "import sys; sys.exit(0 if float('${r3:-9}') < 0.99 and float('${r1:-9}') <= 1.005 else 1)"; then
  el train; timeout $(left 590) python3 -m jaxrun.train --config configs/record60.py $P --set run.val_every=100 \
    --set run.seed=0 --name sb300 --stop-at 301 > $R/train_sb300.txt 2>&1; el "train exit $?"
  cp runs/sb300/metrics.jsonl $R/metrics_sb300.jsonl 2>/dev/null
fi
git apply -R $N/$p.patch
finish
grep -E "^CALL" $R/scatter_fusions.txt | cut -c1-400; grep -hE "^(phase|extension) " $R/base.txt $R/$p.txt
grep -E "val_loss" $R/train_sb300.txt | tail -4; cat $R/timeline.txt
