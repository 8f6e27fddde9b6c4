# Eleventh sitting, command 3 (warm machine, right after u2): the embed_grad kernels (embed_grad_chunked.patch) at the
# tenth sweep's best launch shape (128,32,128,4: 1.64 + 0.41 ms a call at 65,536 rows against 2.60 + 0.61 at the
# defaults), with the value tables left to XLA while the head is tied (the tenth profile has XLA's op at 1.4 ms a call
# in phases 1-2, at its floor, and 3.9 ms in phase 3), benched in phases 1 and 3 against u2's bench of the shipped code.
source .carry/setup.sh
if [ -f .cache/bench.json ] && [ $(left 590) -gt 60 ]; then
  D=docs/results/2026-12-02-h200-tenth/next_lease; git apply $D/embed_grad_chunked.patch && el "patch applied"
  sed -i 's/^ROWS_PER_TILE = 16 /ROWS_PER_TILE = 32 /; s/^BLOCK_D = 256 /BLOCK_D = 128 /; s/^NUM_WARPS = 8$/NUM_WARPS = 4/' kernels/embed_grad.py
  sed -i 's/out\["ve"\] = kernels.embed_grad(/out["ve"] = (ops.accumulate_gathered_grad if tied else kernels.embed_grad)(/' jaxrun/engine.py
  grep -n "^ROWS_PER_TILE\|^BLOCK_D\|^NUM_WARPS" kernels/embed_grad.py >> $R/timeline.txt; grep -n 'out\["ve"\]' jaxrun/engine.py >> $R/timeline.txt
  el eg; timeout $(left 590) python3 -m jaxrun.bench step --config configs/record60.py $P --set schedule.scheduled_steps=150 \
    --phase 0 --phase 2 --skip-cold --benched-variants-only --steps 10 --warmup 3 --compare-to .cache/bench.json \
    --json $R/eg.json > $R/eg.txt 2>&1; el "eg exit $?"
  git checkout -q jaxrun kernels tests configs README.md; git apply -R $D/embed_grad_chunked.patch 2>/dev/null; rm -f kernels/embed_grad.py tests/test_kernels_embed_grad.py
fi
finish
grep -E "^(phase|extension) |error" $R/eg.txt; cat $R/timeline.txt
