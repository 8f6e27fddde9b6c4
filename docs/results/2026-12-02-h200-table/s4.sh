# Command 4: the GPU tests s1 did not reach (it passed the first 11 and was stopped inside
# test_xla_fp8_head_is_one_scaled_fp8_gemm_per_product, 227 s alone on an H100 in November): that one last.
source .carry/setup.sh
el tests; timeout $(left 250) python3 -m pytest -q -m gpu -n 0 -p no:cacheprovider -rA --durations=0 \
  tests/test_kernels_dense.py tests/test_kernels_attention.py -k "not test_xla_fp8_head_is_one_scaled and not fp8_head_ragged and not fp8_head_record" \
  > $R/gpu_tests2.txt 2>&1; el "tests exit $?"
el slow; timeout $(left 380) python3 -m pytest -q -m gpu -n 0 -p no:cacheprovider -rA --durations=0 \
  "tests/test_kernels_dense.py::test_xla_fp8_head_is_one_scaled_fp8_gemm_per_product" > $R/gpu_tests3.txt 2>&1; el "slow exit $?"
finish
grep -E "passed|failed" $R/gpu_tests2.txt $R/gpu_tests3.txt | tail -3; grep -E "FAILED|ERROR" $R/gpu_tests2.txt | head; cat $R/timeline.txt
