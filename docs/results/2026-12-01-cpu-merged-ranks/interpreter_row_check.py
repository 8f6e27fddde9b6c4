"""The CE kernels with several sequences per launch (ROW < T) against one launch per sequence (ROW == T, the kernels
timed on the H200, SASS unchanged: sass_row_check.py), in triton's interpreter on the CPU: every output bit for bit.
The bare-instruction helpers are swapped for the tl.exp / division they stand for (the interpreter runs no inline
PTX); both sides run the same swap. Needs torch (CPU) beside triton:

    TRITON_INTERPRET=1 python docs/results/2026-12-01-cpu-merged-ranks/interpreter_row_check.py
"""
import importlib.util
import os
import sys

os.environ["TRITON_INTERPRET"] = "1"
import numpy as np  # noqa: E402
import torch  # noqa: E402
import triton  # noqa: E402
import triton.language as tl  # noqa: E402

spec = importlib.util.spec_from_file_location("ce", "kernels/softcap_ce.py")
ce = importlib.util.module_from_spec(spec)
sys.modules["ce"] = ce
spec.loader.exec_module(ce)


@triton.jit
def _exp_plain(x):
    return tl.exp(x)


@triton.jit
def _rcp_plain(x):
    return 1 / x


ce._exp, ce._reciprocal = _exp_plain, _rcp_plain
cap, inv_temp, shift = (float(x) for x in ce._softcap_scalars((23.0, 5.0, 7.5)))
recip = float(np.float32(1) / np.float32(0.75 / 448))


def run(logits, targets, w, dloss, row):
    t, v = logits.shape
    k = w.shape[0]
    loss, lse, terms = torch.empty(t), torch.empty(t), torch.empty(t, k)
    ce._ce_forward_kernel[(t,)](logits, targets, w, cap, inv_temp, shift, loss, lse, terms, T=t, V=v, NUM_WEIGHTS=k,
                                BLOCK=1024, TAIL_BLOCK=1024, ROW=row)
    dl = torch.empty(t, v, dtype=torch.bfloat16)
    ce._ce_backward_kernel[(t,)](logits, targets, w, lse, dloss, cap, inv_temp, shift, dl, T=t, V=v, NUM_WEIGHTS=k,
                                 BLOCK=1024, TAIL_BLOCK=512, ROW=row)
    f = [torch.empty(t), torch.empty(t), torch.empty(t, k), torch.empty(t, v, dtype=torch.float8_e5m2)]
    ce._ce_fused_fp8_kernel[(t,)](logits, targets, w, cap, inv_temp, shift, recip, *f, T=t, V=v, NUM_WEIGHTS=k,
                                  BLOCK=1024, TAIL_BLOCK=1024, GRAD_BLOCK=1024, BY_RECIPROCAL=True, ROW=row)
    return [loss, lse, terms, dl.view(torch.int16), f[0], f[1], f[2], f[3].view(torch.uint8)]


NAMES = ["fwd loss", "fwd lse", "fwd terms", "bwd dlogits", "fused loss", "fused lse", "fused terms", "fused e5m2"]
fails = 0
for seqs, row, v, weights, seed in ((3, 5, 2048 + 100, (1.0, 0.5, 0.25), 0), (2, 7, 1000, (0.7, 0.2, 0.0), 1),
                                    (4, 2, 300, (1.0, 0.5, 0.25), 2), (3, 4, 50, (1.0,), 3)):
    g = torch.Generator().manual_seed(seed)
    t = seqs * row
    logits = (torch.randn(t, v, generator=g) * 4).to(torch.bfloat16)
    targets = torch.randint(0, v, (t,), generator=g, dtype=torch.int32)
    targets[row] = targets[row - 1]  # the next sequence's first target equals this one's last: must not be a hit
    targets[-1] = v - 1  # a target in the masked tail
    w = torch.tensor(weights, dtype=torch.float32)
    dloss = torch.rand(t, generator=g) + 0.5
    merged = run(logits, targets, w, dloss, row)
    parts = [run(logits[i * row:(i + 1) * row].contiguous(), targets[i * row:(i + 1) * row].contiguous(), w,
                 dloss[i * row:(i + 1) * row].contiguous(), row) for i in range(seqs)]
    each = [torch.cat([p[j] for p in parts]) for j in range(len(NAMES))]
    whole = run(logits, targets, w, dloss, t)  # one sequence: MTP targets cross the rows' ends, so it must differ
    same = [torch.equal(a, b) for a, b in zip(merged, each)]
    crosses = not all(torch.equal(a, b) for a, b in zip(whole, each))
    fails += (not all(same)) + (not crosses and len(weights) > 1)
    print(f"{seqs} sequences of {row} rows, V={v}, K={len(weights)}: merged == per-sequence launches: "
          f"{dict(zip(NAMES, same))}; one-sequence launch differs: {crosses}")
print("FAIL" if fails else "all bit for bit")
sys.exit(1 if fails else 0)
