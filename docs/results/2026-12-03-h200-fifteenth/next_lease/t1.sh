# Next lease, command 1 (fresh machine, ~575 s): the reference's warm-up (WARMUP_ONLY) fills its Inductor cache in the
# background, and beside it (correctness only, nothing timed) the GPU tests the fifteenth sitting's limits cut: the
# FP8 audit (all six cases), then the dense-kernel tests from test_head_loss_record_shape... on
source .carry/setup.sh
source docs/results/2026-12-02-h200-table/ref.sh
el start; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader > $R/gpu.txt
python3 -c "import jax,jaxlib,triton,torch,jax_triton;print(jax.__version__,jaxlib.__version__,triton.__version__,torch.__version__,jax_triton.__version__)" >> $R/gpu.txt 2>&1
( el "ref warm-up"; ref $R/ref_warm1.txt $(left 568) WARMUP_ONLY=1; el "ref warm-up ended" ) &
el audit; timeout $(left 300) python3 -m pytest -v -m gpu -n 0 -p no:cacheprovider -rfEs tests/test_fp8_audit.py > $R/gpu_audit.txt 2>&1; el "audit exit $?"
DONE=""
for t in test_fp8_head_ragged_shapes test_fp8_head_record_shapes test_xla_fp8_head_is_one_scaled_fp8_gemm_per_product \
  test_fp8_matmul_against_numpy test_mlp_ragged_shapes test_mlp_record_shapes test_mlp_eval_shape_forward \
  test_cross_entropy_small_shapes test_cross_entropy_record_shapes test_cross_entropy_eval_shape \
  test_ce_arithmetic_helpers_against_numpy test_head_loss_small_shapes; do DONE="$DONE --deselect tests/test_kernels_dense.py::$t"; done
el dense; timeout $(left 565) python3 -m pytest -v -m gpu -n 0 -p no:cacheprovider -rfEs $DONE tests/test_kernels_dense.py > $R/gpu_dense.txt 2>&1; el "dense exit $?"
while [ $SECONDS -lt 575 ] && pgrep -f ref_sched.py >/dev/null; do sleep 2; done
finish
cat $R/gpu.txt; grep -hE "PASSED|FAILED|ERROR|passed|failed" $R/gpu_audit.txt $R/gpu_dense.txt | cut -c1-140; tail -3 $R/ref_warm1.txt; cat $R/timeline.txt
