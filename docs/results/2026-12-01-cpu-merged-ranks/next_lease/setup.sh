# sourced at the start of every device command: install the missing wheels and jaxrun, make the proxy shards once
set -o pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .carry/*.whl >/dev/null 2>&1
export PYTHONPATH=/tmp/site:$PWD
python3 -m pip install -q --no-deps --no-build-isolation -e . >/dev/null 2>&1 || echo "pip -e failed"
export XLA_PYTHON_CLIENT_PREALLOCATE=false PYTHONUNBUFFERED=1
P="--set data.train_files=data/proxy16/fineweb_train_*.bin --set data.val_file=data/proxy16/fineweb_val_000000.bin"
if [ ! -f data/proxy16/fineweb_val_000000.bin ]; then
  t0=$(date +%s); python3 -m jaxrun.data tokenize .carry/corpus-*.jsonl.xz data/proxy16 --passes 16 2>&1 | tail -1; echo "tokenized in $(( $(date +%s) - t0 ))s"
fi
# results: everything under $R comes back as $OUT/res.tgz, refreshed every 10 s (a command cut by its limit still
# returns what it had); left N: seconds until N s after the start; el: a timestamped line in timeline.txt
R=$OUT/r; mkdir -p $R; export R
( while true; do sleep 10; tar czf $OUT/res.tgz.tmp -C $R . 2>/dev/null && mv $OUT/res.tgz.tmp $OUT/res.tgz; done ) &
TARLOOP=$!
left() { echo $(( $1 - SECONDS )); }
el() { echo "[$SECONDS s] $*" | tee -a $R/timeline.txt; }
finish() { kill $TARLOOP; tar czf $OUT/res.tgz -C $R .; }
