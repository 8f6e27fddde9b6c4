# Next lease: XLA's deterministic scatter (--xla_gpu_exclude_nondeterministic_ops=true: scatter-adds through a sort and
# a prefix scan instead of atomics) as a speed lever and as GPU determinism. The embedding tables' gradient
# accumulation is 31 ms of a phase-3 step at 4.3x its floor; its segment_sum's f32 scatter-add of 49,152 rows, many
# of them the same few tokens, contends on atomics. This sitting (l1) found the shipped op giving other bits from one
# compile to the next on Zipf-drawn tokens; whether a training run repeats bit for bit (an H100 resume test of older
# code did, 2026-11-25) is what step 3 measures.
#   1. the op alone, default and deterministic: time, and 2 compiles x 2 runs bit for bit
#   2. bench step phases 1 and 3, default against deterministic
#   3. two 30-step training runs each way: the same train losses bit for bit?
source .carry/setup.sh
D=docs/results/2026-12-02-h200-levers/next_lease
DET=--xla_gpu_exclude_nondeterministic_ops=true
el micro; TRACE_DIR=/tmp/trace_default timeout 100 python3 $D/scatter_determinism.py > $R/scatter_default.txt 2>&1; el "default exit $?"
XLA_FLAGS=$DET TRACE_DIR=/tmp/trace_det timeout 100 python3 $D/scatter_determinism.py > $R/scatter_det.txt 2>&1; el "det exit $?"
B="python3 -m jaxrun.bench step --config configs/record60.py $P --set schedule.scheduled_steps=150 --phase 0 --phase 2 --skip-cold --benched-variants-only --steps 10 --warmup 3"
el base; timeout 120 $B --json $R/base.json > $R/base.txt 2>&1; el "base exit $?"
# phase 3's own peak memory (the issue's bound is 30 GiB there): a process that benches phase 3 alone
el peak3; timeout 100 python3 -m jaxrun.bench step --config configs/record60.py $P --set schedule.scheduled_steps=150 \
  --phase 2 --skip-cold --benched-variants-only --steps 5 --warmup 2 --json $R/phase3_alone.json > $R/phase3_alone.txt 2>&1
el "peak3 exit $?"
el det; XLA_FLAGS=$DET timeout 150 $B --compare-to $R/base.json --json $R/det.json > $R/det.txt 2>&1; el "det exit $?"
for mode in default det; do
  for i in 1 2; do
    [ $(left 560) -gt 50 ] || { el "no time for $mode$i"; continue; }
    flags=""; [ $mode = det ] && flags=$DET
    el "train $mode$i"; XLA_FLAGS=$flags timeout $(left 590) python3 -m jaxrun.train --config configs/record60.py $P \
      --set run.val_every=1000 --set run.seed=0 --name $mode$i --stop-at 31 > $R/train_$mode$i.txt 2>&1; el "exit $?"
    cp runs/$mode$i/metrics.jsonl $R/metrics_$mode$i.jsonl 2>/dev/null
  done
done
python3 - > $R/repeatable.txt <<'PY'
import json, os
R = os.environ["R"]
def losses(name):
    try:
        return {r["step"]: r["train_loss"] for r in map(json.loads, open(f"{R}/metrics_{name}.jsonl")) if "train_loss" in r}
    except OSError:
        return None
for mode in ("default", "det"):
    a, b = losses(mode + "1"), losses(mode + "2")
    if a is None or b is None:
        print(mode, "missing"); continue
    first = min((s for s in a if s in b and a[s] != b[s]), default=None)
    last = max(a)
    print(f"{mode}: {len(a)} / {len(b)} train losses; bit for bit the same: {a == b}; first difference at step "
          f"{first}; step {last}: {a[last]!r} vs {b.get(last)!r}")
PY
finish
cat $R/scatter_*.txt | grep -v "^W1"; grep -hE "^(phase|extension) " $R/base.txt $R/det.txt; grep -hE "^phase 3 " $R/phase3_alone.txt; cat $R/repeatable.txt $R/timeline.txt
