import re, subprocess, sys, types, os, collections
sys.modules["torch"] = types.ModuleType("torch")
import triton
from triton.compiler import ASTSource
from triton.backends.compiler import GPUTarget
sys.path.insert(0, "docs/results/2026-12-01-h200-ce-kernel")
import cesweep as C
from jaxrun.kernels import softcap_ce as S

T, V, K = 16384, 50304, 3
TARGET = GPUTarget("cuda", 90, 32)
BIN = os.path.dirname(triton.__file__) + "/backends/nvidia/bin/"

def compile_(fn, sig, consts, warps):
    ptrs = [i for i, n in enumerate(fn.arg_names) if sig.get(n, "").startswith("*")]
    attrs = {(i,): [["tt.divisibility", 16]] for i in ptrs}
    k = triton.compile(ASTSource(fn, sig, consts, attrs), target=TARGET, options={"num_warps": warps})
    open("/tmp/k.cubin", "wb").write(k.asm["cubin"])
    return subprocess.run([BIN + "cuobjdump", "-sass", "/tmp/k.cubin"], capture_output=True, text=True).stdout, k

def hist(sass):
    ops = re.findall(r"/\*[0-9a-f]{4,}\*/\s+(?:@!?U?P\w+\s+)?([A-Z][A-Z0-9_.]+)", sass)
    return collections.Counter(o.split(".")[0] for o in ops), ops

def sig_of(fn, types_):
    return {n: types_[n] for n in fn.arg_names if n in types_}

common = {"logits_ptr": "*bf16", "targets_ptr": "*i32", "weights_ptr": "*fp32", "cap": "fp32", "inv_temp": "fp32",
          "shift": "fp32", "grad_scale": "fp32", "loss_ptr": "*fp32", "lse_ptr": "*fp32", "terms_ptr": "*fp32",
          "gq_ptr": "*fp8e5", "lse_in": "*fp32"}
kinds = {}
# the lease-1 candidate, compiled here
cs = sig_of(C.cand_kernel, common)
cc = dict(T=T, V=V, K=K, BLOCK=1024, TAIL_BLOCK=1024, GRAD_BLOCK=1024, FAST=True, PATCH=True, FOLD=False)
for n in cc: cs[n] = "constexpr"
kinds["cand_here"], _ = compile_(C.cand_kernel, cs, cc, 4)
# the project's fused kernel (this commit)
fs = sig_of(S._ce_fused_fp8_kernel, common)
fc = dict(T=T, V=V, NUM_WEIGHTS=K, BLOCK=1024, TAIL_BLOCK=1024, GRAD_BLOCK=1024, BY_RECIPROCAL=True)
for n in fc: fs[n] = "constexpr"
kinds["project_fused"], kf = compile_(S._ce_fused_fp8_kernel, fs, fc, 4)
print("project fused: regs", kf.n_regs if hasattr(kf, "n_regs") else "?")
kinds["cand_gpu"] = open("docs/results/2026-12-01-h200-ce-kernel/sass_fused_candidate_gpu.txt").read()
kinds["base_gpu"] = open("docs/results/2026-12-01-h200-ce-kernel/sass_fused_before_gpu.txt").read()
H = {k: hist(v) for k, v in kinds.items()}
for k, (h, ops) in H.items():
    print(f"{k:14s} total {len(ops):5d}  MUFU {h['MUFU']:4d} FSETP {h['FSETP']:4d} ISETP {h['ISETP']:4d} FMUL {h['FMUL']:4d} FFMA {h['FFMA']:4d} BAR {h['BAR']:3d} STG {h['STG']:3d} LDG {h['LDG']:3d}")
strip = lambda ops: ops
print("cand_here == cand_gpu opcode sequence:", H["cand_here"][1] == H["cand_gpu"][1])
print("project_fused == cand opcode sequence:", H["project_fused"][1] == H["cand_here"][1])
diff = H["project_fused"][0] - H["cand_here"][0], H["cand_here"][0] - H["project_fused"][0]
print("project - cand:", dict(diff[0]), " cand - project:", dict(diff[1]))
open("/tmp/sass_project_fused.txt", "w").write(kinds["project_fused"]); open("/tmp/sass_cand_here.txt", "w").write(kinds["cand_here"])
# operands too, addresses and encodings aside
norm = lambda s: [re.sub(r"\s+", " ", re.sub(r"/\* 0x[0-9a-f]+ \*/|/\*[0-9a-f]{4,}\*/", "", l)).strip()
                  for l in s.splitlines() if re.match(r"\s+/\*[0-9a-f]{4,}\*/", l)]
print("project_fused == cand_gpu, operands included:", norm(kinds["project_fused"]) == norm(kinds["cand_gpu"]),
      f"({len(norm(kinds['project_fused']))} instructions)")
