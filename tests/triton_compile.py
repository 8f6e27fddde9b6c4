"""Compiles every triton kernel that the record's training and evaluation steps launch, for sm_90 (H100, H200), on a
machine with no GPU. Run by tests/test_kernels_compile.py in a fresh interpreter, since the stand-in must be in place
before the kernel modules are imported.

A stand-in for jax_triton takes each launch of the traced step (jax.eval_shape of the engine's gradient and evaluation
functions, with the triton backends) and builds it as jax-triton 0.3.1 does:
- the signature: the inputs, then the outputs, as pointers; np.float32 scalars as fp32 and Python ints by size;
- 16-byte alignment for every pointer, through triton's own specialisation;
- scalars equal to 1 as constants, and the launch's constexprs.
It then compiles the launch with triton's compiler and bundled ptxas, and prints one JSON line per distinct kernel.
A kernel that triton or ptxas refuses fails here with triton's error, as it would on the GPU machine.

    python tests/triton_compile.py [--phase N ...] [--backends record|separate] [--forward-tokens N] [--no-eval]
                                   [--ptxas-info]

--forward-tokens sets model.train_forward_tokens (several virtual ranks per forward: longer launches, and the CE
kernels' ROW below their T).

--ptxas-info adds each kernel's registers and spill bytes (ptxas -v on its PTX, a second ptxas run per kernel), and
its SASS opcode counts (cuobjdump, bundled with triton).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
import types

import numpy as np

LAUNCHES: dict = {}  # (kernel, signature, constants, warps, stages) -> the JSON line of its compile
PTXAS_INFO = False  # --ptxas-info
TARGET = BACKEND = None  # sm_90's GPUTarget and triton's CUDA backend for it (install_stand_in)


def _triton_call(*args, kernel, out_shape, grid, num_warps=None, num_stages=None, name="", **metaparams):
    """jax_triton.triton_call's calling convention; compiles the launch and returns zeros of out_shape."""
    import jax
    import jax.numpy as jnp
    import triton
    import triton._C.libtriton as libtriton

    outs = out_shape if isinstance(out_shape, (tuple, list)) else (out_shape,)
    flat_args = jax.tree_util.tree_leaves(args)
    scalars = [(i, a) for i, a in enumerate(flat_args) if isinstance(a, (bool, int, float, np.float32))]
    types_ = [_triton_type(a) for a in flat_args] + [_triton_type(o, pointer=True) for o in outs]
    signature = {kernel.arg_names[i]: t for i, t in enumerate(types_)}
    alignments = [16] * len(types_)
    for i, _ in scalars:
        alignments[i] = 0
    specialization = [libtriton.native_specialize_impl(BACKEND, types.SimpleNamespace(data_ptr=lambda a=a: a,
                                                       dtype=t.removeprefix("*")), False, True, a > 0)
                      for t, a in zip(types_, alignments)]
    attrs = {(i,): BACKEND.parse_attr(attr) for i, (_, attr) in enumerate(specialization)}
    constants = dict(metaparams)
    constants.update({kernel.arg_names[i]: 1 for i, v in scalars if v == 1 and not isinstance(v, bool)})
    for c in constants:
        signature[c] = "constexpr"
    warps, stages = num_warps or 4, num_stages or 3
    key = (kernel.fn.__name__, tuple(signature.items()), tuple(sorted((k, repr(v)) for k, v in constants.items())),
           warps, stages)
    if key not in LAUNCHES:
        t0 = time.perf_counter()
        compiled = triton.compile(triton.compiler.ASTSource(kernel, signature, constants, attrs), target=TARGET,
                                  options={"num_warps": warps, "num_stages": stages, "num_ctas": 1,
                                           "enable_fp_fusion": True})
        LAUNCHES[key] = {"name": name, "kernel": kernel.fn.__name__, "warps": warps, "stages": stages,
                         "constexprs": {k: v for k, v in constants.items() if isinstance(v, (int, float, bool))},
                         "shared_bytes": compiled.metadata.shared, "seconds": round(time.perf_counter() - t0, 2)}
        if PTXAS_INFO:
            LAUNCHES[key].update(_ptxas_info(compiled.asm["ptx"]))
        print(json.dumps(LAUNCHES[key]), flush=True)
    results = tuple(jnp.zeros(o.shape, o.dtype) for o in outs)
    return results if isinstance(out_shape, (tuple, list)) else results[0]


def _ptxas_info(ptx: str) -> dict:
    """Registers per thread and spill bytes, from triton's bundled ptxas -v on the kernel's PTX."""
    import os
    import re
    import subprocess
    import tempfile

    import triton

    ptxas = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "ptxas")
    arch = re.search(r"\.target (sm_\w+)", ptx).group(1)
    with tempfile.TemporaryDirectory() as d:
        src = os.path.join(d, "k.ptx")
        with open(src, "w") as f:
            f.write(ptx)
        err = subprocess.run([ptxas, "-v", f"--gpu-name={arch}", src, "-o", os.path.join(d, "k.o")],
                             capture_output=True, text=True, check=True).stderr
        cuobjdump = os.path.join(os.path.dirname(ptxas), "cuobjdump")
        sass = subprocess.run([cuobjdump, "-sass", os.path.join(d, "k.o")], capture_output=True, text=True,
                              check=True).stdout
    registers = int(re.search(r"Used (\d+) registers", err).group(1))
    spills = sum(int(n) for n in re.findall(r"(\d+) bytes spill (?:stores|loads)", err))
    opcodes: dict = {}
    for op in re.findall(r"/\*[0-9a-f]{4,}\*/\s+(?:@!?U?P\w+\s+)?([A-Z][A-Z0-9_.]+)", sass):
        opcodes[op.split(".")[0]] = opcodes.get(op.split(".")[0], 0) + 1
    return {"arch": arch, "registers": registers, "spill_bytes": spills, "sass_opcodes": opcodes}


def _triton_type(x, pointer=False) -> str:
    """jax-triton's type name of a launch argument: its scalars (bool, int, float, np.float32), else an array."""
    import jax.numpy as jnp

    if pointer or not isinstance(x, (bool, int, float, np.float32)):
        names = {"bfloat16": "bf16", "float32": "fp32", "float16": "fp16", "float8_e4m3fn": "fp8e4nv",
                 "float8_e5m2": "fp8e5", "int32": "i32", "int64": "i64", "int8": "i8", "uint8": "u8", "bool": "i1"}
        return "*" + names[jnp.dtype(x.dtype).name]
    if isinstance(x, bool):
        return "B"
    if isinstance(x, np.float32):
        return "fp32"
    if isinstance(x, float):
        return "fp64"
    return "i32" if -(2**31) <= x < 2**31 else "i64"


def install_stand_in() -> None:
    """Put the stand-in in sys.modules as jax_triton, with sm_90 as the compile target."""
    global TARGET, BACKEND
    from triton.backends.compiler import GPUTarget
    from triton.backends.nvidia.compiler import CUDABackend

    TARGET = GPUTarget("cuda", 90, 32)
    BACKEND = CUDABackend(TARGET)
    stand_in = types.ModuleType("jax_triton")
    stand_in.triton_call = _triton_call
    stand_in.__version__ = "stand-in"
    sys.modules["jax_triton"] = stand_in


BACKENDS = {
    # what the record trains with on an H200 (the shipped auto table's picks for compute capability 9.0)
    "record": (("attention", "triton"), ("lm_head", "xla"), ("mlp", "triton"), ("cross_entropy", "triton"),
               ("head_loss", "triton")),
    # the other kernels: the triton FP8 head and the separate CE forward and backward kernels
    "separate": (("attention", "triton"), ("lm_head", "triton"), ("mlp", "triton"), ("cross_entropy", "triton"),
                 ("head_loss", "xla")),
}


def trace_steps(phases: list[int], backends: str, forward_tokens: int | None = None, evaluation: bool = True) -> None:
    """jax.eval_shape of the gradient function of each phase's step (and of the evaluation function once): every
    kernel launch of those steps goes through the stand-in."""
    import jax
    import jax.numpy as jnp

    from jaxrun import engine, evaluate, schedule, sharding, stepbench
    from jaxrun.config import CONFIG_DIR, load_config

    cfg = load_config(CONFIG_DIR / "record60.py")
    budget = cfg.model.train_forward_tokens if forward_tokens is None else forward_tokens
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, backends=BACKENDS[backends],
                                                             train_forward_tokens=budget))
    from jaxrun import ops

    kernels = ops.kernels(cfg.model.backends)
    mesh = sharding.make_mesh(cfg.data.num_ranks, jax.devices()[:1])
    shapes = jax.eval_shape(lambda k: engine.init_state(cfg, k), jax.random.PRNGKey(0))
    params = engine._replicated_abstract(shapes["params"], mesh)
    for phase in phases:
        shape = schedule.step_shape(stepbench.step_pair(cfg, phase)[0], cfg.schedule)
        fn, args, _ = engine.grad_fn_and_args(cfg, mesh, shapes, shape, kernels)
        jax.eval_shape(fn, *args)
    if not evaluation:
        return
    windows, tied = engine.eval_variant(cfg, cfg.schedule.total_steps)
    val = {k: jax.ShapeDtypeStruct((cfg.data.num_ranks, cfg.data.val_seq_len), jnp.int32)
           for k in engine.BATCH_KEYS}
    jax.eval_shape(evaluate.make_eval_fn(cfg, mesh, windows, tied, kernels), params, val,
                   jax.tree.map(jnp.asarray, engine.dyn_inputs(cfg, 0)))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--phase", type=int, action="append", help="0..3 (default: all)")
    parser.add_argument("--backends", choices=sorted(BACKENDS), default="record")
    parser.add_argument("--ptxas-info", action="store_true", help="add registers and spill bytes per kernel")
    parser.add_argument("--forward-tokens", type=int, help="model.train_forward_tokens (default: the config's)")
    parser.add_argument("--no-eval", action="store_true", help="the training steps only, not the evaluation function")
    args = parser.parse_args()
    global PTXAS_INFO
    PTXAS_INFO = args.ptxas_info
    install_stand_in()
    t0 = time.perf_counter()
    trace_steps(args.phase or [0, 1, 2, 3], args.backends, args.forward_tokens, evaluation=not args.no_eval)
    print(json.dumps({"kernels": len(LAUNCHES), "seconds": round(time.perf_counter() - t0, 1)}))


if __name__ == "__main__":
    main()
