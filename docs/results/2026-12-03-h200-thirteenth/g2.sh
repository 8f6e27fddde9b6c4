# Thirteenth sitting, command 2: the kept CE variant (fwdnewton_pack): the CE kernels' and the step's GPU tests, then
# the 300-step curve check of record60
source .carry/setup.sh
el curve
XLA_PYTHON_CLIENT_PREALLOCATE=true XLA_PYTHON_CLIENT_MEM_FRACTION=0.45 timeout $(left 300) python3 -m jaxrun.train --config configs/record60.py $P \
  --set run.val_every=100 --set run.seed=0 --name c300ce --stop-at 301 > $R/train_c300.txt 2>&1 &
TR=$!
sleep 5
el tests; timeout $(left 560) python3 -m pytest -q -m gpu -n 0 -p no:cacheprovider -rA tests/test_kernels_dense.py \
  -k "helpers or cross_entropy or head_loss or ce_kernels" tests/test_engine.py tests/test_fp8_audit.py > $R/gpu_tests.txt 2>&1; el "tests exit $?"
wait $TR; el "train exit $?"
cp runs/c300ce/metrics.jsonl $R/metrics_c300.jsonl 2>/dev/null
finish
grep -E "val_loss" $R/train_c300.txt | tail -5; tail -25 $R/gpu_tests.txt | grep -E "PASS|FAIL|ERROR|passed|failed"; cat $R/timeline.txt
