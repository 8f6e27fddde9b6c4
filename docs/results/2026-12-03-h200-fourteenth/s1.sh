# Command 1 (fresh machine): the reference's warm-up (WARMUP_ONLY) fills its Inductor cache in the background while
# jaxrun runs, for correctness only (nothing timed here is clean): the 300-step curve of the committed code
# (preallocated at 45%: a 63 GiB pool, so 65,536 tokens per forward, as shipped before the memory table), then the GPU
# tests of the compiled step (engine, FP8 audit), then the attention kernels' if time is left
source .carry/setup.sh
source docs/results/2026-12-02-h200-table/ref.sh
el start; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader > $R/gpu.txt
python3 -c "import jax,jaxlib,triton,torch,jax_triton;print(jax.__version__,jaxlib.__version__,triton.__version__,torch.__version__,jax_triton.__version__)" >> $R/gpu.txt 2>&1
( el "ref warm-up"; ref $R/ref_warm1.txt $(left 568) WARMUP_ONLY=1; el "ref warm-up ended" ) &
el train; env -u XLA_PYTHON_CLIENT_PREALLOCATE XLA_PYTHON_CLIENT_MEM_FRACTION=0.45 timeout $(left 300) python3 -m jaxrun.train \
  --config configs/record60.py $P --set run.val_every=100 --set run.seed=0 --name c300 --stop-at 301 > $R/train_c300.txt 2>&1
el "train exit $?"; cp runs/c300/metrics.jsonl $R/metrics_c300.jsonl 2>/dev/null
el tests; timeout $(left 400) python3 -m pytest -q -m gpu -n 0 -p no:cacheprovider -rA tests/test_engine.py \
  tests/test_fp8_audit.py > $R/gpu_tests.txt 2>&1; el "tests exit $?"
el tests2; timeout $(left 562) python3 -m pytest -q -m gpu -n 0 -p no:cacheprovider -rA tests/test_kernels_attention.py \
  > $R/gpu_tests2.txt 2>&1; el "tests2 exit $?"
while [ $SECONDS -lt 575 ] && pgrep -f ref_sched.py >/dev/null; do sleep 2; done
finish
cat $R/gpu.txt; grep -h "val_loss\|rror\|tokens per forward\|per device" $R/train_c300.txt | head; grep -hE "passed|failed" $R/gpu_tests*.txt | tail -4; tail -3 $R/ref_warm1.txt; cat $R/timeline.txt
