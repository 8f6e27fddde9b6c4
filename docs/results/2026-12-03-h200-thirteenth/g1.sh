# Thirteenth sitting, command 1: the fused CE kernel's variants timed alone (ce_bench.py), the fastest sound one
# installed, then the whole step of all four phases with it against the committed kernel on this machine
source .carry/setup.sh
D=docs/results/2026-12-03-h200-thirteenth
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader; python3 -c "import jax, jaxlib, triton, jax_triton; print('jax', jax.__version__, 'jaxlib', jaxlib.__version__, 'triton', triton.__version__, 'jax_triton', jax_triton.__version__); print(jax.devices())"; } > $R/gpu.txt 2>&1
el variants; python3 $D/ce_variants.py /tmp/v > $R/names.txt
el ce_bench; timeout $(left 260) python3 $D/ce_bench.py /tmp/v $(cat $R/names.txt) 2>&1 | grep -v "^W\|^I0000" | tee $R/ce_bench.txt; cp /tmp/v/ce_bench.json $R/ 2>/dev/null
PICK=$(python3 - <<'PY'
import json
r = json.load(open("/tmp/v/ce_bench.json")); b = r["base"]
ok = {n: v for n, v in r.items() if n != "base" and v["fp64_loss_max_rel"] < 1e-5 and v.get("nan_or_inf", 0) == 0
      and v["fp64_gq_differ_frac"] <= b["fp64_gq_differ_frac"] + 1e-4 and v["vs_base_gq_differ_frac"] < 1e-3}
print(min(ok, key=lambda n: ok[n]["fused_ms"]) if ok else "none")
PY
)
el "picked $PICK"
B="python3 -m jaxrun.bench step --config configs/record60.py $P --set schedule.scheduled_steps=150 --skip-cold --benched-variants-only --steps 10 --warmup 3"
cp kernels/softcap_ce.py /tmp/worktree_ce.py
cp /tmp/v/ce_base.py kernels/softcap_ce.py
el base; timeout $(left 420) $B --json $R/base.json > $R/base.txt 2>&1; el "exit $?"
if [ "$PICK" != none ]; then
  cp /tmp/v/ce_$PICK.py kernels/softcap_ce.py
  el "$PICK"; timeout $(left 590) $B --compare-to $R/base.json --json $R/pick.json > $R/pick.txt 2>&1; el "exit $?"
fi
cp /tmp/worktree_ce.py kernels/softcap_ce.py
finish
grep -hE "^(phase|extension) " $R/base.txt $R/pick.txt | grep -v steps; tail -15 $R/ce_bench.txt; cat $R/timeline.txt
