# Command 4 (inline, right after s3, same machine): the same curve without the table (65,536 tokens per forward in
# every phase, one rank per forward in phase 3 and the extension)
source .carry/setup.sh; el train; env -u XLA_PYTHON_CLIENT_PREALLOCATE timeout 300 python3 -m jaxrun.train --config configs/record60.py $P \
  --set "model.forward_tokens_by_memory=()" --set schedule.scheduled_steps=260 --set run.val_every=100 --set run.seed=0 \
  --name s260b > $R/train_sched260_65536.txt 2>&1; el "train exit $?"; cp runs/s260b/metrics.jsonl $R/metrics_sched260_65536.jsonl
finish
