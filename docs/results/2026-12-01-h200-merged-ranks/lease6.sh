source .carry/setup.sh
timeout 150 python3 -m pytest -q -m gpu -n 0 -p no:cacheprovider -rA \
  "tests/test_engine.py::test_merged_ranks_in_the_compiled_step_with_the_gpu_kernels" > $R/tests_merged2.txt 2>&1; echo "exit $?"
finish
grep -hE "PASSED|FAILED|^E |passed|failed" $R/tests_merged2.txt | head -8
