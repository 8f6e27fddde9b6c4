# Next lease, command 1 of 2 (from the repository root, .carry/ as in the brief, setup.sh from
# ../../2026-12-01-cpu-merged-ranks/next_lease/): jaxrun's bench alone on a quiet GPU, then the PyTorch reference's
# warm-up alone until the command's end. Command 2 must follow within the ~30 s the machine stays warm.
source .carry/setup.sh
el start; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader > $R/gpu.txt
python3 -c "import jax,jaxlib,triton,torch;print(jax.__version__,jaxlib.__version__,triton.__version__,torch.__version__)" >> $R/gpu.txt 2>&1
el bench; TRITON_CACHE_DIR=$(mktemp -d) timeout 170 python3 -m jaxrun.bench step --config configs/record60.py $P \
  --set schedule.scheduled_steps=150 --steps 10 --warmup 3 --json $R/bench.json > $R/bench.txt 2>&1; el "bench exit $?"
export TORCHINDUCTOR_CACHE_DIR=$PWD/.cache/inductor   # ignored by git: kept on the machine between commands
el "ref warm-up"; SCHED_ITERS=150 STOP_AFTER=189 WARMUP_ONLY=1 SEED=0 VAL_EVERY=0 \
  TRAIN_FILES='data/proxy16/fineweb_train_*.bin' VAL_FILES='data/proxy16/fineweb_val_*.bin' PYTHONPATH= \
  TRITON_CACHE_DIR=$PWD/.cache/triton timeout $(left 588) torchrun --standalone --nproc_per_node=1 .carry/ref_sched.py 2>&1 \
  | grep -v "^\[rank0\]:W" > $R/ref_warm.txt; el "ref warm-up exit $?"
finish
grep -E "^(phase|extension) |^compile" $R/bench.txt; tail -2 $R/ref_warm.txt; cat $R/timeline.txt
