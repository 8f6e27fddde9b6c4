source .carry/setup.sh
el start; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader > $R/gpu.txt
python3 -c "import jax, jaxlib, triton; print(jax.__version__, jaxlib.__version__, triton.__version__, jax.devices())" >> $R/gpu.txt 2>&1
B="python3 -m jaxrun.bench step --config configs/record60.py $P --set schedule.scheduled_steps=150 --steps 10 --warmup 3"
# A: the shipped config with the pipelined compile, cold then warm (fresh XLA, lowering and triton caches)
el A; TRITON_CACHE_DIR=$(mktemp -d) timeout 200 $B --json $R/bench_a.json > $R/bench_a.txt 2>&1; el "A exit $?"
# B: XLA's triton GEMM fusions off (cuBLAS only): cold compile and steps against A
el B; XLA_FLAGS=--xla_gpu_enable_triton_gemm=false TRITON_CACHE_DIR=$(mktemp -d) timeout 200 $B --json $R/bench_b.json --compare-to $R/bench_a.json > $R/bench_b.txt 2>&1; el "B exit $?"
# C: 98,304 tokens per forward: phase 3 and the extension at 2 ranks per forward, against A
el C; timeout 150 $B --phase 2 --phase 3 --skip-cold --benched-variants-only --set model.train_forward_tokens=98304 --json $R/bench_c.json --compare-to $R/bench_a.json > $R/bench_c.txt 2>&1; el "C exit $?"
el D; timeout $(left 580) python3 .carry/diag_small.py $R/diag_small.json > $R/diag_small.txt 2>&1; el "D exit $?"
finish
for f in a b c; do echo "== $f"; grep -E "compile|phase|ratio|peak|memory|Error|error" $R/bench_$f.txt | head -14; done
tail -3 $R/diag_small.txt | cut -c1-400
