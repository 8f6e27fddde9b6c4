# Thirteenth sitting, command 6: the attention kernels as one masked loop per program (attn_bench.py at phase 3's
# calls), the fastest installed; the whole step of all four phases with it against the committed kernels; then with
# it the attention and engine GPU tests beside the 300-step curve check
source .carry/setup.sh
D=docs/results/2026-12-03-h200-thirteenth
python3 $D/attn_variants.py /tmp/fa > /dev/null
el attn_bench; timeout $(left 150) python3 $D/attn_bench.py /tmp/fa base oneloop dq_oneloop dkdv_oneloop all_oneloop 2>&1 | grep -v "^W\|^I0000" | tee $R/attn_bench2.txt; cp /tmp/fa/attn_bench.json $R/attn_bench2.json 2>/dev/null
PICK=$(python3 - <<'PY'
import json, collections
r = json.load(open("/tmp/fa/attn_bench.json")); tot = collections.defaultdict(float)
for key, row in r.items():
    tot[key.split("|")[1]] += row["fwd_bwd_ms"]
print(min(tot, key=tot.get), dict(tot), file=open("/tmp/fa/pick.txt", "w"))
print(min(tot, key=tot.get))
PY
)
cat /tmp/fa/pick.txt > $R/attn_pick.txt; el "picked $PICK"
B="python3 -m jaxrun.bench step --config configs/record60.py $P --set schedule.scheduled_steps=150 --skip-cold --benched-variants-only --steps 10 --warmup 3"
el base; timeout $(left 250) $B --json $R/base.json > $R/base.txt 2>&1; el "exit $?"
cp /tmp/fa/fa_$PICK.py kernels/flash_attention.py
el "$PICK"; timeout $(left 330) $B --compare-to $R/base.json --json $R/pick.json > $R/pick.txt 2>&1; el "exit $?"
el curve
XLA_PYTHON_CLIENT_PREALLOCATE=true XLA_PYTHON_CLIENT_MEM_FRACTION=0.45 timeout $(left 580) python3 -m jaxrun.train --config configs/record60.py $P \
  --set run.val_every=100 --set run.seed=0 --name c300fa --stop-at 301 > $R/train_c300.txt 2>&1 &
TR=$!
sleep 5
el tests; timeout $(left 585) python3 -m pytest -q -m gpu -n 0 -p no:cacheprovider -rA tests/test_kernels_attention.py tests/test_engine.py > $R/gpu_tests.txt 2>&1; el "tests exit $?"
wait $TR; el "train exit $?"
cp runs/c300fa/metrics.jsonl $R/metrics_c300.jsonl 2>/dev/null
finish
cat $R/attn_bench2.txt $R/attn_pick.txt; grep -hE "^(phase|extension) " $R/pick.txt | grep -v steps; grep val_loss $R/train_c300.txt | tail -4; grep -E "^FAILED|passed|failed" $R/gpu_tests.txt | tail -5; cat $R/timeline.txt
