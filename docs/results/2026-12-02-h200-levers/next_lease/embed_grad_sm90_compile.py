"""kernels/embed_grad.py's launches at the step's shapes compiled for sm_90 on a CPU machine (tests/triton_compile.py's
jax_triton stand-in, which here also takes jax-triton's input_output_aliases), with ptxas's registers and spills.

    git apply docs/results/2026-12-02-h200-levers/next_lease/embed_grad.patch
    JAX_PLATFORMS=cpu python docs/results/2026-12-02-h200-levers/next_lease/embed_grad_sm90_compile.py
"""
import sys, json
sys.path.insert(0, "tests")  # run from the repository root, with embed_grad.patch applied
import triton_compile as tc
tc.install_stand_in()
tc.PTXAS_INFO = True
_call = tc._triton_call
def _triton_call(*args, input_output_aliases=None, **kw):  # jax-triton passes the aliased outputs as pointers too
    return _call(*args, **kw)
sys.modules["jax_triton"].triton_call = _triton_call
import jax, jax.numpy as jnp
from jaxrun.kernels import embed_grad as eg
for lead, t in (((5,), 49152), ((), 49152), ((5,), 65536)):
    acc = jax.ShapeDtypeStruct((*lead, 50304, 768), jnp.float32)
    rows = jax.ShapeDtypeStruct((*lead, t, 768), jnp.bfloat16)
    tok = jax.ShapeDtypeStruct((t,), jnp.int32)
    jax.eval_shape(eg.accumulate_rows, acc, tok, rows)
