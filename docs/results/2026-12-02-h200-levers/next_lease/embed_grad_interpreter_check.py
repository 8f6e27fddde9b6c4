"""kernels/embed_grad.py (embed_grad.patch) in triton's interpreter on the CPU against ops.accumulate_gathered_grad
(XLA on the CPU, whose scatter-add sums each token's rows in row order): with R = 1 row per chunk bit for bit, with
R > 1 to within a bf16 step. Zipf-drawn tokens, several tables, a column count that is not a multiple of the block,
fewer programs than distinct tokens. Two fixes to triton 3.6's interpreter make it faithful here: a tensor as a loop
bound (numpy 2 refuses int() of its (1,)-shaped data), and f32 -> bf16 rounding to nearest even (it truncates; the GPU's
cvt.rn rounds to nearest).

    git apply docs/results/2026-12-02-h200-levers/next_lease/embed_grad.patch
    python docs/results/2026-12-02-h200-levers/next_lease/embed_grad_interpreter_check.py
"""
import os, sys
os.environ["TRITON_INTERPRET"] = "1"
import numpy as np, torch
from triton.runtime import interpreter
_patch_tensor = interpreter._patch_lang_tensor
def _patch_lang_tensor(tensor, scope):
    _patch_tensor(tensor, scope)
    scope.set_attr(tensor, "__index__", lambda self: int(np.asarray(self.handle.data).reshape(-1)[0]))
interpreter._patch_lang_tensor = _patch_lang_tensor
import ml_dtypes
_cast = interpreter.InterpreterBuilder.cast_impl
def cast_impl(self, src, dst_type):
    if src.dtype.scalar == interpreter.tl.float32 and dst_type.scalar == interpreter.tl.bfloat16:
        return interpreter.TensorHandle(src.data.astype(ml_dtypes.bfloat16).view(np.uint16), interpreter.tl.bfloat16)
    return _cast(self, src, dst_type)
interpreter.InterpreterBuilder.cast_impl = cast_impl
import jax, jax.numpy as jnp
jax.config.update("jax_platforms", "cpu")
from jaxrun import ops
from jaxrun.kernels import embed_grad as eg

fails = 0
for t, v, d, n, r, seed in ((200, 50, 40, 5, 1, 0), (257, 30, 300, 1, 1, 1), (200, 50, 40, 5, 4, 2), (64, 1000, 8, 2, 16, 3)):
    rng = np.random.default_rng(seed)
    tokens = np.minimum(rng.zipf(1.3, t) - 1, v - 1).astype(np.int32)
    rows = rng.standard_normal((n, t, d)).astype(np.float32)
    rows_bf = jnp.asarray(rows, jnp.bfloat16)
    acc = rng.standard_normal((n, v, d)).astype(np.float32)
    want = np.asarray(ops.accumulate_gathered_grad(jnp.asarray(acc), jnp.asarray(tokens), rows_bf))
    order, starts, seg_token, count = (np.asarray(x) for x in eg.sorted_segments(jnp.asarray(tokens)))
    out = torch.tensor(acc.copy())
    rows_t = torch.tensor(np.asarray(rows_bf.astype(jnp.float32))).to(torch.bfloat16)
    programs = 3
    grid = (programs, n, -(-d // 32))
    eg._segment_accumulate_kernel[grid](out, rows_t, torch.tensor(order), torch.tensor(starts), torch.tensor(seg_token),
                                        torch.tensor(count), out, T=t, V=v, D=d, R=r, BLOCK_D=32, NUM_PROGRAMS=programs)
    got = out.numpy()
    same = np.array_equal(got, want)
    diff = np.abs(got - want)
    # one bf16 ulp of the row sum at most where the chunked sum rounds differently
    print(f"T={t} V={v} D={d} tables={n} R={r}: bitwise {same}; max |diff| {diff.max():.3g}; rows differing "
          f"{int((diff.max(-1) > 0).sum())} of {n * v}", flush=True)
    if r == 1:
        fails += not same
    else:
        fails += not np.allclose(got, want, rtol=2 ** -7, atol=2 ** -7)
print("ALL OK" if not fails else f"{fails} FAILED")
sys.exit(1 if fails else 0)
