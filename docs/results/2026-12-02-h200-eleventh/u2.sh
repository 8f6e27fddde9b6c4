# Eleventh sitting, command 2 (warm machine, right after u1): the reference's timed run (its warm-up finishes the cache
# u1 began), then jaxrun's bench (cold compile, then every phase) beside its step lines; then the size of the
# reference's compile caches (could they travel, so that a later table skips the ~14-minute warm-up?), and the
# archive itself if it is under 16 MB.
source .carry/setup.sh
source docs/results/2026-12-02-h200-table/ref.sh
el ref; ref $R/ref.txt $(left 420); el "ref ended"
grep -E "^step:" $R/ref.txt > $R/ref_steps.txt
if grep -q "^step:189/190 val_loss" $R/ref.txt; then cp $R/ref.txt .cache/ref.txt; cp $R/ref_steps.txt .cache/ref_steps.txt; fi
if [ -f .cache/ref_steps.txt ] && [ $(left 560) -gt 130 ]; then
  el bench; TRITON_CACHE_DIR=$(mktemp -d) timeout $(left 560) python3 -m jaxrun.bench step --config configs/record60.py $P \
    --set schedule.scheduled_steps=150 --steps 10 --warmup 3 --compare-to .cache/ref_steps.txt --json $R/bench.json > $R/bench.txt 2>&1
  rc=$?; el "bench exit $rc"; [ $rc = 0 ] && cp $R/bench.json .cache/bench.json
fi
el cache; du -sm .cache/inductor .cache/triton >> $R/timeline.txt 2>&1
tar cf - -C .cache inductor triton 2>/dev/null | zstd -q -T16 -6 -o /tmp/refcache.tar.zst 2>>$R/timeline.txt || \
  tar czf /tmp/refcache.tar.gz -C .cache inductor triton
ls -la /tmp/refcache.* >> $R/timeline.txt; el "cache measured"
f=$(ls /tmp/refcache.* | head -1); [ -n "$f" ] && [ $(stat -c %s $f) -lt 16000000 ] && cp $f $OUT/ && el "cache archive sent back"
finish
tail -4 $R/ref_steps.txt; grep -E "^(phase|extension) |^compile|ratio|error" $R/bench.txt $R/eg.txt 2>/dev/null; cat $R/timeline.txt
