# Command 3 (right after s2.sh), alone on the GPU with jax's default preallocation: the 300-step curve as a user runs
# it here (the memory table's 131,072 tokens per forward in phase 1), against s1's at 65,536
source .carry/setup.sh
el train; env -u XLA_PYTHON_CLIENT_PREALLOCATE timeout $(left 400) python3 -m jaxrun.train \
  --config configs/record60.py $P --set run.val_every=100 --set run.seed=0 --name c300big --stop-at 301 > $R/train_c300big.txt 2>&1
el "train exit $?"; cp runs/c300big/metrics.jsonl $R/metrics_c300big.jsonl 2>/dev/null
finish
grep -h "val_loss\|rror\|tokens per forward\|per device\|first timed\|peak" $R/train_c300big.txt | head -12; cat $R/timeline.txt
