# Next lease, command 4 (optional, warm machine, alone, ~150 s; after t2.sh): cold compile and every phase with XLA's
# triton GEMM fusions off (XLA_FLAGS=--xla_gpu_enable_triton_gemm=false), against t2's bench of the same code. Those
# fusions run ~1.2 ms of a 378 ms pair of phase-1 steps (../f3/profile.json: gemm_fusion_*), while XLA autotunes each
# of them against cuBLAS over many triton configs at compile time: does the cold compile (62.2 s, the issue asks
# <= 60) drop, and what does the step pay?
source .carry/setup.sh
if [ -f .cache/bench_t2.json ]; then CMP="--compare-to .cache/bench_t2.json"; else CMP=""; fi
el nogemm; env -u XLA_PYTHON_CLIENT_PREALLOCATE XLA_FLAGS=--xla_gpu_enable_triton_gemm=false TRITON_CACHE_DIR=$(mktemp -d) \
  timeout $(left 280) python3 -m jaxrun.bench step --config configs/record60.py $P --set schedule.scheduled_steps=150 \
  --steps 10 --warmup 3 $CMP --json $R/nogemm.json > $R/nogemm.txt 2>&1; el "exit $?"
finish
grep -hE "^(phase|extension) |^compile|rror" $R/nogemm.txt; cat $R/timeline.txt
