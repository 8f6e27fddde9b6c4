"""Writes variant copies of kernels/flash_attention.py for ../../2026-12-03-h200-thirteenth/attn_bench.py (run from
the repository root): python attn_variants.py FOLDER [NAME...] -> FOLDER/fa_NAME.py, and prints the names.

- base: as committed.
- brfwd: the forward's exp2 of every odd unmasked key block on the FMA pipe (_exp2_fma, a degree-4 polynomial:
  FlashAttention-4's trick), so that the special-function pipe does about half the exponentials. A warp-uniform
  branch per block; the software pipeline and its buffers stay as committed.
- brfwd_all: every unmasked block's exp2 on the FMA pipe (is the FMA pipe then the bound?).
- brdkdv: the same as brfwd in the dK dV kernel's unmasked query blocks.
- brboth: brfwd and brdkdv.
- fwd64x128, fwd64x64s2: other forward tiles (64 x 128 with 4 warps and 2 stages; 64 x 64 with 4 warps, 2 stages).
- kv128: 128-key backward tiles, dK dV 32 x 128 with 8 warps and dQ 64 x 128 with 4 warps. The dQ key block must be
  the dK dV one, and the one-kernel-at-a-time sweep of `bench tune-attention` cannot change both.

Unrolling two blocks per iteration instead of the branch was tried offline: it doubles the software pipeline's
buffers (forward 112 -> 208 KiB of shared memory, dK dV 83 -> 131 KiB; ptxas, sm_90a), one program per multiprocessor
instead of two, so it is not among the variants.
"""
import os
import sys

out = sys.argv[1]
os.makedirs(out, exist_ok=True)
src = open("kernels/flash_attention.py").read()

EXP2_FMA = '''

@_jit
def _exp2_fma(x):
    """2**x for x <= 0 on the FMA pipe: x = j + f with j = round(x), f in [-0.5, 0.5]; 2**f by a degree-4 polynomial
    (relative error 2.9e-6 in fp32, against bf16's 3.9e-3 rounding of P), 2**j added to its exponent bits. 1.5 * 2**23
    added to x leaves j in the low mantissa bits, and those bits shifted left by 23 are j * 2**23 (the constant's own
    bits vanish in the shift). x is clamped at -125 so that the exponent stays normal."""
    x = tl.maximum(x, -125.0)
    t = x + 12582912.0
    f = x - (t - 12582912.0)
    p = 0.009582852944731712 * f + 0.055906426161527634
    p = p * f + 0.24024099111557007
    p = p * f + 0.6931241750717163
    p = p * f + 1.0
    return (p.to(tl.int32, bitcast=True) + (t.to(tl.int32, bitcast=True) << 23)).to(tl.float32, bitcast=True)
'''
ANCHOR = "\n\n@_jit\ndef _fwd_inner("
OLD_FWD_EXP = """        m_new = tl.maximum(m_i, tl.max(qk, 1))
        p = tl.math.exp2(qk - m_new[:, None])"""
NEW_FWD_EXP = """        m_new = tl.maximum(m_i, tl.max(qk, 1))
        if not MASKED and blk % 2 == 1:  # odd unmasked blocks: the exponentials on the FMA pipe
            p = _exp2_fma(qk - m_new[:, None])
        else:
            p = tl.math.exp2(qk - m_new[:, None])"""
NEW_FWD_EXP_ALL = """        m_new = tl.maximum(m_i, tl.max(qk, 1))
        if not MASKED:  # every unmasked block: the exponentials on the FMA pipe
            p = _exp2_fma(qk - m_new[:, None])
        else:
            p = tl.math.exp2(qk - m_new[:, None])"""
OLD_KV_EXP = """        p_t = tl.math.exp2(tl.dot(k, tl.trans(q)) * qk_scale - lse[None, :])  # (BLOCK_N keys, BLOCK_M queries)"""
NEW_KV_EXP = """        x_t = tl.dot(k, tl.trans(q)) * qk_scale - lse[None, :]  # (BLOCK_N keys, BLOCK_M queries)
        if not MASKED and blk % 2 == 1:  # odd unmasked blocks: the exponentials on the FMA pipe
            p_t = _exp2_fma(x_t)
        else:
            p_t = tl.math.exp2(x_t)"""
TABLE = "(1 << 30, 128): AttentionConfig(KernelConfig(64, 64, 4, 3), KernelConfig(64, 64, 4, 3), KernelConfig(32, 64, 4, 3)),"
for old in (ANCHOR, OLD_FWD_EXP, OLD_KV_EXP, TABLE):
    assert src.count(old) == 1, old[:60]


def branch(fwd=None, dkdv=False):
    text = src.replace(ANCHOR, EXP2_FMA + ANCHOR)
    if fwd:
        text = text.replace(OLD_FWD_EXP, fwd)
    if dkdv:
        text = text.replace(OLD_KV_EXP, NEW_KV_EXP)
    return text


def table(fwd, dq, dkdv):
    return src.replace(TABLE, f"(1 << 30, 128): AttentionConfig(KernelConfig{fwd}, KernelConfig{dq}, KernelConfig{dkdv}),")


variants = {
    "base": src,
    "brfwd": branch(NEW_FWD_EXP),
    "brfwd_all": branch(NEW_FWD_EXP_ALL),
    "brdkdv": branch(dkdv=True),
    "brboth": branch(NEW_FWD_EXP, dkdv=True),
    "fwd64x128": table((64, 128, 4, 2), (64, 64, 4, 3), (32, 64, 4, 3)),
    "fwd64x64s2": table((64, 64, 4, 2), (64, 64, 4, 3), (32, 64, 4, 3)),
    "kv128": table((64, 64, 4, 3), (64, 128, 4, 3), (32, 128, 8, 3)),
}
names = sys.argv[2:] or list(variants)
for name in names:
    open(f"{out}/fa_{name}.py", "w").write(variants[name])
print(" ".join(names))
