# Next lease: the GPU tests this sitting did not reach (alone on the GPU; the attention file alone took ~4-6 min in
# earlier sittings): the remaining CE and head-loss tests of tests/test_kernels_dense.py, then tests/test_kernels_attention.py.
source .carry/setup.sh
T=tests/test_kernels_dense.py
el dense; timeout $(left 320) python3 -m pytest -q -m gpu -n 0 -p no:cacheprovider -rA --durations=0 \
  $T -k "head_loss or cross_entropy_record_shapes or cross_entropy_eval_shape or ce_kernels" > $R/gpu_tests_dense_rest.txt 2>&1; el "dense exit $?"
el attention; timeout $(left 585) python3 -m pytest -q -m gpu -n 0 -p no:cacheprovider -rA --durations=0 \
  tests/test_kernels_attention.py > $R/gpu_tests_attention.txt 2>&1; el "attention exit $?"
finish
grep -hE "passed|failed" $R/gpu_tests_*.txt | tail -2; grep -hE "^(FAILED|ERROR)" $R/gpu_tests_*.txt | head; cat $R/timeline.txt
