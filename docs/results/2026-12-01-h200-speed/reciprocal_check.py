"""For every finite bf16 x: is quantize(x / s) == quantize(x * fl32(1 / s)) for the record's three FP8 scales?

Run on the CPU, 2026-12-01: yes for all 65,280 finite bf16 values and each scale (grad e5m2, x and w e4m3). So the
quantisers of bf16 inputs may multiply by the fp32 reciprocal instead of dividing (cheaper in the fused head-loss
kernel, where the IEEE division costs about as much as the bf16 store it replaced) without changing a single bit.
Not applied yet: a kernel change needs its GPU run first.
"""
import ml_dtypes
import numpy as np

x = np.arange(65536, dtype=np.uint32).astype(np.uint16).view(ml_dtypes.bfloat16).astype(np.float32)
x = x[np.isfinite(x)]
with np.errstate(over="ignore"):
    for name, scale, dtype in (("grad", 0.75 / 448, ml_dtypes.float8_e5m2), ("x", 100 / 448, ml_dtypes.float8_e4m3fn),
                               ("w", 1.6 / 448, ml_dtypes.float8_e4m3fn)):
        s, limit = np.float32(scale), np.float32(float(ml_dtypes.finfo(dtype).max))
        by_division = np.clip(x / s, -limit, limit).astype(dtype).view(np.uint8)
        by_reciprocal = np.clip(x * (np.float32(1) / s), -limit, limit).astype(dtype).view(np.uint8)
        print(f"{name}: {int((by_division != by_reciprocal).sum())} of {x.size} bf16 values quantise differently")
