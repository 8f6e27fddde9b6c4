# lease 1: CE kernel candidates (timing, bitwise check, SASS), ncu of the baseline and one candidate, MLP tile sweep alone
source .carry/setup.sh
R=$OUT/r; mkdir -p $R; export R
( while true; do sleep 10; tar czf $OUT/res.tgz.tmp -C $R . 2>/dev/null && mv $OUT/res.tgz.tmp $OUT/res.tgz; done ) &
TARLOOP=$!
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,memory.total,driver_version --format=csv > $R/gpu.txt
timeout 200 python3 .carry/cesweep.py > $R/cesweep.txt 2>&1; echo "exit $? at $SECONDS" >> $R/cesweep.txt
tail -3 $R/cesweep.txt
NS="--section SpeedOfLight --section ComputeWorkloadAnalysis --section WarpStateStats --section InstructionStats --section Occupancy --section MemoryWorkloadAnalysis --section SchedulerStats"
for k in base f1p1o0_b1024g1024w4; do
  timeout 90 ncu --clock-control none -k regex:"fused_fp8|cand_kernel" -c 1 $NS python3 .carry/cesweep.py $k > $R/ncu_$k.txt 2>&1; echo "exit $? at $SECONDS" >> $R/ncu_$k.txt
done
timeout $((470 - SECONDS)) python3 .carry/mlpsweep2.py > $R/mlpsweep2.txt 2>&1; echo "exit $? at $SECONDS" >> $R/mlpsweep2.txt
kill $TARLOOP; tar czf $OUT/res.tgz -C $R .
cat $R/cesweep.txt | cut -c1-600; grep -E "Duration|Issue Slots Busy|Executed Ipc|Warp Cycles Per Issued|Stall|Registers|Achieved Occupancy|DRAM Throughput|L2 Hit|Memory Throughput" $R/ncu_*.txt | head -60; cat $R/mlpsweep2.txt | tail -30
