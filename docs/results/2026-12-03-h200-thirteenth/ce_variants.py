"""Writes variant copies of the working tree's kernels/softcap_ce.py, its four VARIANTS constants replaced, and the
committed one (HEAD, ce_base.py) to a folder, for ce_bench.py; prints the names. Run from the repository root.
fold_*: the exponents formed by one FFMA each, reciprocals on the MUFU; *newton*: the sigmoid's reciprocal on the FMA
pipe in the gradient pass, the forward pass or both; _f2f / _pack / _int: the gradient's bf16 rounding as an F2F per
element, a packed cvt per two, or integer arithmetic; clamp: the e5m2 clamp by min/max kept before the conversion."""
import re, sys, os, subprocess
out = sys.argv[1]; os.makedirs(out, exist_ok=True)
src = open("kernels/softcap_ce.py").read()
VARIANTS = {  # name: (FORWARD_NEWTON, GRAD_NEWTON, BF16_ROUND, CLAMP_E5M2)
    "fold_mufu": (False, False, 0, True),
    "fold_noclamp": (False, False, 0, False),
    "fold_pack": (False, False, 1, False),
    "gradnewton_f2f": (False, True, 0, False),
    "gradnewton_pack": (False, True, 1, False),
    "gradnewton_int": (False, True, 2, False),
    "bothnewton_pack": (True, True, 1, False),
    "bothnewton_int": (True, True, 2, False),
    "fwdnewton_pack": (True, False, 1, False),
}
for name, (fn, gn, br, cl) in VARIANTS.items():
    s = re.sub(r"FORWARD_NEWTON = tl.constexpr\(\w+\)", f"FORWARD_NEWTON = tl.constexpr({fn})", src)
    s = re.sub(r"GRAD_NEWTON = tl.constexpr\(\w+\)", f"GRAD_NEWTON = tl.constexpr({gn})", s)
    s = re.sub(r"BF16_ROUND = tl.constexpr\(\w+\)", f"BF16_ROUND = tl.constexpr({br})", s)
    s = re.sub(r"CLAMP_E5M2 = tl.constexpr\(\w+\)", f"CLAMP_E5M2 = tl.constexpr({cl})", s)
    open(f"{out}/ce_{name}.py", "w").write(s)
base = subprocess.run(["git", "show", "HEAD:kernels/softcap_ce.py"], capture_output=True, text=True).stdout
open(f"{out}/ce_base.py", "w").write(base)
print(" ".join(["base"] + list(VARIANTS)))
