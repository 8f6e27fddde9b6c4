"""The persistent ReLU² matmul kernel (mlp_persistent.patch) against the shipped one (git HEAD), both in triton's
interpreter on the CPU: every output bit for bit, forward and backward, at small ragged shapes, with fewer programs
than tiles (so each program strides over several tiles, and the last stride is partial), and against numpy.
triton_interpreter.py (beside it) makes the interpreter faithful enough for that.

    git show HEAD:kernels/relu2_mlp.py > /tmp/relu2_mlp_shipped.py
    git apply docs/results/2026-12-02-h200-levers/next_lease/mlp_persistent.patch   # the working tree's kernel is new
    python docs/results/2026-12-02-h200-levers/next_lease/mlp_persistent_interpreter_check.py /tmp/relu2_mlp_shipped.py
"""
import importlib.util
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
import triton_interpreter  # noqa: E402,F401  (before any kernel: the interpreter and its fixes)
import numpy as np  # noqa: E402
import torch  # noqa: E402


def load(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


new = load("relu2_new", os.path.join(os.path.dirname(__file__), "../../../../kernels/relu2_mlp.py"))
old = load("relu2_old", sys.argv[1])
tiles = dict(BLOCK_M=32, BLOCK_N=32, BLOCK_K=16, GROUP_M=2)
fails = 0
for m, n, k, programs, seed in ((100, 70, 48, 3, 0), (64, 64, 32, 4, 1), (33, 96, 40, 5, 2), (128, 32, 16, 1, 3)):
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(m, k, generator=g).to(torch.bfloat16)
    b = torch.randn(n, k, generator=g).to(torch.bfloat16)
    grad = torch.randn(m, k, generator=g).to(torch.bfloat16)  # the backward's a: G (M, K) against proj (N, K)
    grid_tiles = -(-m // tiles["BLOCK_M"]) * -(-n // tiles["BLOCK_N"])
    outs = {}
    for name, module in (("old", old), ("new", new)):
        pre, post, d_pre = (torch.full((m, n), float("nan"), dtype=torch.bfloat16) for _ in range(3))
        extra = {} if module is old else {"NUM_PROGRAMS": programs}
        grid = (grid_tiles,) if module is old else (programs,)
        module._relu2_matmul_kernel[grid](a, b, pre, post, M=m, N=n, K=k, FORWARD=True, **tiles, **extra)
        module._relu2_matmul_kernel[grid](grad, b, pre, d_pre, M=m, N=n, K=k, FORWARD=False, **tiles, **extra)
        outs[name] = [x.view(torch.int16) for x in (pre, post, d_pre)]
    same = [torch.equal(x, y) for x, y in zip(outs["old"], outs["new"])]
    # and against numpy: pre = bf16(a bᵀ) to within the bf16 rounding (the interpreter's dot order differs from fp64's)
    ref = a.float().numpy().astype(np.float64) @ b.float().numpy().astype(np.float64).T
    pre_new = outs["new"][0].view(torch.bfloat16).float().numpy()
    close = bool(np.allclose(pre_new, ref, rtol=2 ** -7, atol=1e-2))
    written = not any(torch.isnan(x.view(torch.bfloat16)).any() for x in outs["new"])  # every tile written
    print(f"M={m} N={n} K={k}, {programs} programs over {grid_tiles} tiles: bitwise old == new for (pre, post, d_pre): "
          f"{same}; pre near numpy: {close}; every element written: {written}")
    fails += not (all(same) and close and written)
print("ALL SAME" if not fails else f"{fails} CASES DIFFER")
sys.exit(1 if fails else 0)
