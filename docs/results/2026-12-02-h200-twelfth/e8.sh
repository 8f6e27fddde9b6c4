# Next lease, command 1: the embedding-gradient scatters with their indices materialised first, two ways.
# The eleventh sitting's HLO (../u1/scatter_fusions.txt) has each scatter fusion recomputing jnp.unique's index
# arithmetic per update element (3 x 768 per row); in phase 3 that is a three-level cumsum and a remainder by 49,152,
# and the scatters ran at 4.2x their floor there (1.1x in phases 1-2).
#   a. scatter_index_barrier.patch: lax.optimization_barrier on jnp.unique's (unique, inverse)
#   b. scatter_index_by_scatter.patch: both index arrays written by scatters (ops._distinct_tokens), which XLA never
#      fuses into their consumers
#   1. bench step, all four phases, shipped
#   2. for a, then b: the phase-3 HLO's scatter fusions (do they read the indices as plain parameters?), then the bench
#   3. the better of the two by phase 3, if it is < 0.99 with phase 1 <= 1.005: the 300-step curve (seed 0; the
#      shipped curve is ../README.md section 2)
source .carry/setup.sh
N=docs/results/2026-12-02-h200-eleventh/next_lease
B="python3 -m jaxrun.bench step --config configs/record60.py $P --set schedule.scheduled_steps=150 --skip-cold --benched-variants-only --steps 10 --warmup 3"
el base; timeout 150 $B --json $R/base.json > $R/base.txt 2>&1; el "base exit $?"
for p in scatter_index_barrier scatter_index_by_scatter; do
  git apply $N/$p.patch && el "$p applied" || continue
  el "$p hlo"; XLA_FLAGS="--xla_dump_to=/tmp/hlo_$p --xla_dump_hlo_as_text" timeout 90 $B --phase 2 --steps 1 --warmup 1 \
    > $R/hlo_bench_$p.txt 2>&1; el "hlo exit $?"
  python3 docs/results/2026-12-02-h200-eleventh/scatter_fusions.py /tmp/hlo_$p 80 > $R/scatter_fusions_$p.txt 2>&1
  el "$p bench"; timeout 130 $B --compare-to $R/base.json --json $R/$p.json > $R/$p.txt 2>&1; el "$p exit $?"
  git apply -R $N/$p.patch
  r1=$(grep -E "^phase 1 " $R/$p.txt | awk '{print $NF}'); r3=$(grep -E "^phase 3 " $R/$p.txt | awk '{print $NF}')
  el "$p ratios phase 1 ${r1:-none} phase 3 ${r3:-none}"; echo "${r3:-9} ${r1:-9} $p" >> $R/ratios.txt
done
best=$(sort -n $R/ratios.txt | head -1); read r3 r1 p <<< "$best"; el "best: $best"
mkdir -p .cache; echo $p > .cache/e8_best  # e9.sh, on the same warm machine, reads it
if python3 -c "import sys; sys.exit(0 if float('$r3') < 0.99 and float('$r1') <= 1.005 else 1)"; then
  git apply $N/$p.patch && el "train with $p"; timeout $(left 590) python3 -m jaxrun.train --config configs/record60.py $P \
    --set run.val_every=100 --set run.seed=0 --name sb300 --stop-at 301 > $R/train_sb300.txt 2>&1; el "train exit $?"
  cp runs/sb300/metrics.jsonl $R/metrics_sb300.jsonl 2>/dev/null; git apply -R $N/$p.patch
fi
finish
for p in scatter_index_barrier scatter_index_by_scatter; do echo "== $p"; grep -E "^CALL" $R/scatter_fusions_$p.txt | cut -c1-300; done
grep -hE "^(phase|extension) " $R/base.txt $R/scatter_index_*.txt; grep -E "val_loss" $R/train_sb300.txt | tail -4; cat $R/timeline.txt
