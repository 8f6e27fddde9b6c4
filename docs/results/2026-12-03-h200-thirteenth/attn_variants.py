"""Writes variant copies of kernels/flash_attention.py for attn_bench.py (run from the repository root):
base (as committed); fma: the forward's scale applied inside the exponent's FFMA (qk · scale − m, as the triton
tutorial), not as a separate multiply of every score; oneloop: the forward's key blocks as one masked loop instead of
masked / unmasked / masked loops (one software-pipeline fill per program instead of three); fma_oneloop: both;
dq_oneloop, dkdv_oneloop: the same for a backward kernel, with the forward's one loop; all_oneloop: all three kernels."""
import os, sys

out = sys.argv[1]
os.makedirs(out, exist_ok=True)
src = open("kernels/flash_attention.py").read()

OLD_INNER = '''        k = tl.load(k_ptr + offs_n[:, None] * ROW + offs_d[None, :])
        qk = tl.dot(q, tl.trans(k)) * qk_scale
        if MASKED:
            visible = (offs_n[None, :] >= lower[:, None]) & (offs_n[None, :] <= offs_m[:, None])
            qk = tl.where(visible, qk, -1.0e6)  # finite: a row with no visible key yet gets alpha = 0 later, not NaN
        m_new = tl.maximum(m_i, tl.max(qk, 1))
        p = tl.math.exp2(qk - m_new[:, None])'''
NEW_INNER = '''        k = tl.load(k_ptr + offs_n[:, None] * ROW + offs_d[None, :])
        qk = tl.dot(q, tl.trans(k))
        if MASKED:
            visible = (offs_n[None, :] >= lower[:, None]) & (offs_n[None, :] <= offs_m[:, None])
            qk = tl.where(visible, qk, -1.0e6)  # finite: a row with no visible key yet gets alpha = 0 later, not NaN
        m_new = tl.maximum(m_i, tl.max(qk, 1) * qk_scale)
        p = tl.math.exp2(qk * qk_scale - m_new[:, None])'''
OLD_LOOPS = '''    acc, l_i, m_i = _fwd_inner(acc, l_i, m_i, q, k_ptr, v_ptr, offs_m, lower, first, full_lo, qk_scale,
                               ROW, D, BLOCK_N, True)
    acc, l_i, m_i = _fwd_inner(acc, l_i, m_i, q, k_ptr, v_ptr, offs_m, lower, full_lo, full_hi, qk_scale,
                               ROW, D, BLOCK_N, False)
    acc, l_i, m_i = _fwd_inner(acc, l_i, m_i, q, k_ptr, v_ptr, offs_m, lower, full_hi, end, qk_scale,
                               ROW, D, BLOCK_N, True)'''
NEW_LOOPS = '''    acc, l_i, m_i = _fwd_inner(acc, l_i, m_i, q, k_ptr, v_ptr, offs_m, lower, first, end, qk_scale,
                               ROW, D, BLOCK_N, True)'''
OLD_DQ = '''    dq = _dq_inner(dq, q, do, lse, delta, k_ptr, v_ptr, offs_m, lower, first, full_lo, qk_scale, ROW, D, BLOCK_N, True)
    dq = _dq_inner(dq, q, do, lse, delta, k_ptr, v_ptr, offs_m, lower, full_lo, full_hi, qk_scale, ROW, D, BLOCK_N, False)
    dq = _dq_inner(dq, q, do, lse, delta, k_ptr, v_ptr, offs_m, lower, full_hi, end, qk_scale, ROW, D, BLOCK_N, True)'''
NEW_DQ = '''    dq = _dq_inner(dq, q, do, lse, delta, k_ptr, v_ptr, offs_m, lower, first, end, qk_scale, ROW, D, BLOCK_N, True)'''
OLD_DKDV = '''    dk, dv = _dkdv_inner(dk, dv, k, v, q_ptr, do_ptr, lse_ptr, delta_ptr, seg_start_ptr, offs_n, window, first, full_lo,
                         qk_scale, ROW, D, BLOCK_M, True)
    dk, dv = _dkdv_inner(dk, dv, k, v, q_ptr, do_ptr, lse_ptr, delta_ptr, seg_start_ptr, offs_n, window, full_lo, full_hi,
                         qk_scale, ROW, D, BLOCK_M, False)
    dk, dv = _dkdv_inner(dk, dv, k, v, q_ptr, do_ptr, lse_ptr, delta_ptr, seg_start_ptr, offs_n, window, full_hi, end,
                         qk_scale, ROW, D, BLOCK_M, True)'''
NEW_DKDV = '''    dk, dv = _dkdv_inner(dk, dv, k, v, q_ptr, do_ptr, lse_ptr, delta_ptr, seg_start_ptr, offs_n, window, first, end,
                         qk_scale, ROW, D, BLOCK_M, True)'''
assert OLD_INNER in src and OLD_LOOPS in src and OLD_DQ in src and OLD_DKDV in src
one = src.replace(OLD_LOOPS, NEW_LOOPS)
variants = {
    "base": src,
    "fma": src.replace(OLD_INNER, NEW_INNER),
    "oneloop": src.replace(OLD_LOOPS, NEW_LOOPS),
    "fma_oneloop": src.replace(OLD_INNER, NEW_INNER).replace(OLD_LOOPS, NEW_LOOPS),
    "dq_oneloop": one.replace(OLD_DQ, NEW_DQ),
    "dkdv_oneloop": one.replace(OLD_DKDV, NEW_DKDV),
    "all_oneloop": one.replace(OLD_DQ, NEW_DQ).replace(OLD_DKDV, NEW_DKDV),
}
for name, text in variants.items():
    open(f"{out}/fa_{name}.py", "w").write(text)
print(" ".join(variants))
