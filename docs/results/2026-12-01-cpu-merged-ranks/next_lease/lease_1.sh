# next lease, command 1 (~9 min): the 301-step curve of the shipped config, then the GPU tests of what changed since
# the last GPU test run (51769e5): the CE kernels (bare MUFU, target rewrite, several sequences per launch), the fused
# head loss in the compiled step, and the merged-ranks step with the GPU kernels
source .carry/setup.sh  # this folder's setup.sh, copied into .carry/
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > $R/gpu.txt
python3 -c "import jax, jaxlib, triton, jax_triton; print(jax.__version__, jaxlib.__version__, triton.__version__, jax_triton.__version__)" >> $R/gpu.txt 2>&1
git log --oneline -1 >> $R/gpu.txt
el start
timeout $(left 230) python3 -m jaxrun.train --config configs/record60.py $P --set run.val_every=100 --set run.seed=0 \
  --name cur --stop-at 301 > $R/train.txt 2>&1; el "train exit $?"
cp runs/cur/metrics.jsonl $R/ 2>/dev/null
timeout $(left 420) python3 -m pytest -q -m gpu -n 0 -p no:cacheprovider -rA tests/test_kernels_dense.py \
  -k "cross_entropy or head_loss or ce_kernels" > $R/tests_dense.txt 2>&1; el "dense tests exit $?"
timeout $(left 520) python3 -m pytest -q -m gpu -n 0 -p no:cacheprovider -rA \
  "tests/test_fp8_audit.py::test_fused_head_loss_in_the_compiled_step_gives_the_separate_ops_gradients" \
  "tests/test_engine.py::test_merged_ranks_in_the_compiled_step_with_the_gpu_kernels" > $R/tests_step.txt 2>&1
el "step tests exit $?"
timeout $(left 590) python3 -m pytest -q -m gpu -n 0 -p no:cacheprovider -rA \
  "tests/test_fp8_audit.py::test_head_and_embedding_gradients_in_the_compiled_step" > $R/tests_audit.txt 2>&1
el "audit tests exit $?"
finish
grep -h "val_loss\|first timed\|compiled\|per device" $R/train.txt | head; grep -hE "PASSED|FAILED|ERROR|passed|failed" $R/tests_*.txt | tail -40
cat $R/timeline.txt
