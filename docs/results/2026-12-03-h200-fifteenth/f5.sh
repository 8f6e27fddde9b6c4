# Fifteenth sitting, command 5 (dsdq.patch, 64 x 64 dQ tile, installed): the FP8-audit GPU tests, then the dense-kernel
# tests f4.sh did not reach (its 330 s limit stopped it inside test_mlp_eval_shape_forward)
source .carry/setup.sh
el audit; timeout $(left 150) python3 -m pytest -v -m gpu -n 0 -p no:cacheprovider -rfEs tests/test_fp8_audit.py > $R/gpu_tests_audit.txt 2>&1; el "audit exit $?"
DONE="--deselect tests/test_kernels_dense.py::test_fp8_head_ragged_shapes --deselect tests/test_kernels_dense.py::test_fp8_head_record_shapes --deselect tests/test_kernels_dense.py::test_xla_fp8_head_is_one_scaled_fp8_gemm_per_product --deselect tests/test_kernels_dense.py::test_fp8_matmul_against_numpy --deselect tests/test_kernels_dense.py::test_mlp_ragged_shapes --deselect tests/test_kernels_dense.py::test_mlp_record_shapes"
el dense; timeout $(left 380) python3 -m pytest -v -m gpu -n 0 -p no:cacheprovider -rfEs $DONE tests/test_kernels_dense.py > $R/gpu_tests_dense.txt 2>&1; el "dense exit $?"
finish
grep -hE "PASSED|FAILED|ERROR|passed|failed" $R/gpu_tests_audit.txt $R/gpu_tests_dense.txt | cut -c1-140; tail -2 $R/gpu_tests_dense.txt | cut -c1-200; cat $R/timeline.txt
