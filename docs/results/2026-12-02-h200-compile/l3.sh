source .carry/setup.sh
el start; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader > $R/gpu.txt
python3 -c "import jax,jaxlib,triton;print(jax.__version__,jaxlib.__version__,triton.__version__)" >> $R/gpu.txt 2>&1
T=tests/test_kernels_dense.py
timeout 110 python3 -m pytest -q -m gpu -n 0 -p no:cacheprovider -rA "$T::test_head_loss_small_shapes" \
  "$T::test_head_loss_record_shape_and_a_cotangent_other_than_one" "$T::test_xla_fp8_head_is_one_scaled_fp8_gemm_per_product" \
  > $R/gpu_tests.txt 2>&1; el "tests exit $?"
timeout 60 python3 .carry/diag_barrier.py $R/diag_barrier.json > $R/diag_barrier.txt 2>&1; el "barrier diag exit $?"
B="python3 -m jaxrun.bench step --config configs/record60.py $P --set schedule.scheduled_steps=150 --steps 10 --warmup 3"
timeout 150 $B --skip-cold --json $R/bench_final.json --compare-to .carry/bench_a.json > $R/bench_final.txt 2>&1; el "bench exit $?"
for b in 98304 65536; do
  el "train $b"; timeout $(left 575) python3 -m jaxrun.train --config configs/record60.py $P --set schedule.scheduled_steps=260 \
    --set model.train_forward_tokens=$b --set run.val_every=100 --set run.seed=0 --name c$b > $R/train_c$b.txt 2>&1; el "train $b exit $?"
  cp runs/c$b/metrics.jsonl $R/metrics_c$b.jsonl 2>/dev/null
done
finish
grep -E "PASSED|FAILED|passed|failed" $R/gpu_tests.txt | tail -14 | cut -c1-200; tail -1 $R/diag_barrier.txt
grep -E "^(phase|extension) " $R/bench_final.txt; grep -E "^compile" $R/bench_final.txt
grep -h "val_loss\|per device" $R/train_c*.txt | head -12; cat $R/timeline.txt
