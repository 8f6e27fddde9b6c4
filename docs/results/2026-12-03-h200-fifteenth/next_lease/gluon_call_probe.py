"""Can jax-triton 0.3.1 launch a Gluon kernel (triton 3.6's lower-level dialect, the one with Hopper warp
specialisation)? Run on the GPU machine from the repository root: python gluon_call_probe.py

jax-triton's lowering builds TTIR from a triton ASTSource (jax_triton/triton_lib.py, get_or_create_triton_kernel);
a Gluon kernel starts at TTGIR (GluonASTSource). This wraps get_or_create_triton_kernel: for a Gluon function it
compiles through triton.compile(GluonASTSource(...)) and hands the PTX to jax-triton's TritonKernel with the compiled
kernel's total warps (warp_specialize adds the workers' warps). The kernel (../gluon_ws_probe.py's) writes
y[:B] = 2 x[:B] in its default partition (4 warps) and y[B:] = x[B:] + 1 in a 1-warp worker partition; the
probe checks y against numpy."""
import os
import sys
import tempfile

import numpy as np
import jax
import jax.numpy as jnp
import jax_triton as jt
import triton
from jax_triton import triton_lib
from triton.backends.compiler import GPUTarget
from triton.experimental.gluon._runtime import GluonASTSource

_original = triton_lib.get_or_create_triton_kernel

# triton.compile keeps its output in triton's file cache; jax-triton's own path does not use it. The sixteenth
# sitting's first run of this probe found the cache dir empty on the GPU machine ("Could not create or locate cache
# dir"): give it a temporary one.
if not triton.knobs.cache.dir:
    triton.knobs.cache.dir = tempfile.mkdtemp(prefix="triton-cache-")


def _gluon_aware(backend_init_func, platform, fn, arg_dtypes, scalar_args, *, num_warps, num_stages, num_ctas,
                 compute_capability, enable_fp_fusion, metaparams, dump):
    if not (hasattr(fn, "is_gluon") and fn.is_gluon()):
        return _original(backend_init_func, platform, fn, arg_dtypes, scalar_args, num_warps=num_warps,
                         num_stages=num_stages, num_ctas=num_ctas, compute_capability=compute_capability,
                         enable_fp_fusion=enable_fp_fusion, metaparams=metaparams, dump=dump)
    cc = compute_capability or triton_lib.triton_kernel_call_lib.get_compute_capability(0)
    signature = {fn.arg_names[i]: v for i, v in enumerate(arg_dtypes)}
    constants = dict(metaparams)
    for name in constants:
        signature[name] = "constexpr"
    backend = backend_init_func(0, cc)
    attrs = {(i,): backend.parse_attr(triton_lib._triton.native_specialize_impl(
        backend, type("A", (), {"data_ptr": lambda self: 16, "dtype": t.removeprefix("*")})(), False, True, True)[1])
        for i, t in enumerate(arg_dtypes) if t.startswith("*")}
    compiled = triton.compile(GluonASTSource(fn, signature, constants, attrs), target=GPUTarget("cuda", cc, 32),
                              options={"num_warps": num_warps or 4, "num_ctas": num_ctas})
    meta = compiled.metadata
    print(f"gluon kernel {meta.name}: {meta.num_warps} warps, {meta.shared} B shared, global scratch "
          f"{getattr(meta, 'global_scratch_size', 0)} B", flush=True)
    if getattr(meta, "global_scratch_size", 0):
        raise ValueError("the kernel needs global scratch, which jax-triton 0.3.1 does not pass")
    kernel = triton_lib.triton_kernel_call_lib.TritonKernel(meta.name, meta.num_warps, num_ctas, meta.shared,
                                                            compiled.asm["ptx"], "", cc)
    return kernel, {(i,): [["tt.divisibility", 16]] if t.startswith("*") else [] for i, t in enumerate(arg_dtypes)}


triton_lib.get_or_create_triton_kernel = _gluon_aware

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from gluon_ws_probe import kernel as _probe_kernel  # noqa: E402 - the offline probe's kernel, launched here

B = 128
x = jnp.arange(2 * B, dtype=jnp.float32)
y = jax.jit(lambda x: jt.triton_call(x, kernel=_probe_kernel, out_shape=jax.ShapeDtypeStruct(x.shape, x.dtype),
                                     grid=(1,), num_warps=4, BLOCK=B))(x)
want = np.concatenate([2 * np.arange(B), np.arange(B, 2 * B) + 1]).astype(np.float32)
ok = np.array_equal(np.asarray(y), want)
print("gluon warp-specialised kernel through jax-triton:", "equal to numpy" if ok else f"WRONG {np.asarray(y)[:8]}")
raise SystemExit(0 if ok else 1)
