# sourced: the PyTorch reference (record-#60 code, one line changed: SCHED_ITERS, see ../2026-12-01-h200-side-by-side/)
# on the 150-step schedule + 40-step extension, stopping after the validation at step 189. Its Inductor and Triton
# caches live in .cache/ (ignored by git), kept on the warm machine between commands.
export TORCHINDUCTOR_CACHE_DIR=$PWD/.cache/inductor
mkdir -p .cache
ref() {  # ref LOG TIMEOUT [extra env...]: run it; kill it once the step-189 validation line is out (its exit can hang)
  local log=$1 t=$2; shift 2
  ( env "$@" SCHED_ITERS=150 STOP_AFTER=189 SEED=0 VAL_EVERY=0 TRAIN_FILES='data/proxy16/fineweb_train_*.bin' \
      VAL_FILES='data/proxy16/fineweb_val_*.bin' PYTHONPATH= TRITON_CACHE_DIR=$PWD/.cache/triton \
      timeout $t torchrun --standalone --nproc_per_node=1 .carry/ref_sched.py 2>&1 | grep --line-buffered -v "^\[rank0\]:W" > $log
    echo "ref rc=$? at $SECONDS s" >> $log ) &
  local pid=$!
  while kill -0 $pid 2>/dev/null; do
    if grep -q "^step:189/190 val_loss" $log; then sleep 3; pkill -f ref_sched.py; echo "killed after step 189 at $SECONDS s" >> $log; break; fi
    sleep 2
  done
  wait $pid
}
