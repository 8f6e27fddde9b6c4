exec(open("docs/results/2026-12-01-h200-ce-kernel/interpreter_check.py").read().split("cap, inv_temp, shift =")[0])
@triton.jit
def _gv_nohits(logit, hits, lse, g, weight_sum, cap, inv_temp, shift):
    z, sig = new._softcap(logit, cap, inv_temp, shift)
    return g * (weight_sum * new._exp(z - lse)) * (inv_temp * z * (1.0 - sig))
new._grad_value = _gv_nohits
exec("cap, inv_temp, shift =" + open("docs/results/2026-12-01-h200-ce-kernel/interpreter_check.py").read().split("cap, inv_temp, shift =")[1])
