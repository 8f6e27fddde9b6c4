# lease 2, command A: new CE kernels bitwise against beff1a0's; bench step of the new code (cold + warm compile, all
# phases), of the new code with the xla MLP, and of beff1a0, one after the other
source .carry/setup.sh
R=$OUT/r; mkdir -p $R; export R
( while true; do sleep 10; tar czf $OUT/res.tgz.tmp -C $R . 2>/dev/null && mv $OUT/res.tgz.tmp $OUT/res.tgz; done ) &
TARLOOP=$!
left() { echo $(( $1 - SECONDS )); }
el() { echo "[$SECONDS s] $*" | tee -a $R/timeline.txt; }
mkdir -p /tmp/o && tar xf .carry/oldtree.tar -C /tmp/o && ln -s ../kernels /tmp/o/jaxrun/kernels && ln -s $PWD/data /tmp/o/data
(cd /tmp/o && PYTHONPATH=/tmp/site:/tmp/o python3 -c "import jaxrun.kernels.softcap_ce as m; print('old tree:', m.__file__)") > $R/oldtree.txt 2>&1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > $R/gpu.txt
python3 -c "import jax, jaxlib, triton, jax_triton, flatbuffers; print(jax.__version__, jaxlib.__version__, triton.__version__, jax_triton.__version__, 'flatbuffers ok')" >> $R/gpu.txt 2>&1
el start
timeout 120 python3 docs/results/2026-12-01-h200-ce-kernel/next_lease/kcheck.py > $R/kcheck.txt 2>&1; el "kcheck exit $?"
REPO=$PWD
S150="--set schedule.scheduled_steps=150"
TORCH="--compare-to $REPO/docs/results/2026-12-01-h200-side-by-side/pytorch_ref_sched150.txt"
# beff1a0 first, against the PyTorch log of the previous sitting (another lease: indicative only) ...
( cd /tmp/o && PYTHONPATH=/tmp/site:/tmp/o timeout $(left 230) python3 -m jaxrun.bench step --config configs/record60.py \
  $P $S150 $TORCH --skip-cold --benched-variants-only --steps 10 --warmup 3 \
  --json $R/bench_old.json > $R/bench_old.txt 2>&1; el "bench old exit $?" )
# ... then this code, cold and warm (both caches), against beff1a0 in this lease ...
timeout $(left 450) python3 -m jaxrun.bench step --config configs/record60.py $P $S150 --compare-to $R/bench_old.json \
  --steps 10 --warmup 3 --json $R/bench_new.json > $R/bench_new.txt 2>&1; el "bench new exit $?"
# ... and with the xla MLP, against this code
MLPX="model.backends=(('attention','auto'),('lm_head','auto'),('mlp','xla'),('cross_entropy','auto'),('head_loss','auto'))"
timeout $(left 585) python3 -m jaxrun.bench step --config configs/record60.py $P $S150 --set "$MLPX" --skip-cold \
  --benched-variants-only --steps 10 --warmup 3 --compare-to $R/bench_new.json --json $R/bench_mlpxla.json \
  > $R/bench_mlpxla.txt 2>&1; el "bench mlp xla exit $?"
kill $TARLOOP; tar czf $OUT/res.tgz -C $R .
cat $R/gpu.txt; tail -2 $R/kcheck.txt; for f in old new mlpxla; do echo "== $f"; grep -v "^\s*$" $R/bench_$f.txt | tail -22; done
