# Eleventh sitting, command 1 (fresh machine): the reference's warm-up (WARMUP_ONLY) fills its Inductor cache in the
# background while jaxrun runs, for correctness only (its times are not clean beside the warm-up): the 300-step curve
# of the shipped code (9d10fd5: the tenth sitting's curve code plus a refactor of the launch's program count, so it
# should repeat 3.5705/3.1839/3.0613 bit for bit), the after-optimizations HLO of the embedding-gradient scatters in
# phases 1 and 3, then GPU tests (engine, fp8 audit, dense kernels).
source .carry/setup.sh
source docs/results/2026-12-02-h200-table/ref.sh
D=docs/results/2026-12-02-h200-eleventh
el start; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader > $R/gpu.txt
python3 -c "import jax,jaxlib,triton,torch,jax_triton;print(jax.__version__,jaxlib.__version__,triton.__version__,torch.__version__,jax_triton.__version__)" >> $R/gpu.txt 2>&1
( el "ref warm-up"; ref $R/ref_warm1.txt $(left 568) WARMUP_ONLY=1; el "ref warm-up ended" ) &
el train; env -u XLA_PYTHON_CLIENT_PREALLOCATE XLA_PYTHON_CLIENT_MEM_FRACTION=0.45 timeout $(left 300) python3 -m jaxrun.train \
  --config configs/record60.py $P --set run.val_every=100 --set run.seed=0 --name c300e --stop-at 301 > $R/train_c300.txt 2>&1
el "train exit $?"; cp runs/c300e/metrics.jsonl $R/metrics_c300.jsonl 2>/dev/null
el hlo; env -u XLA_PYTHON_CLIENT_PREALLOCATE XLA_PYTHON_CLIENT_MEM_FRACTION=0.45 \
  XLA_FLAGS="--xla_dump_to=/tmp/hlo --xla_dump_hlo_as_text" timeout $(left 400) python3 -m jaxrun.bench step \
  --config configs/record60.py $P --set schedule.scheduled_steps=150 --phase 0 --phase 2 --skip-cold \
  --benched-variants-only --steps 1 --warmup 1 > $R/hlo_bench.txt 2>&1; el "hlo exit $?"
python3 $D/scatter_fusions.py /tmp/hlo 80 > $R/scatter_fusions.txt 2>&1; ls -la /tmp/hlo | grep -c after_opt >> $R/timeline.txt
el tests; timeout $(left 562) python3 -m pytest -q -m gpu -n 0 -p no:cacheprovider -rA tests/test_engine.py \
  tests/test_fp8_audit.py tests/test_kernels_dense.py > $R/gpu_tests.txt 2>&1; el "tests exit $?"
while [ $SECONDS -lt 575 ] && pgrep -f ref_sched.py >/dev/null; do sleep 2; done
el end; nvidia-smi --query-gpu=memory.used --format=csv,noheader >> $R/timeline.txt
finish
cat $R/gpu.txt; grep -h "val_loss\|error" $R/train_c300.txt | head; grep -c "" $R/scatter_fusions.txt; grep -E "passed|failed" $R/gpu_tests.txt | tail -3; tail -3 $R/ref_warm1.txt; cat $R/timeline.txt
