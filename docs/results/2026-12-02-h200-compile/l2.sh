source .carry/setup.sh
el start; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader > $R/gpu.txt
python3 -c "import jax,jaxlib,triton,torch;print(jax.__version__,jaxlib.__version__,triton.__version__,torch.__version__)" >> $R/gpu.txt 2>&1
export TORCHINDUCTOR_CACHE_DIR=$PWD/.cache/inductor
# the PyTorch reference's warm-up (fills its Inductor cache for the four phases of the 150-step schedule), beside the rest
( SCHED_ITERS=150 STOP_AFTER=189 WARMUP_ONLY=1 SEED=0 VAL_EVERY=0 TRAIN_FILES='data/proxy16/fineweb_train_*.bin' VAL_FILES='data/proxy16/fineweb_val_*.bin' \
  PYTHONPATH= TRITON_CACHE_DIR=$PWD/.cache/triton timeout 548 torchrun --standalone --nproc_per_node=1 .carry/ref_sched.py 2>&1 \
  | grep -v "^\[rank0\]:W" > $R/ref_warm.txt; echo "ref warm rc=$? at $SECONDS s" >> $R/ref_warm.txt ) &
# the GPU tests, beside the rest (their order: the small-shape head loss first)
( timeout 540 python3 -m pytest -q -m gpu -n 0 -p no:cacheprovider -rA tests/test_kernels_dense.py tests/test_engine.py \
  tests/test_fp8_audit.py tests/test_kernels_attention.py > $R/gpu_tests.txt 2>&1; echo "rc=$? at $SECONDS s" >> $R/gpu_tests.txt ) &
# curves: record60 on a 300-step schedule (260 scheduled + the 40-step extension), so that phases 3 and the extension run
for b in 98304 65536; do
  el "train $b"; timeout $(left 450) python3 -m jaxrun.train --config configs/record60.py $P --set schedule.scheduled_steps=260 \
    --set model.train_forward_tokens=$b --set run.val_every=100 --set run.seed=0 --name c$b > $R/train_c$b.txt 2>&1; el "train $b exit $?"
  cp runs/c$b/metrics.jsonl $R/metrics_c$b.jsonl 2>/dev/null
done
if [ $(left 585) -gt 130 ]; then
  el profile; XLA_FLAGS=--xla_gpu_enable_command_buffer= timeout $(left 560) python3 -m jaxrun.bench step --config configs/record60.py $P \
    --set schedule.scheduled_steps=150 --skip-cold --benched-variants-only --steps 4 --warmup 2 --profile /tmp/prof > $R/profile_bench.txt 2>&1
  el "profile exit $?"
  timeout $(left 585) python3 -m jaxrun.profiling /tmp/prof/phase0 /tmp/prof/phase1 /tmp/prof/phase2 /tmp/prof/phase3 --steps 2 \
    --labels "phase 1,phase 2,phase 3,extension" --markdown $R/profile_table.md --json $R/profile.json > $R/profiling.txt 2>&1; el "table exit $?"
fi
while [ $SECONDS -lt 556 ] && pgrep -f ref_sched.py >/dev/null; do sleep 2; done
finish
grep -h "val_loss\|per device" $R/train_c*.txt | head -12; grep -E "passed|failed" $R/gpu_tests.txt | tail -2; tail -3 $R/ref_warm.txt; cat $R/timeline.txt
