# Command 3 (inline in the session, warm machine, alone on the GPU, jax's default preallocation): a 300-step curve on a
# 260-step schedule (phase 3 from step 174, the extension from 260), so that the curve check reaches the phases whose
# forwards the memory table changes; the table as shipped after s2 (98,304 only), then the engine's GPU test
source .carry/setup.sh; el train; env -u XLA_PYTHON_CLIENT_PREALLOCATE timeout 330 python3 -m jaxrun.train --config configs/record60.py $P \
  --set "model.forward_tokens_by_memory=((64,98304),)" --set schedule.scheduled_steps=260 --set run.val_every=100 --set run.seed=0 \
  --name s260 > $R/train_sched260.txt 2>&1; el "train exit $?"; cp runs/s260/metrics.jsonl $R/metrics_sched260.jsonl
el tests; timeout $(left 560) python3 -m pytest -q -m gpu -n 0 -p no:cacheprovider -rA tests/test_engine.py > $R/gpu_tests3.txt 2>&1
el "tests exit $?"; finish
