# Tenth sitting, command 5: the Mosaic GPU probe with f16 inputs for the mgpu kernel.
source .carry/setup.sh; D=docs/results/2026-12-02-h200-levers/next_lease; el probe; timeout 200 python3 $D/mgpu_probe.py 16384 49152 > $R/mgpu_probe.txt 2>&1; el "probe exit $?"; finish
