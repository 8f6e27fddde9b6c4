# next lease, command 2 (~9.5 min): the CE kernels bit for bit against beff1a0's on the GPU (kcheck.py, needs
# .carry/oldtree.tar), then three bench steps: this code cold + warm (both caches) against the PyTorch log; then up to
# 131,072 and 65,536 tokens per forward, each against this code. Memory, from the H200's peaks (22.4 GB at 32k tokens
# per forward, 30.1 GB at 48k): ~7 GB + 0.47 MiB per token, so ~68 GB at 131,072 tokens: within the 141 GB
source .carry/setup.sh  # this folder's setup.sh, copied into .carry/
mkdir -p /tmp/o && tar xf .carry/oldtree.tar -C /tmp/o && ln -s ../kernels /tmp/o/jaxrun/kernels
el start
timeout 100 python3 docs/results/2026-12-01-cpu-merged-ranks/next_lease/kcheck.py > $R/kcheck.txt 2>&1; el "kcheck exit $?"
S150="--set schedule.scheduled_steps=150"
TORCH="--compare-to docs/results/2026-12-01-h200-side-by-side/pytorch_ref_sched150.txt"
timeout $(left 330) python3 -m jaxrun.bench step --config configs/record60.py $P $S150 $TORCH --steps 10 --warmup 3 \
  --json $R/bench_new.json > $R/bench_new.txt 2>&1; el "bench new exit $?"
CMP=$([ -s $R/bench_new.json ] && echo "--compare-to $R/bench_new.json")  # none if that bench was cut short
for B in 131072 65536; do
  timeout $(left $([ $B = 131072 ] && echo 460 || echo 590)) python3 -m jaxrun.bench step --config configs/record60.py \
    $P $S150 --set model.train_forward_tokens=$B --skip-cold --benched-variants-only --steps 10 --warmup 3 \
    $CMP --json $R/bench_merged$B.json > $R/bench_merged$B.txt 2>&1; el "bench merged $B exit $?"
done
finish
tail -2 $R/kcheck.txt; for f in new merged131072 merged65536; do echo "== $f"; grep -v "^\s*$" $R/bench_$f.txt | tail -12; done
cat $R/timeline.txt
