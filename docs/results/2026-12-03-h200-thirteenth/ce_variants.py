"""Writes variant copies of kernels/softcap_ce.py as it was measured (commit 0644507, the last with the four switch
constants), those constants replaced, and the kernel before the change (13968d7, ce_base.py) to a folder, for
ce_bench.py; prints the names. Run from the repository root.
fold_*: the exponents formed by one FFMA each, reciprocals on the MUFU; *newton*: the sigmoid's reciprocal on the FMA
pipe in the gradient pass, the forward pass or both; _f2f / _pack / _int: the gradient's bf16 rounding as an F2F per
element, a packed cvt per two, or integer arithmetic; clamp: the e5m2 clamp by min/max kept before the conversion."""
import re, sys, os, subprocess
out = sys.argv[1]; os.makedirs(out, exist_ok=True)
show = lambda rev: subprocess.run(["git", "show", f"{rev}:kernels/softcap_ce.py"], capture_output=True, text=True,  # noqa: E731
                                 check=True).stdout
src = show("0644507")
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
for name, values in VARIANTS.items():
    s = src
    for constant, value in zip(("FORWARD_NEWTON", "GRAD_NEWTON", "BF16_ROUND", "CLAMP_E5M2"), values):
        s, found = re.subn(rf"{constant} = tl.constexpr\(\w+\)", f"{constant} = tl.constexpr({value})", s)
        assert found == 1, f"{constant} not in the kernel source"  # a variant must never silently be another
    open(f"{out}/ce_{name}.py", "w").write(s)
open(f"{out}/ce_base.py", "w").write(show("13968d7"))
print(" ".join(["base"] + list(VARIANTS)))
