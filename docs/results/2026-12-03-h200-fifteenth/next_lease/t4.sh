# Next lease, command 4 (optional, warm machine, alone, ~150 s per probe; after t2.sh): cold compile and every phase
# with XLA flags that may shorten XLA's autotuning, against t2's bench of the same code:
# 1. --xla_gpu_enable_triton_gemm=false: XLA's triton GEMM fusions run ~1.2 ms of a 378 ms pair of phase-1 steps
#    (../f3/profile.json: gemm_fusion_*), while XLA autotunes each over many triton configs at compile time;
# 2. --xla_gpu_autotune_level=1 (if time is left): autotuning without the buffer initialisation and the correctness
#    check against a reference of the default level 4.
# Does the cold compile (62.2 s in ../f3, the issue asks <= 60) drop, and what does the step pay? Before the flags:
# --lowering-threads 4 (jaxrun's own: four variants lowered at once), which changes no program.
source .carry/setup.sh
# first (~20 s): can jax-triton launch a warp-specialised Gluon kernel? (gluon_call_probe.py: checked against numpy)
el gluon; timeout 120 python3 docs/results/2026-12-03-h200-fifteenth/next_lease/gluon_call_probe.py > $R/gluon_probe.txt 2>&1; el "gluon exit $?"
if [ -f .cache/bench_t2.json ]; then CMP="--compare-to .cache/bench_t2.json"; else CMP=""; fi
B="python3 -m jaxrun.bench step --config configs/record60.py $P --set schedule.scheduled_steps=150 --steps 6 --warmup 2 $CMP"
# 0. four variants lowered at once (--lowering-threads 4): the triton kernels' compiles inside the lowerings overlap
el threads4; env -u XLA_PYTHON_CLIENT_PREALLOCATE TRITON_CACHE_DIR=$(mktemp -d) timeout $(left 200) $B --lowering-threads 4 \
  --json $R/threads4.json > $R/threads4.txt 2>&1; el "exit $?"
el nogemm; env -u XLA_PYTHON_CLIENT_PREALLOCATE XLA_FLAGS=--xla_gpu_enable_triton_gemm=false TRITON_CACHE_DIR=$(mktemp -d) \
  timeout $(left 360) $B --json $R/nogemm.json > $R/nogemm.txt 2>&1; el "exit $?"
if [ $(left 580) -gt 150 ]; then
  el autotune1; env -u XLA_PYTHON_CLIENT_PREALLOCATE XLA_FLAGS=--xla_gpu_autotune_level=1 TRITON_CACHE_DIR=$(mktemp -d) \
    timeout $(left 580) $B --json $R/autotune1.json > $R/autotune1.txt 2>&1; el "exit $?"
fi
finish
tail -3 $R/gluon_probe.txt; grep -hE "^(phase|extension) |^compile|rror" $R/threads4.txt $R/nogemm.txt $R/autotune1.txt 2>/dev/null; cat $R/timeline.txt
