"""Does a Gluon kernel with warp_specialize compile for sm_90a in triton 3.6 (offline, no GPU)? `kernel` writes
y[:BLOCK] = 2 x[:BLOCK] in its default partition (4 warps) and y[BLOCK:2 BLOCK] = x + 1 in a 1-warp worker."""
import re, subprocess, os, tempfile
import triton
from triton.backends.compiler import GPUTarget
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon._runtime import GluonASTSource


@gluon.jit
def _default(x_ptr, y_ptr, BLOCK: gl.constexpr):
    layout: gl.constexpr = gl.BlockedLayout([1], [32], [4], [0])
    offs = gl.arange(0, BLOCK, layout=layout)
    gl.store(y_ptr + offs, gl.load(x_ptr + offs) * 2.0)


@gluon.jit
def _worker(x_ptr, y_ptr, BLOCK: gl.constexpr):
    layout: gl.constexpr = gl.BlockedLayout([1], [32], [1], [0])
    offs = BLOCK + gl.arange(0, BLOCK, layout=layout)
    gl.store(y_ptr + offs, gl.load(x_ptr + offs) + 1.0)


@gluon.jit
def kernel(x_ptr, y_ptr, BLOCK: gl.constexpr):
    gl.warp_specialize([(_default, (x_ptr, y_ptr, BLOCK)), (_worker, (x_ptr, y_ptr, BLOCK))], [1], [24])


if __name__ == "__main__":  # next_lease/gluon_call_probe.py imports the kernel above
    src = GluonASTSource(kernel, signature={"x_ptr": "*fp32", "y_ptr": "*fp32", "BLOCK": "constexpr"}, constexprs={"BLOCK": 128})
    c = triton.compile(src, target=GPUTarget("cuda", 90, 32), options={"num_warps": 4})
    ptx = c.asm["ptx"]
    print("compiled: shared", c.metadata.shared, "warps", c.metadata.num_warps)
    print("setmaxnreg in PTX:", len(re.findall(r"setmaxnreg", ptx)))
    ptxas = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "ptxas")
    with tempfile.TemporaryDirectory() as d:
        open(f"{d}/k.ptx", "w").write(ptx)
        arch = re.search(r"\.target (sm_\w+)", ptx).group(1)
        err = subprocess.run([ptxas, "-v", f"--gpu-name={arch}", f"{d}/k.ptx", "-o", f"{d}/k.o"], capture_output=True, text=True)
        print(arch, err.stderr.strip()[-300:])
