# Next lease, command 3: the evidence for 98,304 tokens per forward (2 ranks per forward in phase 3 and the extension)
# as the default where it fits. The eighth sitting measured phase 3 at 0.964 and the extension at 0.960 of the shipped
# step with jax's default preallocation, peak 52.6 GB; what was missing was a curve that reaches phase 3.
#   1. bench phase 3 and the extension at 65,536 then at 98,304 per forward, default preallocation both times
#   2. 151 steps of the 150-step schedule (phase 3 from step 100, the extension from 150), validation every 50, at
#      65,536 then at 98,304: the merged forwards must give the same curve to rounding
source .carry/setup.sh
B="python3 -m jaxrun.bench step --config configs/record60.py $P --set schedule.scheduled_steps=150 --skip-cold --benched-variants-only --steps 10 --warmup 3 --phase 2 --phase 3"
el b65; env -u XLA_PYTHON_CLIENT_PREALLOCATE timeout 90 $B --json $R/b65.json > $R/b65.txt 2>&1; el "exit $?"
el b98; env -u XLA_PYTHON_CLIENT_PREALLOCATE timeout 90 $B --set model.train_forward_tokens=98304 --compare-to $R/b65.json \
  > $R/b98.txt 2>&1; el "exit $?"
for f in 65536 98304; do
  el "train $f"; env -u XLA_PYTHON_CLIENT_PREALLOCATE timeout $(left $([ $f = 65536 ] && echo 380 || echo 585)) python3 -m jaxrun.train \
    --config configs/record60.py $P --set schedule.scheduled_steps=150 --set run.val_every=50 --set run.seed=0 \
    --set model.train_forward_tokens=$f --name f$f --stop-at 151 > $R/train_f$f.txt 2>&1; el "train $f exit $?"
  cp runs/f$f/metrics.jsonl $R/metrics_f$f.jsonl 2>/dev/null
done
finish
grep -hE "^phase 3 |^extension " $R/b65.txt $R/b98.txt; grep -h "val_loss\|per device" $R/train_f65536.txt $R/train_f98304.txt
cat $R/timeline.txt
