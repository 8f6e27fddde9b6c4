# Next lease, command 1 (fresh machine, alone on the GPU, ~350 s): the attention backward with dQ read from the dK dV
# kernel's dS tiles (dsdq.patch) against the committed kernels: alone at phase 3's calls (the thirteenth sitting's
# attn_bench.py: times, and the outputs' and gradients' largest differences from the committed kernels'), with the
# tuned dQ tile (128 x 64, 8 warps: dsdq) and 64 x 64 with 4 warps (dsdq64); then the whole step of all four phases,
# committed kernels first, the faster variant against them, with jax's default preallocation (the shipped forwards)
source .carry/setup.sh
D=docs/results/2026-12-03-h200-fourteenth/next_lease
mkdir -p /tmp/fa; cp kernels/flash_attention.py /tmp/fa/fa_base.py
git apply --include=kernels/flash_attention.py $D/dsdq.patch && cp kernels/flash_attention.py /tmp/fa/fa_dsdq.py; cp /tmp/fa/fa_base.py kernels/flash_attention.py
sed 's/KernelConfig(128, 64, 8, 3), KernelConfig(32, 64, 4, 3)/KernelConfig(64, 64, 4, 3), KernelConfig(32, 64, 4, 3)/' \
  /tmp/fa/fa_dsdq.py > /tmp/fa/fa_dsdq64.py; cmp -s /tmp/fa/fa_dsdq.py /tmp/fa/fa_dsdq64.py && echo "dsdq64: sed matched nothing" >> $R/timeline.txt
el attn_bench; timeout $(left 150) python3 docs/results/2026-12-03-h200-thirteenth/attn_bench.py /tmp/fa base dsdq dsdq64 2>&1 \
  | grep -v "^W\|^I0000" | tee $R/attn_bench.txt; cp /tmp/fa/attn_bench.json $R/ 2>/dev/null; el "attn_bench exit $?"
PICK=$(python3 - <<'PY'
import json, collections
r = json.load(open("/tmp/fa/attn_bench.json")); tot = collections.defaultdict(float)
for key, row in r.items():
    tot[key.split("|")[1]] += row["fwd_bwd_ms"]
print(min((n for n in tot if n != "base"), key=tot.get), dict(tot), file=open("/tmp/fa/pick.txt", "w"))
print(min((n for n in tot if n != "base"), key=tot.get))
PY
)
cp /tmp/fa/pick.txt $R/attn_pick.txt; el "picked ${PICK:=dsdq}"
B="python3 -m jaxrun.bench step --config configs/record60.py $P --set schedule.scheduled_steps=150 --skip-cold --benched-variants-only --steps 10 --warmup 3"
el base; env -u XLA_PYTHON_CLIENT_PREALLOCATE timeout $(left 330) $B --json $R/base.json > $R/base.txt 2>&1; el "exit $?"
cp /tmp/fa/fa_$PICK.py kernels/flash_attention.py
el $PICK; env -u XLA_PYTHON_CLIENT_PREALLOCATE timeout $(left 585) $B --compare-to $R/base.json --json $R/pick.json > $R/pick.txt 2>&1; el "exit $?"
cp /tmp/fa/fa_base.py kernels/flash_attention.py  # the committed kernels again (not git: the device copy has an older git directory)
finish
cat $R/attn_bench.txt $R/attn_pick.txt; grep -hE "^(phase|extension) |tokens per forward|rror" $R/base.txt $R/pick.txt | grep -v steps; cat $R/timeline.txt
