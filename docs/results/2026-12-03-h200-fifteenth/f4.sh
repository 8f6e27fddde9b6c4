# Fifteenth sitting, command 4 (dsdq.patch, 64 x 64 dQ tile, installed): the dense-kernel and FP8-audit GPU tests, then
# the tile sweep of the two backward kernels at the sweep's default shapes
source .carry/setup.sh
el tests; timeout $(left 330) python3 -m pytest -v -m gpu -n 0 -p no:cacheprovider -rfEs tests/test_kernels_dense.py tests/test_fp8_audit.py > $R/gpu_tests.txt 2>&1; el "tests exit $?"
el tune; timeout $(left 560) python3 -m jaxrun.bench tune-attention --kernel dq --kernel dkdv --json $R/tune.json 2>&1 | grep -v "^W\|^I0000" > $R/tune.txt; el "tune exit $?"
finish
grep -cE " PASSED" $R/gpu_tests.txt; grep -E "FAILED|ERROR|passed|failed" $R/gpu_tests.txt | tail -8; cat $R/tune.txt | cut -c1-200; cat $R/timeline.txt
