"""The CE kernels with the ROW constexpr (several sequences per call) against the commit before it, compiled for sm_90
on the CPU with triton's bundled ptxas: at ROW == T the SASS must be the old kernels', operands included, so the
H200 timings and bits measured for the old kernels hold; at ROW < T, the instructions it adds.

    python docs/results/2026-12-01-cpu-merged-ranks/sass_row_check.py [OLD_COMMIT]
"""
import collections
import importlib.util
import os
import re
import subprocess
import sys
import types

sys.modules.setdefault("torch", types.ModuleType("torch"))  # triton's import needs none of it here
import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

from jaxrun.kernels import softcap_ce as new  # noqa: E402

old_commit = sys.argv[1] if len(sys.argv) > 1 else "8aa250f"
source = subprocess.run(["git", "show", f"{old_commit}:kernels/softcap_ce.py"], capture_output=True, text=True,
                        check=True).stdout
path = f"/tmp/softcap_ce_{old_commit}.py"
open(path, "w").write(source)
spec = importlib.util.spec_from_file_location(f"softcap_ce_{old_commit}", path)
old = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = old  # its dataclasses look their module up
spec.loader.exec_module(old)

T, V, K = 16384, 50304, 3
TARGET = GPUTarget("cuda", 90, 32)
BIN = os.path.dirname(triton.__file__) + "/backends/nvidia/bin/"
TYPES = {"logits_ptr": "*bf16", "targets_ptr": "*i32", "weights_ptr": "*fp32", "cap": "fp32", "inv_temp": "fp32",
         "shift": "fp32", "grad_scale": "fp32", "loss_ptr": "*fp32", "lse_ptr": "*fp32", "terms_ptr": "*fp32",
         "gq_ptr": "*fp8e5", "dloss_ptr": "*fp32", "dlogits_ptr": "*bf16"}
KERNELS = {  # name -> (constexprs, warps), as softcap_ce launches them at the record's shape
    "_ce_forward_kernel": (dict(T=T, V=V, NUM_WEIGHTS=K, BLOCK=1024, TAIL_BLOCK=1024), 4),
    "_ce_backward_kernel": (dict(T=T, V=V, NUM_WEIGHTS=K, BLOCK=4096, TAIL_BLOCK=1024), 8),
    "_ce_fused_fp8_kernel": (dict(T=T, V=V, NUM_WEIGHTS=K, BLOCK=1024, TAIL_BLOCK=1024, GRAD_BLOCK=1024,
                                  BY_RECIPROCAL=True), 4),
}


def sass(fn, consts, warps):
    sig = {n: TYPES[n] for n in fn.arg_names if n in TYPES}
    sig.update(dict.fromkeys(consts, "constexpr"))
    attrs = {(i,): [["tt.divisibility", 16]] for i, n in enumerate(fn.arg_names) if sig.get(n, "").startswith("*")}
    k = triton.compile(ASTSource(fn, sig, consts, attrs), target=TARGET, options={"num_warps": warps})
    open("/tmp/k.cubin", "wb").write(k.asm["cubin"])
    dump = subprocess.run([BIN + "cuobjdump", "-sass", "/tmp/k.cubin"], capture_output=True, text=True).stdout
    return [re.sub(r"\s+", " ", re.sub(r"/\* 0x[0-9a-f]+ \*/|/\*[0-9a-f]{4,}\*/", "", line)).strip()
            for line in dump.splitlines() if re.match(r"\s+/\*[0-9a-f]{4,}\*/", line)]


def opcodes(lines):
    return collections.Counter(re.sub(r"^@!?U?P\w+ ", "", line).split(" ")[0].split(".")[0] for line in lines)


ok = True
for name, (consts, warps) in KERNELS.items():
    before = sass(getattr(old, name), consts, warps)
    same = sass(getattr(new, name), {**consts, "ROW": T}, warps)
    rows = sass(getattr(new, name), {**consts, "ROW": T // 4}, warps)
    phase3 = sass(getattr(new, name), {**consts, "T": 98304, "ROW": 49152}, warps)  # 2 phase-3 ranks: not a power of 2
    ok &= same == before
    print(f"{name}: ROW == T: {len(same)} instructions, identical to {old_commit}'s operands included: {same == before}; "
          f"ROW = T/4: {len(rows)} ({dict(opcodes(rows) - opcodes(same))} more); T = 98304, ROW = 49152: "
          f"{len(phase3)} ({dict(opcodes(phase3) - opcodes(same))} more)")
sys.exit(0 if ok else 1)
