# Next lease, command 2 (only if n1 says the variant pays; same machine, right after): with dsdq.patch applied, the
# attention and engine GPU tests beside the 300-step curve (preallocated at 45%: 65,536 tokens per forward, as the
# curves on record)
source .carry/setup.sh
mkdir -p /tmp/fa; cp kernels/flash_attention.py /tmp/fa/fa_base.py; cp jaxrun/bench.py /tmp/fa/bench_base.py
git apply docs/results/2026-12-03-h200-fourteenth/next_lease/dsdq.patch
if [ "${PICK:-dsdq}" = dsdq64 ]; then  # n1's pick: PICK=dsdq64 bash n2.sh
  sed -i 's/KernelConfig(128, 64, 8, 3), KernelConfig(32, 64, 4, 3)/KernelConfig(64, 64, 4, 3), KernelConfig(32, 64, 4, 3)/' kernels/flash_attention.py
fi
el "installed ${PICK:-dsdq}"
el curve; env -u XLA_PYTHON_CLIENT_PREALLOCATE XLA_PYTHON_CLIENT_MEM_FRACTION=0.45 timeout $(left 300) python3 -m jaxrun.train \
  --config configs/record60.py $P --set run.val_every=100 --set run.seed=0 --name c300ds --stop-at 301 > $R/train_c300.txt 2>&1 &
TR=$!
sleep 5
el tests; timeout $(left 560) python3 -m pytest -v -m gpu -n 0 -p no:cacheprovider -rfEs tests/test_kernels_attention.py \
  tests/test_engine.py > $R/gpu_tests.txt 2>&1; el "tests exit $?"
wait $TR; el "train exit $?"; cp runs/c300ds/metrics.jsonl $R/metrics_c300.jsonl 2>/dev/null
cp /tmp/fa/bench_base.py jaxrun/bench.py; cp /tmp/fa/fa_base.py kernels/flash_attention.py  # the committed files again (not git: the device copy has an older git directory)
finish
grep val_loss $R/train_c300.txt | tail -4; grep -cE " PASSED" $R/gpu_tests.txt; grep -E "FAILED|ERROR|passed|failed" $R/gpu_tests.txt | tail -8; cat $R/timeline.txt
