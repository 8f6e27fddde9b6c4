# Next lease, command 1 (fresh machine, alone on the GPU, ~330 s): the attention backward with dQ read from the dK dV
# kernel's dS tiles (dsdq.patch) against the committed kernels: alone at phase 3's calls (the thirteenth sitting's
# attn_bench.py: times, and the outputs' and gradients' largest differences from the committed kernels'), then the
# whole step of all four phases, committed kernels first, with jax's default preallocation (the shipped forwards)
source .carry/setup.sh
D=docs/results/2026-12-03-h200-fourteenth/next_lease
mkdir -p /tmp/fa; cp kernels/flash_attention.py /tmp/fa/fa_base.py
git apply $D/dsdq.patch && cp kernels/flash_attention.py /tmp/fa/fa_dsdq.py; cp /tmp/fa/fa_base.py kernels/flash_attention.py
el attn_bench; timeout $(left 120) python3 docs/results/2026-12-03-h200-thirteenth/attn_bench.py /tmp/fa base dsdq 2>&1 \
  | grep -v "^W\|^I0000" | tee $R/attn_bench.txt; cp /tmp/fa/attn_bench.json $R/ 2>/dev/null; el "attn_bench exit $?"
B="python3 -m jaxrun.bench step --config configs/record60.py $P --set schedule.scheduled_steps=150 --skip-cold --benched-variants-only --steps 10 --warmup 3"
el base; env -u XLA_PYTHON_CLIENT_PREALLOCATE timeout $(left 320) $B --json $R/base.json > $R/base.txt 2>&1; el "exit $?"
cp /tmp/fa/fa_dsdq.py kernels/flash_attention.py
el dsdq; env -u XLA_PYTHON_CLIENT_PREALLOCATE timeout $(left 580) $B --compare-to $R/base.json --json $R/dsdq.json > $R/dsdq.txt 2>&1; el "exit $?"
cp /tmp/fa/fa_base.py kernels/flash_attention.py  # the committed kernels again (not git: the device copy has an older git directory)
finish
cat $R/attn_bench.txt; grep -hE "^(phase|extension) |tokens per forward|rror" $R/base.txt $R/dsdq.txt | grep -v steps; cat $R/timeline.txt
