"""The backward of dsdq.patch (kernels/flash_attention.py with it applied) (dK dV writes the dS tiles, dQ reads them) against the committed kernels' (dQ recomputes them)
and an fp64 numpy reference, in triton's interpreter on the CPU, at the record's tile shapes and small T. Needs torch
(CPU), triton and jax (for the block plans) in one environment:

    python docs/results/2026-12-03-h200-fourteenth/next_lease/dsdq_interpreter_check.py

dK and dV must be the committed kernels' bit for bit (the same operations in the same order; only a store is added).
dQ must be within bf16 rounding of the reference: the committed kernel recomputes P from q.k^T, the variant reads the
dS that the dK dV kernel computed from k.q^T, so the two can differ in the last bits of a few entries.
"""
import dataclasses
import importlib.util
import os
import sys
import types

os.environ["TRITON_INTERPRET"] = "1"
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import triton.language as tl  # noqa: E402

from triton.runtime import interpreter as _interp  # noqa: E402

sys.modules.setdefault("jax_triton", types.ModuleType("jax_triton"))  # the modules import it; the interpreter runs without
HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "../../../.."))


def load(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


def patched(patch):
    """kernels/flash_attention.py with ``patch`` applied (git apply outside a repository, in a temporary folder)."""
    import shutil
    import subprocess
    import tempfile

    work = tempfile.mkdtemp()
    os.makedirs(os.path.join(work, "kernels"))
    shutil.copy(os.path.join(ROOT, "kernels/flash_attention.py"), os.path.join(work, "kernels"))
    subprocess.run(["git", "apply", "--include=kernels/flash_attention.py", os.path.join(HERE, patch)], cwd=work, check=True)
    return os.path.join(work, "kernels/flash_attention.py")


base = load("fa_base", os.path.join(ROOT, "kernels/flash_attention.py"))
new = load("fa_dsdq", patched("dsdq.patch"))


_dot = _interp.InterpreterBuilder.create_dot


def _dot_bf16_as_fp32(self, a, b, d, input_precision, max_num_imprecise_acc):
    """triton 3.6's interpreter multiplies bf16 operands as their uint16 bits; give it their fp32 values (exact)."""
    def fp32(x):
        if x.dtype == tl.bfloat16:
            return _interp.TensorHandle((x.data.astype(np.uint32) << 16).view(np.float32), tl.float32)
        return x
    return _dot(self, fp32(a), fp32(b), d, input_precision, max_num_imprecise_acc)


_interp.InterpreterBuilder.create_dot = _dot_bf16_as_fp32


def tt(x, dtype=None):
    t = torch.from_numpy(np.asarray(x).copy())
    return t if dtype is None else t.to(dtype)


def reference(q, k, v, dout, seg, scale, window):
    """fp64: out, dq, dk, dv, dscale of softmax(scale q k^T + mask) v."""
    q, k, v, dout = (x.astype(np.float64) for x in (q, k, v, dout))
    t = q.shape[0]
    i, j = np.arange(t)[:, None], np.arange(t)[None, :]
    visible = (seg[:, None] == seg[None, :]) & (j <= i) & (j >= i - window)
    out, dq, dk, dv, dscale = (np.zeros_like(q), np.zeros_like(q), np.zeros_like(q), np.zeros_like(q), 0.0)
    for h in range(q.shape[1]):
        s = q[:, h] @ k[:, h].T
        z = np.where(visible, scale * s, -np.inf)
        p = np.exp(z - z.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        out[:, h] = p @ v[:, h]
        dp = dout[:, h] @ v[:, h].T
        ds = p * (dp - (dp * p).sum(1, keepdims=True))
        dq[:, h], dk[:, h], dv[:, h] = scale * ds @ k[:, h], scale * ds.T @ q[:, h], p.T @ dout[:, h]
        dscale += float((ds * s).sum())
    return out, dq, dk, dv, dscale


def run(mod, q, k, v, dout, seg_ids, scale, window, cfgs):
    t, h, d = q.shape
    seg_start, seg_end = mod.padded_segment_bounds(jnp.asarray(seg_ids), cfgs.row_multiple)
    plan = mod.BlockPlan(
        fwd=mod.query_block_ranges(seg_start, window, cfgs.fwd.block_m, cfgs.fwd.block_n),
        dq=mod.query_block_ranges(seg_start, window, cfgs.dq.block_m, cfgs.dq.block_n),
        dkdv=mod.key_block_ranges(seg_end, window, cfgs.dkdv.block_m, cfgs.dkdv.block_n),
    )
    qt, kt, vt, dot_ = (tt(x, torch.bfloat16) for x in (q, k, v, dout))
    st = tt(np.asarray(seg_start, np.int32))
    sc = torch.tensor([scale], dtype=torch.float32)
    out, lse = torch.empty_like(qt), torch.empty(h, t)
    base._attn_fwd_kernel[(t // cfgs.fwd.block_m, h)](qt, kt, vt, st, tt(plan.fwd), sc, window, t, out, lse, H=h, D=d,
                                                      BLOCK_M=cfgs.fwd.block_m, BLOCK_N=cfgs.fwd.block_n)
    delta = (out.float() * dot_.float()).sum(-1).T.contiguous()
    dq, dk, dv, dsr = torch.empty_like(qt), torch.empty_like(kt), torch.empty_like(vt), torch.empty(h, t)
    kv = cfgs.dkdv
    if mod is base:
        base._attn_dq_kernel[(t // cfgs.dq.block_m, h)](qt, kt, vt, dot_, st, tt(plan.dq), lse, delta, sc, window, t, dq,
                                                        dsr, H=h, D=d, BLOCK_M=cfgs.dq.block_m, BLOCK_N=cfgs.dq.block_n)
        base._attn_dkdv_kernel[(t // kv.block_n, h)](qt, kt, vt, dot_, st, tt(plan.dkdv), lse, delta, sc, window, t, dk,
                                                     dv, H=h, D=d, BLOCK_M=kv.block_m, BLOCK_N=kv.block_n)
    else:
        mt = new.max_tiles_per_key_block(window, kv.block_m, kv.block_n)
        ds = torch.full((h * (t // kv.block_n) * mt * kv.block_m * kv.block_n,), float("nan"), dtype=torch.bfloat16)
        new._attn_dkdv_kernel[(t // kv.block_n, h)](qt, kt, vt, dot_, st, tt(plan.dkdv), lse, delta, sc, window, t, mt,
                                                    dk, dv, ds, H=h, D=d, BLOCK_M=kv.block_m, BLOCK_N=kv.block_n)
        # unvisited slots stay NaN: a dQ that read one would be NaN
        new._attn_dq_kernel[(t // cfgs.dq.block_m, h)](qt, kt, ds, tt(plan.dq), tt(plan.dkdv), sc, t, mt, dq, dsr, H=h,
                                                       D=d, BLOCK_M=cfgs.dq.block_m, BLOCK_N=cfgs.dq.block_n,
                                                       TILE_M=kv.block_m)
    return [x.float().numpy() for x in (out, dq, dk, dv)] + [float(dsr.sum())]


fails = 0
rng = np.random.default_rng(0)
# dq_m: the dQ tile's query rows (None: the tuned table's); 64 is n1.sh's second variant (dsdq64), 2 dK dV tiles per row block
for t, h, d, window, docs, dq_m in ((512, 2, 128, 100, (0, 90, 300), None), (512, 2, 128, 1000, (0, 200), None),
                                    (384, 3, 128, 130, (0,), None), (512, 2, 128, 100, (0, 90, 300), 64),
                                    (256, 2, 64, 70, (0, 17, 64, 65, 200), None)):
    cfgs = new.config_for(window, d)
    assert dataclasses.astuple(cfgs) == dataclasses.astuple(base.config_for(window, d))
    if dq_m:
        cfgs = dataclasses.replace(cfgs, dq=dataclasses.replace(cfgs.dq, block_m=dq_m))
    seg = np.zeros(t, np.int32)
    for s0 in docs[1:]:
        seg[s0:] += 1
    q, k, v, dout = (np.asarray(jnp.asarray(rng.standard_normal((t, h, d)), jnp.bfloat16)).astype(np.float32)
                     for _ in range(4))
    scale = 0.12
    w = min(window, t)
    got_base = run(base, q, k, v, dout, seg, scale, w, cfgs)
    got_new = run(new, q, k, v, dout, seg, scale, w, cfgs)
    ref = reference(q, k, v, dout, seg, scale, w)
    line = f"T={t} H={h} D={d} W={window} docs={len(docs)} dQ tile {cfgs.dq.block_m}x{cfgs.dq.block_n}:"
    for name, a, b, r in zip(("out", "dq", "dk", "dv", "dscale"), got_base, got_new, ref):
        a, b, r = (np.asarray(x, np.float64) for x in (a, b, r))
        same = np.array_equal(a, b)
        err_new = float(np.max(np.abs(b - r)) / (np.max(np.abs(r)) + 1e-30))
        err_base = float(np.max(np.abs(a - r)) / (np.max(np.abs(r)) + 1e-30))
        frac = float(np.mean(a != b))
        # dscale is one sum with cancellation: its relative error is the committed kernels' to within a factor 2
        ok = bool(np.all(np.isfinite(b))) and err_new <= 2 * err_base + 1e-3 and (name == "dscale" or err_new <= 2e-2)
        if name in ("out", "dk", "dv"):
            ok = ok and same
        fails += not ok
        line += f" {name} {'same' if same else f'{frac:.1e} differ'} err {err_new:.1e} (base {err_base:.1e}){'' if ok else ' FAIL'};"
    print(line, flush=True)
print("FAILED" if fails else "all passed")
sys.exit(1 if fails else 0)
